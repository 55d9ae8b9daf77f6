//! The records of an SDK-written `.wandb` log that only `sync` reads:
//! system metrics (`stats`), console output (`output_raw`, and `output`
//! of older SDKs), the machine and program (`environment`), the SDK's
//! telemetry, and the files it asked to upload (`files`).
//!
//! Kept apart from the offline sink's `records` (what the agent writes)
//! so that reading what the SDK writes never changes what the agent
//! writes. [`SdkRecord`] is wire-compatible with `wandb_internal.Record`
//! (it declares only these members, with their real field numbers,
//! checked against the 0.31.0 wheel's compiled descriptors), so a raw
//! record decodes as it with every other member skipped.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::sink::wandb::offline::records::Timestamp;

/// A `wandb_internal.Record` seen through the members `sync` needs here.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SdkRecord {
    #[prost(oneof = "sdk_record::Kind", tags = "4, 6, 7, 11, 13, 26")]
    pub kind: Option<sdk_record::Kind>,
}

/// The `oneof record_type` members of [`SdkRecord`].
pub mod sdk_record {
    /// What a record carries.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Kind {
        #[prost(message, tag = "4")]
        Output(super::OutputRecord),
        #[prost(message, tag = "6")]
        Files(super::FilesRecord),
        #[prost(message, tag = "7")]
        Stats(super::StatsRecord),
        /// `TelemetryRecord`, kept undecoded: core turns it into
        /// `_wandb.t` by field number ([`super::telemetry_fields`]).
        #[prost(bytes, tag = "11")]
        Telemetry(Vec<u8>),
        #[prost(message, tag = "13")]
        OutputRaw(super::OutputRecord),
        #[prost(message, tag = "26")]
        Environment(Box<super::EnvironmentRecord>),
    }
}

/// The `record_type` field numbers [`SdkRecord`] decodes.
pub const FIELDS: [u64; 6] = [4, 6, 7, 11, 13, 26];

/// `OutputRecord` and `OutputRawRecord` (the same layout): a piece of
/// console output, newlines included.
#[derive(Clone, PartialEq, prost::Message)]
pub struct OutputRecord {
    /// `OutputType`: 0 stderr, 1 stdout.
    #[prost(int32, tag = "1")]
    pub output_type: i32,
    #[prost(message, optional, tag = "2")]
    pub timestamp: Option<Timestamp>,
    #[prost(string, tag = "3")]
    pub line: String,
}

/// `FilesRecord`: files of `files/` the SDK asked to upload.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FilesRecord {
    #[prost(message, repeated, tag = "1")]
    pub files: Vec<FilesItem>,
}

/// `FilesItem`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FilesItem {
    #[prost(string, tag = "1")]
    pub path: String,
}

/// `StatsRecord`: one sample of the system monitor.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StatsRecord {
    /// `StatsType`: 0 system (the only one).
    #[prost(int32, tag = "1")]
    pub stats_type: i32,
    #[prost(message, optional, tag = "2")]
    pub timestamp: Option<Timestamp>,
    #[prost(message, repeated, tag = "3")]
    pub item: Vec<StatsItem>,
}

/// `StatsItem`: a metric name without the `system.` prefix
/// (`cpu`, `proc.memory.rssMB`, `gpu.0.temp`) and its JSON value.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StatsItem {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "16")]
    pub value_json: String,
}

pub use crate::sink::wandb::offline::records::{
    CpuInfo, DiskInfo, EnvironmentRecord, GitRepoRecord, GpuNvidiaInfo, MemoryInfo,
};

/// A timestamp as protobuf's JSON mapping writes it (RFC 3339, UTC,
/// 0, 3, 6 or 9 fractional digits).
pub fn timestamp_json(t: &Timestamp) -> String {
    let dt = time::OffsetDateTime::from_unix_timestamp(t.seconds)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let base = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        dt.year(),
        u8::from(dt.month()),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second()
    );
    let n = t.nanos.max(0);
    let frac = if n == 0 {
        String::new()
    } else if n % 1_000_000 == 0 {
        format!(".{:03}", n / 1_000_000)
    } else if n % 1_000 == 0 {
        format!(".{:06}", n / 1_000)
    } else {
        format!(".{n:09}")
    };
    format!("{base}{frac}Z")
}

/// Seconds since the epoch of a timestamp.
pub fn seconds(t: &Timestamp) -> f64 {
    t.seconds as f64 + f64::from(t.nanos) / 1e9
}

impl EnvironmentRecord {
    /// The record in protobuf's JSON mapping (json names, unset members
    /// left out, 64-bit integers as strings), in field order: what core
    /// writes to `wandb-metadata.json` and `_wandb.e`.
    pub fn to_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        let mut s = |k: &str, v: &str| {
            if !v.is_empty() {
                m.insert(k.into(), Value::String(v.into()));
            }
        };
        s("os", &self.os);
        s("python", &self.python);
        if let Some(t) = &self.started_at {
            m.insert("startedAt".into(), Value::String(timestamp_json(t)));
        }
        let mut s = |k: &str, v: &str| {
            if !v.is_empty() {
                m.insert(k.into(), Value::String(v.into()));
            }
        };
        s("docker", &self.docker);
        if !self.args.is_empty() {
            m.insert("args".into(), json!(self.args));
        }
        let mut s = |k: &str, v: &str| {
            if !v.is_empty() {
                m.insert(k.into(), Value::String(v.into()));
            }
        };
        s("program", &self.program);
        s("codePath", &self.code_path);
        s("codePathLocal", &self.code_path_local);
        if let Some(g) = &self.git {
            let mut gm = Map::new();
            if !g.remote_url.is_empty() {
                gm.insert("remote".into(), json!(g.remote_url));
            }
            if !g.commit.is_empty() {
                gm.insert("commit".into(), json!(g.commit));
            }
            m.insert("git".into(), Value::Object(gm));
        }
        for (k, v) in [
            ("email", &self.email),
            ("root", &self.root),
            ("host", &self.host),
            ("username", &self.username),
            ("executable", &self.executable),
            ("colab", &self.colab),
        ] {
            if !v.is_empty() {
                m.insert(k.into(), json!(v));
            }
        }
        if self.cpu_count != 0 {
            m.insert("cpu_count".into(), json!(self.cpu_count));
        }
        if self.cpu_count_logical != 0 {
            m.insert("cpu_count_logical".into(), json!(self.cpu_count_logical));
        }
        if !self.gpu_type.is_empty() {
            m.insert("gpu".into(), json!(self.gpu_type));
        }
        if self.gpu_count != 0 {
            m.insert("gpu_count".into(), json!(self.gpu_count));
        }
        if !self.disk.is_empty() {
            let disks: Map<String, Value> = self
                .disk
                .iter()
                .map(|(k, d)| {
                    let mut dm = Map::new();
                    if d.total != 0 {
                        dm.insert("total".into(), json!(d.total.to_string()));
                    }
                    if d.used != 0 {
                        dm.insert("used".into(), json!(d.used.to_string()));
                    }
                    (k.clone(), Value::Object(dm))
                })
                .collect();
            m.insert("disk".into(), Value::Object(disks));
        }
        if let Some(mem) = &self.memory {
            let mut mm = Map::new();
            if mem.total != 0 {
                mm.insert("total".into(), json!(mem.total.to_string()));
            }
            m.insert("memory".into(), Value::Object(mm));
        }
        if let Some(c) = &self.cpu {
            let mut cm = Map::new();
            if c.count != 0 {
                cm.insert("count".into(), json!(c.count));
            }
            if c.count_logical != 0 {
                cm.insert("countLogical".into(), json!(c.count_logical));
            }
            if !c.model.is_empty() {
                cm.insert("model".into(), json!(c.model));
            }
            m.insert("cpu".into(), Value::Object(cm));
        }
        if !self.gpu_nvidia.is_empty() {
            let gpus: Vec<Value> = self
                .gpu_nvidia
                .iter()
                .map(|g| {
                    let mut gm = Map::new();
                    if !g.name.is_empty() {
                        gm.insert("name".into(), json!(g.name));
                    }
                    if g.memory_total != 0 {
                        gm.insert("memoryTotal".into(), json!(g.memory_total.to_string()));
                    }
                    if g.cuda_cores != 0 {
                        gm.insert("cudaCores".into(), json!(g.cuda_cores));
                    }
                    if !g.architecture.is_empty() {
                        gm.insert("architecture".into(), json!(g.architecture));
                    }
                    if !g.uuid.is_empty() {
                        gm.insert("uuid".into(), json!(g.uuid));
                    }
                    if !g.pci_bus_id.is_empty() {
                        gm.insert("pciBusId".into(), json!(g.pci_bus_id));
                    }
                    if g.numa_node != 0 {
                        gm.insert("numaNode".into(), json!(g.numa_node));
                    }
                    Value::Object(gm)
                })
                .collect();
            m.insert("gpu_nvidia".into(), Value::Array(gpus));
        }
        if !self.cuda_version.is_empty() {
            m.insert("cudaVersion".into(), json!(self.cuda_version));
        }
        if !self.slurm.is_empty() {
            m.insert("slurm".into(), json!(self.slurm));
        }
        if !self.writer_id.is_empty() {
            m.insert("writerId".into(), json!(self.writer_id));
        }
        m
    }
}

/// Merges `update` into `into` as protobuf's Merge does for these
/// messages: set scalars replace, maps and messages merge, lists append.
pub fn merge_json(into: &mut Map<String, Value>, update: Map<String, Value>) {
    for (k, v) in update {
        match (into.get_mut(&k), v) {
            (Some(Value::Object(a)), Value::Object(b)) => merge_json(a, b),
            (Some(Value::Array(a)), Value::Array(b)) => a.extend(b),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

/// `TelemetryRecord` fields that hold text; the other members (1, 2, 3,
/// 8, 9, 10) are messages.
const TELEMETRY_STRINGS: [u64; 5] = [4, 5, 6, 12, 13];

/// What one raw `TelemetryRecord` sets, by field number, in the form core
/// puts in `_wandb.t` (`corelib.ProtoEncodeToDict`): text members as
/// text, messages of flags as the sorted numbers of the flags set,
/// messages of text as a map of number to text. `None` if the bytes are
/// not protobuf.
pub fn telemetry_fields(raw: &[u8]) -> Option<BTreeMap<u64, Telemetry>> {
    let mut out = BTreeMap::new();
    for (field, value) in raw_fields(raw)? {
        if field >= 200 {
            continue; // `_info`: core skips names starting with `_`.
        }
        let RawValue::Bytes(bytes) = value else {
            continue;
        };
        if TELEMETRY_STRINGS.contains(&field) {
            if let Ok(s) = String::from_utf8(bytes.to_vec()) {
                out.insert(field, Telemetry::Text(s));
            }
            continue;
        }
        let inner = raw_fields(bytes)?;
        if inner.iter().all(|(_, v)| matches!(v, RawValue::Varint(_))) {
            let flags = inner
                .iter()
                .filter(|(_, v)| matches!(v, RawValue::Varint(n) if *n != 0))
                .map(|(f, _)| *f)
                .collect();
            out.insert(field, Telemetry::Flags(flags));
        } else {
            let texts = inner
                .into_iter()
                .filter_map(|(f, v)| match v {
                    RawValue::Bytes(b) => String::from_utf8(b.to_vec()).ok().map(|s| (f, s)),
                    RawValue::Varint(_) => None,
                })
                .collect();
            out.insert(field, Telemetry::Texts(texts));
        }
    }
    Some(out)
}

/// One member of a telemetry record, as `_wandb.t` holds it.
#[derive(Debug, Clone, PartialEq)]
pub enum Telemetry {
    Text(String),
    Flags(std::collections::BTreeSet<u64>),
    Texts(BTreeMap<u64, String>),
}

impl Telemetry {
    /// Merges a later record's member in (protobuf Merge: flags set stay
    /// set, later text replaces).
    pub fn merge(&mut self, later: Telemetry) {
        match (self, later) {
            (Telemetry::Flags(a), Telemetry::Flags(b)) => a.extend(b),
            (Telemetry::Texts(a), Telemetry::Texts(b)) => a.extend(b),
            (me, later) => *me = later,
        }
    }

    pub fn to_json(&self) -> Value {
        match self {
            Telemetry::Text(s) => json!(s),
            Telemetry::Flags(f) => json!(f),
            Telemetry::Texts(t) => {
                Value::Object(t.iter().map(|(k, v)| (k.to_string(), json!(v))).collect())
            }
        }
    }
}

enum RawValue<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

/// The top-level fields of a protobuf message, in order; fixed-width
/// fields are skipped. `None` if it does not parse.
fn raw_fields(mut raw: &[u8]) -> Option<Vec<(u64, RawValue<'_>)>> {
    fn varint(buf: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = buf.split_first()?;
            *buf = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Some(v);
            }
        }
        None
    }
    let mut out = Vec::new();
    while !raw.is_empty() {
        let key = varint(&mut raw)?;
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => out.push((field, RawValue::Varint(varint(&mut raw)?))),
            1 => raw = raw.get(8..)?,
            5 => raw = raw.get(4..)?,
            2 => {
                let len = usize::try_from(varint(&mut raw)?).ok()?;
                out.push((field, RawValue::Bytes(raw.get(..len)?)));
                raw = raw.get(len..)?;
            }
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn timestamps_use_protojson_precision() {
        let t = |seconds, nanos| timestamp_json(&Timestamp { seconds, nanos });
        assert_eq!(t(1796188168, 270_595_000), "2026-12-02T05:09:28.270595Z");
        assert_eq!(t(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(t(0, 5_000_000), "1970-01-01T00:00:00.005Z");
        assert_eq!(t(0, 1), "1970-01-01T00:00:00.000000001Z");
    }

    #[test]
    fn telemetry_becomes_wandb_t() {
        // feature (3) {finish 2: true, offline 4: true}, python 4, platform 13.
        let mut raw = vec![0x1A, 0x04, 0x10, 0x01, 0x20, 0x01];
        raw.extend_from_slice(&[0x22, 0x02, b'3', b'.']);
        raw.extend_from_slice(&[0x6A, 0x01, b'x']);
        let t = telemetry_fields(&raw).unwrap();
        assert_eq!(t[&3].to_json(), json!([2, 4]));
        assert_eq!(t[&4].to_json(), json!("3."));
        assert_eq!(t[&13].to_json(), json!("x"));
        assert!(telemetry_fields(&[0xFF]).is_none());
    }

    #[test]
    fn environment_json_follows_protojson() {
        let mut env = EnvironmentRecord {
            os: "Linux".into(),
            cpu_count: 2,
            writer_id: "w".into(),
            ..Default::default()
        };
        env.disk.insert("/".into(), DiskInfo { total: 10, used: 0 });
        let bytes = env.encode_to_vec();
        let back = EnvironmentRecord::decode(&bytes[..]).unwrap();
        assert_eq!(
            Value::Object(back.to_json()),
            json!({"os": "Linux", "cpu_count": 2, "disk": {"/": {"total": "10"}}, "writerId": "w"})
        );
        let mut a = back.to_json();
        merge_json(
            &mut a,
            json!({"memory": {"total": "5"}, "os": "L2"})
                .as_object()
                .unwrap()
                .clone(),
        );
        assert_eq!(a["os"], "L2");
        assert_eq!(a["memory"]["total"], "5");
    }
}
