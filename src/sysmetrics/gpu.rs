//! NVIDIA GPUs through `nvidia-smi`, under the names the W&B SDK's
//! monitor gives what it reads through NVML (`gpu.<i>.gpu`, `.memory`,
//! `.memoryAllocated`, `.temp`, `.powerWatts`, ...; wandb's
//! `xpu/src/gpu_nvidia.rs`).
//!
//! `nvidia-smi --query-gpu=<fields> --format=csv,noheader,nounits` prints
//! one line per GPU, values separated by `, ` in the order asked, without
//! units (MiB, %, W, MHz, °C), and `[N/A]` / `[Not Supported]` (older
//! drivers: `N/A`) where a GPU has no such reading: those metrics are left
//! out for that GPU, as the SDK leaves out what NVML refuses. Using the
//! tool rather than NVML keeps the agent free of a driver library; it is
//! run at the sampling interval only, with a deadline.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The fields asked for, in order.
pub const QUERY: [&str; 20] = [
    "index",
    "uuid",
    "utilization.gpu",
    "utilization.memory",
    "memory.total",
    "memory.used",
    "temperature.gpu",
    "power.draw",
    "enforced.power.limit",
    "clocks.sm",
    "clocks.mem",
    "clocks.gr",
    "fan.speed",
    "utilization.encoder",
    "ecc.errors.corrected.volatile.total",
    "ecc.errors.uncorrected.volatile.total",
    "pcie.link.gen.current",
    "pcie.link.width.current",
    "pcie.link.gen.max",
    "pcie.link.width.max",
];

/// How long `nvidia-smi` may take (it can hang on a wedged driver).
const DEADLINE: Duration = Duration::from_secs(5);

/// The `--query-gpu` arguments.
pub fn query_args() -> Vec<String> {
    vec![
        format!("--query-gpu={}", QUERY.join(",")),
        "--format=csv,noheader,nounits".into(),
    ]
}

/// Runs `program args`, returns its stdout if it ends it within the
/// deadline and does not report failure. Its output is read to its end
/// rather than its exit waited for: in init mode the agent reaps every
/// child that exits (it is the container's init), so the exit status may
/// be gone already; where it is still there, a failure discards the output.
pub(crate) fn run(program: &Path, args: &[String]) -> Option<String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut stdout = child.stdout.take()?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut out = String::new();
        let ok = stdout.read_to_string(&mut out).is_ok();
        let _ = tx.send(ok.then_some(out));
    });
    let out = match rx.recv_timeout(DEADLINE) {
        Ok(out) => out,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
    };
    // Bounded: the output ended, so the process is exiting.
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return out.filter(|_| status.success()),
            Ok(None) if started.elapsed() < DEADLINE => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            // Reaped by init mode's reaper: the output is all there is.
            Err(_) => return out,
        }
    }
}

/// What the Overview lists of each GPU, asked once at start.
pub const INFO_QUERY: &str = "--query-gpu=name,memory.total,uuid,pci.bus_id";

/// The GPUs `smi` lists (`INFO_QUERY`, one line each, `name, MiB, uuid,
/// bus id`); none when it fails or is not there.
pub fn devices(smi: &Path) -> Vec<crate::machine::GpuFacts> {
    let args = [
        INFO_QUERY.to_string(),
        "--format=csv,noheader,nounits".into(),
    ];
    run(smi, &args)
        .map(|t| parse_devices(&t))
        .unwrap_or_default()
}

fn parse_devices(text: &str) -> Vec<crate::machine::GpuFacts> {
    text.lines()
        .filter_map(|line| {
            // The name may hold a comma; the other three never do.
            let mut f: Vec<&str> = line.rsplitn(4, ',').map(str::trim).collect();
            if f.len() != 4 || f[3].is_empty() {
                return None;
            }
            f.reverse();
            let known = |v: &str| {
                (!v.starts_with('[') && !v.eq_ignore_ascii_case("N/A")).then(|| v.to_string())
            };
            Some(crate::machine::GpuFacts {
                name: f[0].to_string(),
                memory_total: number(f[1]).map(|mib| (mib * 1024.0 * 1024.0) as u64),
                uuid: known(f[2]).unwrap_or_default(),
                pci_bus_id: known(f[3]).unwrap_or_default(),
            })
        })
        .collect()
}

/// The arguments of the report whose head names the CUDA version (`-q`,
/// shortened to its compute section).
pub const CUDA_QUERY: [&str; 3] = ["-q", "-d", "COMPUTE"];

/// The driver's CUDA version, from the head of `smi -q`'s report
/// (`CUDA Version : 12.2`); `None` when it is not there or not a version.
pub fn cuda_version(smi: &Path) -> Option<String> {
    let args: Vec<String> = CUDA_QUERY.iter().map(|a| a.to_string()).collect();
    parse_cuda_version(&run(smi, &args)?)
}

fn parse_cuda_version(report: &str) -> Option<String> {
    report.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        let v = v.trim();
        let (major, minor) = v.split_once('.')?;
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        (k.trim() == "CUDA Version" && digits(major) && digits(minor)).then(|| v.to_string())
    })
}

/// A reading: `None` for `[N/A]`, `[Not Supported]` and the like.
fn number(v: &str) -> Option<f64> {
    let v = v.trim();
    if v.starts_with('[') || v.eq_ignore_ascii_case("N/A") {
        return None;
    }
    v.parse().ok().filter(|f: &f64| f.is_finite())
}

/// The metrics of `--query-gpu` output (see [`QUERY`]), named as the SDK
/// names them; GPUs whose UUID is in `busy` (used by the sampled
/// processes) get the `gpu.process.<i>.*` copies too.
pub fn parse(text: &str, busy: &BTreeSet<String>) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        if f.len() != QUERY.len() {
            continue; // not the output of this query
        }
        let Some(i) = number(f[0]).map(|i| i as u64) else {
            continue;
        };
        let get = |name: &str| {
            QUERY
                .iter()
                .position(|q| *q == name)
                .and_then(|p| number(f[p]))
        };
        let mut m: Vec<(&str, f64)> = Vec::new();
        let mut process: Vec<(&str, f64)> = Vec::new();
        if let Some(v) = get("utilization.gpu") {
            m.push(("gpu", v));
            process.push(("gpu", v));
        }
        if let Some(v) = get("utilization.memory") {
            m.push(("memory", v));
            process.push(("memory", v));
        }
        if let (Some(total), Some(used)) = (get("memory.total"), get("memory.used")) {
            if total > 0.0 {
                let pct = used / total * 100.0;
                let bytes = used * 1024.0 * 1024.0; // MiB
                m.push(("memoryAllocated", pct));
                m.push(("memoryAllocatedBytes", bytes));
                process.push(("memoryAllocated", pct));
                process.push(("memoryAllocatedBytes", bytes));
            }
        }
        if let Some(v) = get("temperature.gpu") {
            m.push(("temp", v));
            process.push(("temp", v));
        }
        if let Some(draw) = get("power.draw") {
            m.push(("powerWatts", draw));
            process.push(("powerWatts", draw));
            if let Some(limit) = get("enforced.power.limit").filter(|l| *l > 0.0) {
                m.push(("enforcedPowerLimitWatts", limit));
                m.push(("powerPercent", draw / limit * 100.0));
                process.push(("enforcedPowerLimitWatts", limit));
                process.push(("powerPercent", draw / limit * 100.0));
            }
        }
        for (q, name) in [
            ("clocks.sm", "smClock"),
            ("clocks.mem", "memoryClock"),
            ("clocks.gr", "graphicsClock"),
            (
                "ecc.errors.corrected.volatile.total",
                "correctedMemoryErrors",
            ),
            (
                "ecc.errors.uncorrected.volatile.total",
                "uncorrectedMemoryErrors",
            ),
            ("fan.speed", "fanSpeed"),
            ("utilization.encoder", "encoderUtilization"),
            ("pcie.link.gen.current", "pcieLinkGen"),
            ("pcie.link.width.current", "pcieLinkWidth"),
            ("pcie.link.gen.max", "maxPcieLinkGen"),
            ("pcie.link.width.max", "maxPcieLinkWidth"),
        ] {
            if let Some(v) = get(q) {
                m.push((name, v));
            }
        }
        for (k, v) in m {
            out.insert(format!("gpu.{i}.{k}"), v);
        }
        if busy.contains(f[1]) {
            for (k, v) in process {
                out.insert(format!("gpu.process.{i}.{k}"), v);
            }
        }
    }
    out
}

/// GPU UUIDs with a compute process among `pids`
/// (`--query-compute-apps=pid,gpu_uuid`).
fn busy_gpus(program: &Path, pids: &BTreeSet<u32>) -> BTreeSet<String> {
    let args = vec![
        "--query-compute-apps=pid,gpu_uuid".to_string(),
        "--format=csv,noheader,nounits".to_string(),
    ];
    let Some(text) = run(program, &args) else {
        return BTreeSet::new();
    };
    text.lines()
        .filter_map(|l| {
            let (pid, uuid) = l.split_once(',')?;
            let pid: u32 = pid.trim().parse().ok()?;
            pids.contains(&pid).then(|| uuid.trim().to_string())
        })
        .collect()
}

/// The GPU metrics now, or nothing when `program` is not there or fails.
pub fn sample(program: &Path, pids: &BTreeSet<u32>) -> BTreeMap<String, f64> {
    let Some(text) = run(program, &query_args()) else {
        return BTreeMap::new();
    };
    let busy = if pids.is_empty() {
        BTreeSet::new()
    } else {
        busy_gpus(program, pids)
    };
    parse(&text, &busy)
}

/// `nvidia-smi` on `PATH`, if any.
pub fn find_on_path() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("nvidia-smi"))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    #[test]
    fn devices_are_read_from_the_info_query() {
        let d = super::parse_devices(
            "NVIDIA A100-SXM4-40GB, 40960, GPU-5f1d2c3e-aaaa, 00000000:07:00.0\nTesla T4, [N/A], GPU-b, [N/A]\n\n",
        );
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].name, "NVIDIA A100-SXM4-40GB");
        assert_eq!(d[0].memory_total, Some(40960 * 1024 * 1024));
        assert_eq!(d[0].pci_bus_id, "00000000:07:00.0");
        assert_eq!((d[1].memory_total, d[1].pci_bus_id.as_str()), (None, ""));
    }

    use super::*;

    #[test]
    fn the_cuda_version_heads_the_report() {
        let report = "\n==============NVSMI LOG==============\n\nTimestamp                                 : Wed Dec  2 17:00:00 2026\nDriver Version                            : 535.104.05\nCUDA Version                              : 12.2\n\nAttached GPUs                             : 1\nGPU 00000000:07:00.0\n    Compute Mode                          : Default\n";
        assert_eq!(parse_cuda_version(report).as_deref(), Some("12.2"));
        assert_eq!(parse_cuda_version("CUDA Version : Not Found\n"), None);
        assert_eq!(parse_cuda_version("No devices were found\n"), None);
    }

    /// What `nvidia-smi` prints for [`QUERY`] on two GPUs, the second
    /// without power or ECC readings (as consumer boards answer).
    pub const TWO_GPUS: &str = "0, GPU-aaaa, 87, 41, 16384, 6144, 66, 182.35, 250.00, 1755, 6250, 1755, 45, 0, 0, 0, 3, 16, 3, 16\n1, GPU-bbbb, 0, 0, 8192, 0, 35, [N/A], [N/A], 300, 405, 300, [Not Supported], 0, [N/A], [N/A], 1, 16, 3, 16\n";

    #[test]
    fn query_output_becomes_sdk_names() {
        let busy: BTreeSet<String> = ["GPU-aaaa".to_string()].into();
        let m = parse(TWO_GPUS, &busy);
        assert_eq!(m["gpu.0.gpu"], 87.0);
        assert_eq!(m["gpu.0.memory"], 41.0);
        assert_eq!(m["gpu.0.memoryAllocated"], 37.5);
        assert_eq!(m["gpu.0.memoryAllocatedBytes"], 6144.0 * 1024.0 * 1024.0);
        assert_eq!(m["gpu.0.temp"], 66.0);
        assert_eq!(m["gpu.0.powerWatts"], 182.35);
        assert_eq!(m["gpu.0.enforcedPowerLimitWatts"], 250.0);
        assert!((m["gpu.0.powerPercent"] - 72.94).abs() < 1e-9);
        assert_eq!(m["gpu.0.smClock"], 1755.0);
        assert_eq!(m["gpu.0.memoryClock"], 6250.0);
        assert_eq!(m["gpu.0.fanSpeed"], 45.0);
        assert_eq!(m["gpu.0.pcieLinkWidth"], 16.0);
        assert_eq!(m["gpu.0.maxPcieLinkGen"], 3.0);
        assert_eq!(m["gpu.0.maxPcieLinkWidth"], 16.0);
        assert_eq!(m["gpu.process.0.gpu"], 87.0);
        assert_eq!(m["gpu.1.temp"], 35.0);
        assert!(!m.contains_key("gpu.1.powerWatts"));
        assert!(!m.contains_key("gpu.1.fanSpeed"));
        assert!(!m.contains_key("gpu.1.correctedMemoryErrors"));
        assert!(!m.keys().any(|k| k.starts_with("gpu.process.1.")));
        // Another tool's output, or an error text: nothing.
        assert!(parse("No devices were found\n", &busy).is_empty());
    }
}
