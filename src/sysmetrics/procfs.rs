//! The few `/proc` files system metrics come from, parsed by hand: each
//! is a line or two of text, and a crate for them would be heavier than
//! the parsing. Every reader takes the proc root, so tests can hand it a
//! directory of their own.

use std::collections::BTreeMap;
use std::path::Path;

/// One process as the sampler needs it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Proc {
    pub ppid: u32,
    /// User plus system time, in clock ticks (`/proc/<pid>/stat` 14, 15).
    pub cpu_ticks: u64,
    /// Resident set, bytes (`VmRSS`).
    pub rss_bytes: u64,
    pub threads: u64,
}

/// `/proc/<pid>/stat` and `status`; `None` once the process is gone.
pub fn process(root: &Path, pid: u32) -> Option<Proc> {
    let stat = std::fs::read_to_string(root.join(pid.to_string()).join("stat")).ok()?;
    // The command name is in parentheses and may hold spaces: fields
    // are counted after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state): ppid 4, utime 14, stime 15.
    let ppid = f.get(1)?.parse().ok()?;
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(root.join(pid.to_string()).join("status")).ok()?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Some(Proc {
        ppid,
        cpu_ticks: utime + stime,
        rss_bytes: field("VmRSS:") * 1024,
        threads: field("Threads:"),
    })
}

/// A process's identity over time: its start (clock ticks after boot,
/// `stat` field 22), which tells it from a later process given the same
/// pid; `None` when it is gone or a zombie (exited, not yet reaped).
pub fn start_time(root: &Path, pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(root.join(pid.to_string()).join("stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state), so field 22 is rest[19].
    if matches!(f.first(), Some(&"Z") | Some(&"X")) {
        return None;
    }
    f.get(19)?.parse().ok()
}

/// Every process id under the proc root.
pub fn pids(root: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
        .collect()
}

/// `pid` and its descendants, from every process's parent (one listing
/// of the proc root; processes that exit meanwhile are left out).
pub fn tree(root: &Path, pid: u32) -> Vec<(u32, Proc)> {
    let all: BTreeMap<u32, Proc> = pids(root)
        .into_iter()
        .filter_map(|p| process(root, p).map(|s| (p, s)))
        .collect();
    let mut out = Vec::new();
    let Some(first) = all.get(&pid) else {
        return out;
    };
    out.push((pid, *first));
    let mut i = 0;
    while i < out.len() {
        let parent = out[i].0;
        for (p, s) in &all {
            if s.ppid == parent && *p != parent && !out.iter().any(|(q, _)| q == p) {
                out.push((*p, *s));
            }
        }
        i += 1;
    }
    out
}

/// `/proc/meminfo`: (MemTotal, MemAvailable) in bytes.
pub fn memory(root: &Path) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(root.join("meminfo")).ok()?;
    let kb = |name: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))?
            .split_whitespace()
            .next()?
            .parse::<u64>()
            .ok()
            .map(|v| v * 1024)
    };
    Some((kb("MemTotal:")?, kb("MemAvailable:")?))
}

/// `/proc/net/dev`: bytes (received, sent) over every interface, as
/// gopsutil's `IOCounters(false)` sums them.
pub fn network(root: &Path) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(root.join("net/dev")).ok()?;
    let mut recv = 0u64;
    let mut sent = 0u64;
    for line in text.lines().skip(2) {
        let Some((_, counters)) = line.split_once(':') else {
            continue;
        };
        let f: Vec<u64> = counters
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        if f.len() >= 9 {
            recv += f[0];
            sent += f[8];
        }
    }
    Some((recv, sent))
}

/// `/proc/net/snmp`: TCP segments retransmitted.
pub fn tcp_retransmits(root: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(root.join("net/snmp")).ok()?;
    let mut tcp = text.lines().filter(|l| l.starts_with("Tcp:"));
    let names: Vec<&str> = tcp.next()?.split_whitespace().collect();
    let values: Vec<&str> = tcp.next()?.split_whitespace().collect();
    let i = names.iter().position(|n| *n == "RetransSegs")?;
    values.get(i)?.parse().ok()
}

/// `/proc/diskstats`: bytes (read, written) per device.
pub fn disks(root: &Path) -> BTreeMap<String, (u64, u64)> {
    let Ok(text) = std::fs::read_to_string(root.join("diskstats")) else {
        return BTreeMap::new();
    };
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // major minor name reads merged sectors_read ms writes merged sectors_written
            let read: u64 = f.get(5)?.parse().ok()?;
            let written: u64 = f.get(9)?.parse().ok()?;
            Some((f.get(2)?.to_string(), (read * 512, written * 512)))
        })
        .collect()
}

/// The device mounted at `/` (`/proc/mounts`), without `/dev/`.
pub fn root_device(root: &Path) -> Option<String> {
    let text = std::fs::read_to_string(root.join("mounts")).ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let dev = f.next()?;
        (f.next()? == "/" && dev.starts_with("/dev/"))
            .then(|| dev.trim_start_matches("/dev/").to_string())
    })
}

/// Physical cores (distinct physical id and core id pairs of
/// `/proc/cpuinfo`), the SDK's denominator for `cpu`; the logical count
/// where those are not listed.
pub fn physical_cores(root: &Path) -> u32 {
    let text = std::fs::read_to_string(root.join("cpuinfo")).unwrap_or_default();
    let mut cores = std::collections::BTreeSet::new();
    let mut logical = 0;
    let mut physical = "";
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        match k.trim() {
            "processor" => logical += 1,
            "physical id" => physical = v.trim(),
            "core id" => {
                cores.insert((physical.to_string(), v.trim().to_string()));
            }
            _ => {}
        }
    }
    match (cores.len(), logical) {
        (0, 0) => std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        (0, l) => l,
        (c, _) => c as u32,
    }
}

/// Clock ticks per second (`_SC_CLK_TCK`).
pub fn ticks_per_second() -> f64 {
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// `statvfs(path)`: (used, used + available to users) bytes, as
/// gopsutil's `disk.Usage` counts them.
pub fn disk_usage(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let bsize = st.f_frsize as u64;
    let used = (st.f_blocks as u64 - st.f_bfree as u64) * bsize;
    let avail = st.f_bavail as u64 * bsize;
    Some((used, used + avail))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    fn proc_of(root: &Path, pid: u32, ppid: u32, ticks: u64, rss_kb: u64) {
        write(
            root,
            &format!("{pid}/stat"),
            &format!("{pid} (py thon) S {ppid} 1 1 0 -1 0 0 0 0 0 {ticks} 0 0 0 20 0 2 0 1 1 1\n"),
        );
        write(
            root,
            &format!("{pid}/status"),
            &format!("Name:\tpy\nVmRSS:\t  {rss_kb} kB\nThreads:\t2\n"),
        );
    }

    #[test]
    fn a_tree_is_its_root_and_every_descendant() {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path();
        proc_of(r, 10, 1, 100, 1024);
        proc_of(r, 11, 10, 50, 2048);
        proc_of(r, 12, 11, 5, 10);
        proc_of(r, 20, 1, 999, 999);
        let t = tree(r, 10);
        let pids: Vec<u32> = t.iter().map(|(p, _)| *p).collect();
        assert_eq!(pids, [10, 11, 12]);
        assert_eq!(t[0].1.cpu_ticks, 100);
        assert_eq!(t[1].1.rss_bytes, 2048 * 1024);
        assert_eq!(t[2].1.threads, 2);
        assert!(tree(r, 99).is_empty());
    }

    #[test]
    fn host_files_parse() {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path();
        write(
            r,
            "meminfo",
            "MemTotal:       1000 kB\nMemFree: 1 kB\nMemAvailable:    250 kB\n",
        );
        assert_eq!(memory(r), Some((1_024_000, 256_000)));
        write(r, "net/dev", "Inter-|   Receive\n face |bytes\n    lo: 100 1 0 0 0 0 0 0 200 1 0 0 0 0 0 0\n  eth0: 5 1 0 0 0 0 0 0 7 1 0 0 0 0 0 0\n");
        assert_eq!(network(r), Some((105, 207)));
        write(
            r,
            "net/snmp",
            "Ip: A B\nIp: 1 2\nTcp: RtoAlgorithm RetransSegs InErrs\nTcp: 1 42 0\n",
        );
        assert_eq!(tcp_retransmits(r), Some(42));
        write(
            r,
            "diskstats",
            " 253 0 vda 10 0 8 0 20 0 16 0 0 0 0\n   7 0 loop0 1 0 2 0 0 0 0 0 0 0 0\n",
        );
        assert_eq!(disks(r)["vda"], (4096, 8192));
        write(
            r,
            "mounts",
            "overlay /x overlay rw 0 0\n/dev/vda / ext4 rw 0 0\n",
        );
        assert_eq!(root_device(r).as_deref(), Some("vda"));
        write(r, "cpuinfo", "processor\t: 0\nphysical id\t: 0\ncore id\t: 0\n\nprocessor\t: 1\nphysical id\t: 0\ncore id\t: 0\n");
        assert_eq!(physical_cores(r), 1);
        assert!(disk_usage(Path::new("/")).is_some());
    }
}
