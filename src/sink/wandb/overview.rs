//! A run's Overview and Logs tabs, in the SDK's forms (recorded from wandb
//! 0.31.0, tests/fixtures/wandb-sdk-overview.json):
//!
//! - `wandb-metadata.json`, uploaded as a run file (CreateRunFiles, PUT),
//!   and the same object under the writer's id in the config's `_wandb.e`;
//!   offline, an `EnvironmentRecord`. Only what the agent knows is there
//!   ([`crate::machine::MachineFacts`]): host, OS, CPUs, memory, the run's
//!   start, and in init mode the worker's program, arguments, executable
//!   and directory, with the interpreter's version and the script's
//!   `codePath` when CMD is Python; `disk["/"]` and, when `nvidia-smi`
//!   lists any, `gpu`, `gpu_count` and `gpu_nvidia`. No `cli_version` or
//!   `python_version` in `_wandb`: those name the SDK, which did not write
//!   the run.
//! - console lines: `output.log` over file_stream, one line per console
//!   row at its own offset, `<time> <line>` for stdout and
//!   `ERROR <time> <line>` for stderr (the time in UTC, microseconds, no
//!   zone); offline, `OutputRawRecord`s.

use serde_json::{json, Map, Value};

use super::offline::records;
use crate::machine::MachineFacts;

/// The name the SDK uploads the metadata under.
pub const METADATA_FILE: &str = "wandb-metadata.json";

/// The console file the Logs tab shows.
pub const OUTPUT_FILE: &str = "output.log";

/// The writer id the agent's entries carry (the SDK uses one per process;
/// the agent writes a run from one place at a time).
pub fn writer_id(facts: &MachineFacts) -> String {
    match &facts.host {
        Some(h) => format!("mosaic-shipper@{h}"),
        None => "mosaic-shipper".to_string(),
    }
}

/// RFC 3339 in UTC with microseconds and `Z`, as the SDK's `startedAt`.
pub fn rfc3339(secs: f64) -> String {
    format_time(secs, true)
}

fn format_time(secs: f64, zone: bool) -> String {
    // Whole microseconds, rounded: what the text shows.
    let nanos = if secs.is_finite() {
        (secs * 1e6).round() as i128 * 1000
    } else {
        0
    };
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let f = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]"
    );
    let mut s = t.format(&f).unwrap_or_default();
    if zone {
        s.push('Z');
    }
    s
}

/// The run's start for the metadata: the worker's start when init mode
/// knows it, else the earliest row's time (`start`, `+inf` before one).
/// The worker's start alone, not moved back by rows: workers stamp their
/// records to the second, so the first row often reads as earlier than
/// the process that wrote it, and the metadata must keep the value the
/// config's `_wandb.e` was sent with.
pub fn started_at(facts: &MachineFacts, start: f64) -> Option<f64> {
    let worker = facts.worker.as_ref().map(|w| w.started_at);
    match worker {
        Some(w) if w.is_finite() => Some(w),
        _ => start.is_finite().then_some(start),
    }
}

/// `wandb-metadata.json` (and the `_wandb.e` entry): the SDK's keys, for
/// what is known.
pub fn metadata(facts: &MachineFacts, start: f64) -> Value {
    let mut m = Map::new();
    if let Some(os) = &facts.os {
        m.insert("os".into(), json!(os));
    }
    if let Some(t) = started_at(facts, start) {
        m.insert("startedAt".into(), json!(rfc3339(t)));
    }
    if let Some(w) = &facts.worker {
        m.insert("args".into(), json!(w.args));
        m.insert("program".into(), json!(w.program));
        if let Some(root) = &w.root {
            m.insert("root".into(), json!(root));
        }
    }
    if let Some(w) = &facts.worker {
        if let Some(p) = &w.python {
            m.insert("python".into(), json!(p));
        }
        if let Some(c) = &w.code_path {
            // The SDK writes the same path under both names for a script
            // inside a checkout (tests/fixtures/wandb-sdk-overview.json).
            m.insert("codePath".into(), json!(c));
            m.insert("codePathLocal".into(), json!(c));
        }
    }
    if let Some(h) = &facts.host {
        m.insert("host".into(), json!(h));
    }
    if let Some(e) = facts.worker.as_ref().and_then(|w| w.executable.as_ref()) {
        m.insert("executable".into(), json!(e));
    }
    if let Some(n) = facts.cpu_count {
        m.insert("cpu_count".into(), json!(n));
    }
    if let Some(n) = facts.cpu_count_logical {
        m.insert("cpu_count_logical".into(), json!(n));
    }
    // xpu/src/gpu_nvidia.rs `get_metadata`: `gpu_type` (JSON `gpu`) is
    // GPU 0's name, `gpu_count` the devices NVML counts, `cuda_version`
    // (JSON `cudaVersion`) the driver's CUDA version, set only with a GPU.
    if let Some(first) = facts.gpus.first() {
        m.insert("gpu".into(), json!(first.name));
        m.insert("gpu_count".into(), json!(facts.gpus.len()));
        if let Some(v) = &facts.cuda_version {
            m.insert("cudaVersion".into(), json!(v));
        }
    }
    if let Some(d) = &facts.disk {
        // protojson: uint64 as strings.
        m.insert(
            "disk".into(),
            json!({"/": {"total": d.total.to_string(), "used": d.used.to_string()}}),
        );
    }
    if let Some(t) = facts.memory_total {
        // protojson writes uint64 as a string.
        m.insert("memory".into(), json!({"total": t.to_string()}));
    }
    if let Some(model) = &facts.cpu_model {
        m.insert("cpu".into(), json!({"model": model}));
    }
    if !facts.gpus.is_empty() {
        let gpus: Vec<Value> = facts
            .gpus
            .iter()
            .map(|g| {
                let mut o = Map::new();
                o.insert("name".into(), json!(g.name));
                if let Some(t) = g.memory_total {
                    o.insert("memoryTotal".into(), json!(t.to_string()));
                }
                if !g.uuid.is_empty() {
                    o.insert("uuid".into(), json!(g.uuid));
                }
                if !g.pci_bus_id.is_empty() {
                    o.insert("pciBusId".into(), json!(g.pci_bus_id));
                }
                Value::Object(o)
            })
            .collect();
        m.insert("gpu_nvidia".into(), Value::Array(gpus));
    }
    m.insert("writerId".into(), json!(writer_id(facts)));
    Value::Object(m)
}

/// The file's bytes, indented as the SDK writes it.
pub fn metadata_file(facts: &MachineFacts, start: f64) -> Vec<u8> {
    serde_json::to_vec_pretty(&metadata(facts, start)).expect("JSON values serialise")
}

/// Adds the `_wandb.e` entry to a config in W&B's form
/// (`client::wandb_config`).
pub fn add_environment(config: &mut Value, facts: &MachineFacts, start: f64) {
    if let Some(wandb) = config
        .pointer_mut("/_wandb/value")
        .and_then(Value::as_object_mut)
    {
        wandb.insert(
            "e".into(),
            json!({ writer_id(facts): metadata(facts, start) }),
        );
    }
}

/// A console line as the `output.log` file holds it (the SDK's
/// `files/output.log`, uploaded at the run's end): its text and a
/// newline, no time, no stream (`outputfilewriter.go` writes each line's
/// content alone).
pub fn push_output_file_line(line: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(line.as_bytes());
    out.push(b'\n');
}

/// The bytes [`push_output_file_line`] adds for `line`.
pub fn output_file_len(line: &str) -> u64 {
    line.len() as u64 + 1
}

/// One `output.log` line as core sends it over file_stream.
pub fn output_line(stderr: bool, line: &str, secs: f64) -> String {
    let t = format_time(secs, false);
    if stderr {
        format!("ERROR {t} {line}")
    } else {
        format!("{t} {line}")
    }
}

fn timestamp(secs: f64) -> records::Timestamp {
    let whole = secs.floor();
    records::Timestamp {
        seconds: whole as i64,
        nanos: ((secs - whole) * 1e9) as i32,
    }
}

/// The offline form of a console line: one raw record, newline included.
pub fn output_record(run: &str, stderr: bool, line: &str, secs: f64) -> records::OutputRawRecord {
    records::OutputRawRecord {
        output_type: if stderr { 0 } else { 1 },
        timestamp: Some(timestamp(if secs.is_finite() { secs } else { 0.0 })),
        line: format!("{line}\n"),
        info: Some(records::RecordInfo {
            stream_id: run.to_string(),
        }),
    }
}

/// The offline form of the metadata.
pub fn environment_record(facts: &MachineFacts, start: f64) -> records::EnvironmentRecord {
    let w = facts.worker.as_ref();
    records::EnvironmentRecord {
        os: facts.os.clone().unwrap_or_default(),
        started_at: started_at(facts, start).map(timestamp),
        args: w.map(|w| w.args.clone()).unwrap_or_default(),
        program: w.map(|w| w.program.clone()).unwrap_or_default(),
        root: w.and_then(|w| w.root.clone()).unwrap_or_default(),
        host: facts.host.clone().unwrap_or_default(),
        executable: w.and_then(|w| w.executable.clone()).unwrap_or_default(),
        python: w.and_then(|w| w.python.clone()).unwrap_or_default(),
        code_path: w.and_then(|w| w.code_path.clone()).unwrap_or_default(),
        code_path_local: w.and_then(|w| w.code_path.clone()).unwrap_or_default(),
        gpu_type: facts
            .gpus
            .first()
            .map(|g| g.name.clone())
            .unwrap_or_default(),
        gpu_count: facts.gpus.len() as u32,
        cuda_version: if facts.gpus.is_empty() {
            String::new()
        } else {
            facts.cuda_version.clone().unwrap_or_default()
        },
        disk: facts
            .disk
            .iter()
            .map(|d| {
                (
                    "/".to_string(),
                    records::DiskInfo {
                        total: d.total,
                        used: d.used,
                    },
                )
            })
            .collect(),
        gpu_nvidia: facts
            .gpus
            .iter()
            .map(|g| records::GpuNvidiaInfo {
                name: g.name.clone(),
                memory_total: g.memory_total.unwrap_or(0),
                uuid: g.uuid.clone(),
                pci_bus_id: g.pci_bus_id.clone(),
                ..Default::default()
            })
            .collect(),
        cpu_count: facts.cpu_count.unwrap_or(0),
        cpu_count_logical: facts.cpu_count_logical.unwrap_or(0),
        memory: facts
            .memory_total
            .map(|total| records::MemoryInfo { total }),
        cpu: facts.cpu_model.clone().map(|model| records::CpuInfo {
            count: 0,
            count_logical: 0,
            model,
        }),
        writer_id: writer_id(facts),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::WorkerFacts;

    #[test]
    fn shapes_follow_the_sdk() {
        assert_eq!(
            output_line(false, "hello", 1796188000.630849),
            "2026-12-02T05:06:40.630849 hello"
        );
        assert!(output_line(true, "boom", 1796188000.5).starts_with("ERROR 2026-12-02T05:06:40.5"));
        let facts = MachineFacts {
            host: Some("h".into()),
            os: Some("Linux-6-x86_64".into()),
            cpu_count: Some(2),
            cpu_count_logical: Some(4),
            cpu_model: None,
            memory_total: Some(1024),
            disk: Some(crate::machine::DiskFacts {
                total: 4096,
                used: 1024,
            }),
            gpus: vec![crate::machine::GpuFacts {
                name: "Tesla T4".into(),
                memory_total: Some(15360 * 1024 * 1024),
                uuid: "GPU-1".into(),
                pci_bus_id: String::new(),
            }],
            cuda_version: Some("12.2".into()),
            worker: Some(WorkerFacts {
                python: Some("CPython 3.11.2".into()),
                code_path: Some("rl/train.py".into()),
                program: "train.py".into(),
                args: vec!["--seed".into(), "1".into()],
                executable: Some("python3".into()),
                root: Some("/w".into()),
                started_at: 100.25,
            }),
        };
        let m = metadata(&facts, 200.0);
        assert_eq!(m["startedAt"], "1970-01-01T00:01:40.250000Z");
        assert_eq!(m["memory"]["total"], "1024");
        assert_eq!(m["args"], json!(["--seed", "1"]));
        assert_eq!(m["writerId"], "mosaic-shipper@h");
        assert_eq!(m["python"], "CPython 3.11.2");
        assert_eq!(
            (&m["codePath"], &m["codePathLocal"]),
            (&json!("rl/train.py"), &json!("rl/train.py"))
        );
        assert_eq!(m["disk"], json!({"/": {"total": "4096", "used": "1024"}}));
        assert_eq!(
            (&m["gpu"], &m["gpu_count"]),
            (&json!("Tesla T4"), &json!(1))
        );
        assert_eq!(m["cudaVersion"], "12.2");
        assert_eq!(environment_record(&facts, 200.0).cuda_version, "12.2");
        assert_eq!(
            m["gpu_nvidia"],
            json!([{"name": "Tesla T4", "memoryTotal": "16106127360", "uuid": "GPU-1"}])
        );
        let mut config = json!({"_wandb": {"value": {"t": {}}}});
        add_environment(&mut config, &facts, 200.0);
        assert_eq!(config["_wandb"]["value"]["e"]["mosaic-shipper@h"], m);
        // Without a worker: the start is the earliest row's.
        let daemon = MachineFacts {
            worker: None,
            ..facts
        };
        assert_eq!(
            metadata(&daemon, 60.0)["startedAt"],
            "1970-01-01T00:01:00.000000Z"
        );
        assert!(metadata(&daemon, f64::INFINITY).get("startedAt").is_none());
    }
}
