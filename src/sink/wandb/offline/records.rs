//! The subset of W&B's `wandb_internal.Record` protobufs the offline sink
//! writes and `sync` reads.
//!
//! Hand-derived for prost from `wandb/proto/wandb_internal.proto` and
//! `wandb_base.proto` (cross-checked against the 0.31.0 wheel's compiled
//! descriptors; docs/wandb-protocol.md section 5). Only the fields written
//! here are declared, with their real numbers, so W&B's own reader decodes
//! them as the full messages and ignores nothing it needs.

/// `wandb_internal.Record`: one entry of a `.wandb` transaction log.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Record {
    /// 1, 2, 3, ... in write order (core's `setNumber`).
    #[prost(int64, tag = "1")]
    pub num: i64,
    #[prost(
        oneof = "record::RecordType",
        tags = "2, 3, 5, 8, 12, 13, 17, 18, 21, 26"
    )]
    pub record_type: Option<record::RecordType>,
    #[prost(message, optional, tag = "200")]
    pub info: Option<RecordInfo>,
}

/// The `oneof record_type` of [`Record`] (members this sink writes).
pub mod record {
    /// What a record carries. Records are built and encoded one at a
    /// time, so the size of the largest member (the environment) costs
    /// nothing worth a box.
    #[derive(Clone, PartialEq, prost::Oneof)]
    #[allow(clippy::large_enum_variant)]
    pub enum RecordType {
        #[prost(message, tag = "2")]
        History(super::HistoryRecord),
        #[prost(message, tag = "3")]
        Summary(super::SummaryRecord),
        #[prost(message, tag = "5")]
        Config(super::ConfigRecord),
        #[prost(message, tag = "8")]
        Artifact(super::ArtifactRecord),
        #[prost(message, tag = "12")]
        Metric(super::MetricRecord),
        #[prost(message, tag = "13")]
        OutputRaw(super::OutputRawRecord),
        #[prost(message, tag = "17")]
        Run(super::RunRecord),
        #[prost(message, tag = "18")]
        Exit(super::RunExitRecord),
        #[prost(message, tag = "21")]
        Header(super::HeaderRecord),
        #[prost(message, tag = "26")]
        Environment(super::EnvironmentRecord),
    }
}

/// `wandb_internal._RecordInfo`: names the stream (the run id) on header,
/// run and exit records, as the SDK does.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RecordInfo {
    #[prost(string, tag = "1")]
    pub stream_id: String,
}

/// `google.protobuf.Timestamp`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Timestamp {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// `wandb_internal.RunRecord`: `wandb sync` needs one (run id, project,
/// start time) before it replays anything.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RunRecord {
    #[prost(string, tag = "1")]
    pub run_id: String,
    #[prost(string, tag = "2")]
    pub entity: String,
    #[prost(string, tag = "3")]
    pub project: String,
    #[prost(message, optional, tag = "4")]
    pub config: Option<ConfigRecord>,
    #[prost(string, tag = "8")]
    pub display_name: String,
    #[prost(string, tag = "13")]
    pub host: String,
    /// Always set: sync computes runtimes from it and a missing one
    /// decodes as 1970 (section 6.2).
    #[prost(message, optional, tag = "17")]
    pub start_time: Option<Timestamp>,
    #[prost(message, optional, tag = "200")]
    pub info: Option<RecordInfo>,
}

/// `wandb_internal.HistoryStep`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HistoryStep {
    #[prost(int64, tag = "1")]
    pub num: i64,
}

/// `wandb_internal.HistoryRecord`: one `wandb.log` call.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HistoryRecord {
    #[prost(message, repeated, tag = "1")]
    pub item: Vec<Item>,
    #[prost(message, optional, tag = "2")]
    pub step: Option<HistoryStep>,
}

/// `HistoryItem`, `SummaryItem` and `ConfigItem` share this layout
/// (key = 1, nested_key = 2, value_json = 16).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Item {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, repeated, tag = "2")]
    pub nested_key: Vec<String>,
    /// W&B's extended JSON (`NaN`, `Infinity` bare).
    #[prost(string, tag = "16")]
    pub value_json: String,
}

/// `wandb_internal.SummaryRecord`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SummaryRecord {
    #[prost(message, repeated, tag = "1")]
    pub update: Vec<Item>,
    /// Keys deleted from the summary (read by `sync`; never written).
    #[prost(message, repeated, tag = "2")]
    pub remove: Vec<Item>,
}

/// `wandb_internal.ConfigRecord`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ConfigRecord {
    #[prost(message, repeated, tag = "1")]
    pub update: Vec<Item>,
}

/// `wandb_internal.RunExitRecord`: without it `wandb sync` marks the run
/// failed (exit code 1).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RunExitRecord {
    #[prost(int32, tag = "1")]
    pub exit_code: i32,
    /// Whole seconds.
    #[prost(int32, tag = "2")]
    pub runtime: i32,
    #[prost(message, optional, tag = "200")]
    pub info: Option<RecordInfo>,
}

/// `wandb_internal.VersionInfo`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct VersionInfo {
    #[prost(string, tag = "1")]
    pub producer: String,
    #[prost(string, tag = "2")]
    pub min_consumer: String,
}

/// `wandb_internal.HeaderRecord`: the first record, naming the writer.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HeaderRecord {
    #[prost(message, optional, tag = "1")]
    pub version_info: Option<VersionInfo>,
    #[prost(message, optional, tag = "200")]
    pub info: Option<RecordInfo>,
}

/// `wandb_internal.MetricRecord`: one `run.define_metric` call. The
/// offline sink writes the one that makes `global_step` every metric's
/// x-axis; `sync` reads any an SDK wrote, for the config's `_wandb.m`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricRecord {
    /// Set for a metric by name; `glob_name` for a glob (`*` suffix).
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub glob_name: String,
    #[prost(string, tag = "4")]
    pub step_metric: String,
    /// One-based index into the config's `m` list (config form only).
    #[prost(int32, tag = "5")]
    pub step_metric_index: i32,
    #[prost(message, optional, tag = "6")]
    pub options: Option<MetricOptions>,
    #[prost(message, optional, tag = "7")]
    pub summary: Option<MetricSummary>,
    /// `MetricGoal`: 0 unset, 1 minimize, 2 maximize.
    #[prost(int32, tag = "8")]
    pub goal: i32,
    #[prost(message, optional, tag = "9")]
    pub control: Option<MetricControl>,
    #[prost(bool, tag = "10")]
    pub expanded_from_glob: bool,
}

/// `wandb_internal.MetricOptions`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricOptions {
    #[prost(bool, tag = "1")]
    pub step_sync: bool,
    #[prost(bool, tag = "2")]
    pub hidden: bool,
    /// Defined explicitly (not matched by a glob, not only a step metric).
    #[prost(bool, tag = "3")]
    pub defined: bool,
}

/// `wandb_internal.MetricSummary`: which aggregates the summary keeps.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricSummary {
    #[prost(bool, tag = "1")]
    pub min: bool,
    #[prost(bool, tag = "2")]
    pub max: bool,
    #[prost(bool, tag = "3")]
    pub mean: bool,
    #[prost(bool, tag = "4")]
    pub best: bool,
    #[prost(bool, tag = "5")]
    pub last: bool,
    #[prost(bool, tag = "6")]
    pub none: bool,
    #[prost(bool, tag = "7")]
    pub copy: bool,
    #[prost(bool, tag = "8")]
    pub first: bool,
}

/// `wandb_internal.MetricControl`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricControl {
    /// Replace an earlier definition instead of merging into it.
    #[prost(bool, tag = "1")]
    pub overwrite: bool,
}

/// `wandb_internal.OutputRawRecord`: console output as the SDK captures
/// it (0.31.0 writes these, not `OutputRecord`); `wandb sync` makes the
/// run's `output.log` (the Logs tab) of them.
#[derive(Clone, PartialEq, prost::Message)]
pub struct OutputRawRecord {
    /// `OutputType`: 0 stderr, 1 stdout.
    #[prost(int32, tag = "1")]
    pub output_type: i32,
    #[prost(message, optional, tag = "2")]
    pub timestamp: Option<Timestamp>,
    /// The text as written, newline included.
    #[prost(string, tag = "3")]
    pub line: String,
    #[prost(message, optional, tag = "200")]
    pub info: Option<RecordInfo>,
}

/// `wandb_internal.EnvironmentRecord`: what the SDK knows of the machine
/// and the process (the run's `wandb-metadata.json`, the Overview tab).
/// One definition for both sides: what the agent writes (the fields it can
/// know) and what `sync` reads from directories the SDK wrote (all the
/// SDK fills, but the hardware members of rarer accelerators: Apple, AMD,
/// Trainium, TPU, CoreWeave, which are left out).
#[derive(Clone, PartialEq, prost::Message)]
pub struct EnvironmentRecord {
    #[prost(string, tag = "1")]
    pub os: String,
    #[prost(string, tag = "2")]
    pub python: String,
    #[prost(message, optional, tag = "3")]
    pub started_at: Option<Timestamp>,
    #[prost(string, tag = "4")]
    pub docker: String,
    #[prost(string, repeated, tag = "5")]
    pub args: Vec<String>,
    #[prost(string, tag = "6")]
    pub program: String,
    #[prost(string, tag = "7")]
    pub code_path: String,
    #[prost(string, tag = "8")]
    pub code_path_local: String,
    #[prost(message, optional, tag = "9")]
    pub git: Option<GitRepoRecord>,
    #[prost(string, tag = "10")]
    pub email: String,
    #[prost(string, tag = "11")]
    pub root: String,
    #[prost(string, tag = "12")]
    pub host: String,
    #[prost(string, tag = "13")]
    pub username: String,
    #[prost(string, tag = "14")]
    pub executable: String,
    #[prost(string, tag = "15")]
    pub colab: String,
    #[prost(uint32, tag = "16")]
    pub cpu_count: u32,
    #[prost(uint32, tag = "17")]
    pub cpu_count_logical: u32,
    /// The SDK's `gpu`: the first GPU's name.
    #[prost(string, tag = "18")]
    pub gpu_type: String,
    #[prost(uint32, tag = "19")]
    pub gpu_count: u32,
    #[prost(btree_map = "string, message", tag = "20")]
    pub disk: std::collections::BTreeMap<String, DiskInfo>,
    #[prost(message, optional, tag = "21")]
    pub memory: Option<MemoryInfo>,
    #[prost(message, optional, tag = "22")]
    pub cpu: Option<CpuInfo>,
    #[prost(message, repeated, tag = "24")]
    pub gpu_nvidia: Vec<GpuNvidiaInfo>,
    #[prost(string, tag = "25")]
    pub cuda_version: String,
    #[prost(btree_map = "string, string", tag = "27")]
    pub slurm: std::collections::BTreeMap<String, String>,
    #[prost(string, tag = "199")]
    pub writer_id: String,
    #[prost(message, optional, tag = "200")]
    pub info: Option<RecordInfo>,
}

/// `GitRepoRecord`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GitRepoRecord {
    #[prost(string, tag = "1")]
    pub remote_url: String,
    #[prost(string, tag = "2")]
    pub commit: String,
}

/// `DiskInfo`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DiskInfo {
    #[prost(uint64, tag = "1")]
    pub total: u64,
    #[prost(uint64, tag = "2")]
    pub used: u64,
}

/// `MemoryInfo`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MemoryInfo {
    #[prost(uint64, tag = "1")]
    pub total: u64,
}

/// `CpuInfo`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CpuInfo {
    #[prost(uint32, tag = "1")]
    pub count: u32,
    #[prost(uint32, tag = "2")]
    pub count_logical: u32,
    #[prost(string, tag = "3")]
    pub model: String,
}

/// `GpuNvidiaInfo`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GpuNvidiaInfo {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(uint64, tag = "2")]
    pub memory_total: u64,
    #[prost(uint32, tag = "3")]
    pub cuda_cores: u32,
    #[prost(string, tag = "4")]
    pub architecture: String,
    #[prost(string, tag = "5")]
    pub uuid: String,
    #[prost(string, tag = "6")]
    pub pci_bus_id: String,
    #[prost(uint32, tag = "7")]
    pub numa_node: u32,
}

/// `wandb_internal.ArtifactRecord`: `run.log_artifact` in an offline run;
/// `wandb sync` saves it as the SDK online would (fields as the SDK
/// writes them offline, tests/fixtures/wandb-sdk-artifacts.json).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ArtifactRecord {
    #[prost(string, tag = "1")]
    pub run_id: String,
    #[prost(string, tag = "2")]
    pub project: String,
    #[prost(string, tag = "3")]
    pub entity: String,
    #[prost(string, tag = "4")]
    pub r#type: String,
    #[prost(string, tag = "5")]
    pub name: String,
    #[prost(string, tag = "6")]
    pub digest: String,
    /// Set by an SDK's `Artifact(description=...)`; the agent writes none.
    #[prost(string, tag = "7")]
    pub description: String,
    /// JSON text.
    #[prost(string, tag = "8")]
    pub metadata: String,
    #[prost(string, repeated, tag = "11")]
    pub aliases: Vec<String>,
    #[prost(message, optional, tag = "12")]
    pub manifest: Option<ArtifactManifest>,
    #[prost(bool, tag = "14")]
    pub finalize: bool,
    #[prost(string, tag = "15")]
    pub client_id: String,
    #[prost(string, tag = "16")]
    pub sequence_client_id: String,
    #[prost(string, tag = "20")]
    pub digest_algorithm: String,
}

/// `wandb_internal.ArtifactManifest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ArtifactManifest {
    #[prost(int32, tag = "1")]
    pub version: i32,
    #[prost(string, tag = "2")]
    pub storage_policy: String,
    #[prost(message, repeated, tag = "3")]
    pub storage_policy_config: Vec<StoragePolicyConfigItem>,
    #[prost(message, repeated, tag = "4")]
    pub contents: Vec<ArtifactManifestEntry>,
}

/// `wandb_internal.StoragePolicyConfigItem`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StoragePolicyConfigItem {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value_json: String,
}

/// `wandb_internal.ArtifactManifestEntry`: `local_path` is where sync
/// reads the file from.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ArtifactManifestEntry {
    #[prost(string, tag = "1")]
    pub path: String,
    #[prost(string, tag = "2")]
    pub digest: String,
    /// A reference entry's URI (`add_reference`): no local file.
    #[prost(string, tag = "3")]
    pub r#ref: String,
    #[prost(int64, tag = "4")]
    pub size: i64,
    #[prost(string, tag = "6")]
    pub local_path: String,
}
