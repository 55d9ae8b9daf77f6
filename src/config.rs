//! Configuration: the TOML schema, the embedded default and its validation.
//!
//! The embedded default *is* `config/mosaic-shipper.toml`, so the documented
//! example and the behaviour with no `--config` can never drift apart.
//! Unknown keys are rejected (`deny_unknown_fields`): a typo in a key must
//! not silently fall back to a default.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The documented example, used verbatim when no configuration is given.
pub const EMBEDDED_DEFAULT: &str = include_str!("../config/mosaic-shipper.toml");

/// Environment variable naming the configuration file when `--config` is absent.
pub const CONFIG_ENV: &str = "MOSAIC_SHIPPER_CONFIG";

/// Why a configuration was refused; every variant names what to fix.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration in {origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("invalid configuration in {origin}: {message}")]
    Invalid { origin: String, message: String },
}

/// The whole agent configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub tail: TailConfig,
    /// What to read: `[[sources]]` tables. Absent: the default sources,
    /// unless the older `tail.sources` list names files (see
    /// [`Config::sources`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sources: Option<Vec<SourceConfig>>,
    #[serde(default)]
    pub extract: ExtractConfig,
    #[serde(default)]
    pub sinks: SinksConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub init: InitConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub system_metrics: SystemMetricsConfig,
    #[serde(default)]
    pub artifacts: ArtifactsConfig,
    /// Where this configuration came from, for error messages and `check-config`.
    #[serde(skip)]
    pub origin: String,
}

/// Checkpoint files shipped to W&B as versions of `model` artifacts
/// (`source::artifacts`, `sink::wandb::artifact`). Only with the W&B sink
/// online.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactsConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The directory holding one directory per run, named by its run id.
    #[serde(default = "default_artifact_runs_dir")]
    pub runs_dir: PathBuf,
    /// Globs relative to a run directory.
    #[serde(default = "default_artifact_paths")]
    pub paths: Vec<String>,
    /// A file is complete once its size and modification time stayed the
    /// same for this long.
    #[serde(default = "default_artifact_settle")]
    pub settle_ms: u64,
    /// How often the run directories are looked at.
    #[serde(default = "default_artifact_poll")]
    pub poll_interval_ms: u64,
    /// Larger files are skipped (counted, logged).
    #[serde(default = "default_artifact_max_file")]
    pub max_file_bytes: u64,
    /// Bytes of versions per run; a version that would pass it is skipped.
    #[serde(default = "default_artifact_max_run")]
    pub max_run_bytes: u64,
    /// Files of this size and more are uploaded in parts, as W&B's SDK
    /// uploads them (2 GiB, its `S3MinMultiUploadSize`).
    #[serde(default = "default_multipart_threshold")]
    pub multipart_threshold_bytes: u64,
    /// The size of those parts (100 MiB, the SDK's; W&B's storage takes
    /// parts of 5 MiB and more, smaller ones only suit a test server).
    #[serde(default = "default_multipart_part")]
    pub multipart_part_bytes: u64,
}

impl Default for ArtifactsConfig {
    fn default() -> Self {
        ArtifactsConfig {
            enabled: true,
            runs_dir: default_artifact_runs_dir(),
            paths: default_artifact_paths(),
            settle_ms: default_artifact_settle(),
            poll_interval_ms: default_artifact_poll(),
            max_file_bytes: default_artifact_max_file(),
            max_run_bytes: default_artifact_max_run(),
            multipart_threshold_bytes: default_multipart_threshold(),
            multipart_part_bytes: default_multipart_part(),
        }
    }
}

fn default_artifact_runs_dir() -> PathBuf {
    PathBuf::from("var/trainer/runs")
}
fn default_artifact_paths() -> Vec<String> {
    [
        "checkpoints/**",
        "**/*.cleanrl_model",
        "**/*.pth",
        "**/*.pt",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}
fn default_artifact_settle() -> u64 {
    10_000
}
fn default_artifact_poll() -> u64 {
    5_000
}
/// 10 GiB: far above RL checkpoints, low enough that one runaway file
/// does not take the run's whole budget (`max_run_bytes`).
fn default_artifact_max_file() -> u64 {
    10 << 30
}
fn default_multipart_threshold() -> u64 {
    2 << 30
}
fn default_multipart_part() -> u64 {
    100 << 20
}
fn default_artifact_max_run() -> u64 {
    20 << 30
}

/// Where the journal lives and how much it may hold.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    pub path: PathBuf,
    pub max_bytes: u64,
    /// sled's page cache: what the journal may keep in memory.
    #[serde(default = "default_cache_bytes")]
    pub cache_bytes: u64,
}

fn default_cache_bytes() -> u64 {
    crate::journal::DEFAULT_CACHE_BYTES
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: PathBuf::from("var/shipper"),
            max_bytes: 1 << 30,
            cache_bytes: default_cache_bytes(),
        }
    }
}

/// How files are followed, whatever their kind.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TailConfig {
    /// The first form of the configuration: glob patterns of line files.
    /// Still read, as one `lines` source named "tail".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sources: Option<Vec<String>>,
    #[serde(default = "yes")]
    pub follow_rotated: bool,
    #[serde(default = "default_max_line")]
    pub max_line_bytes: usize,
    #[serde(default = "default_poll")]
    pub poll_interval_ms: u64,
    /// How often every source is listed again while file-system events
    /// cover every root (between such scans, events drive targeted ones).
    #[serde(default = "default_rescan")]
    pub rescan_interval_ms: u64,
    #[serde(default = "default_batch")]
    pub read_batch_bytes: usize,
}

fn yes() -> bool {
    true
}
fn default_max_line() -> usize {
    1 << 20
}
fn default_poll() -> u64 {
    1000
}
fn default_rescan() -> u64 {
    60_000
}
fn default_batch() -> usize {
    1 << 20
}

/// The sources of the embedded default (`config/mosaic-shipper.toml`),
/// for a configuration that names none: one list, in the documented file.
fn default_sources() -> Vec<SourceConfig> {
    /// The embedded default's `[[sources]]`, its other keys ignored.
    #[derive(Deserialize)]
    struct SourcesOnly {
        sources: Vec<SourceConfig>,
    }
    toml::from_str::<SourcesOnly>(EMBEDDED_DEFAULT)
        .expect("the embedded default's sources parse")
        .sources
}

impl Default for TailConfig {
    fn default() -> Self {
        TailConfig {
            sources: None,
            follow_rotated: true,
            max_line_bytes: default_max_line(),
            poll_interval_ms: default_poll(),
            rescan_interval_ms: default_rescan(),
            read_batch_bytes: default_batch(),
        }
    }
}

/// One source: files of one kind, found by glob patterns.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Names the source in `status`, `explain` and log lines.
    pub name: String,
    pub kind: SourceKind,
    /// Glob patterns (`**` crosses directories).
    pub paths: Vec<String>,
    /// Glob patterns of files not to read although `paths` match them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// `tfevents` and `document` sources: the run id is taken from the
    /// file's path with this regex (named group `run_id`). Line sources
    /// say it per rule. Default `runs/(?P<run_id>[^/]+)/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id_from_path: Option<String>,
    /// `lines` sources: glob patterns of the files whose lines are the
    /// worker's console output (its stdout and stderr), shipped as such
    /// to W&B's Logs tab besides whatever rows they make. A file whose
    /// name has `stderr` in it is the worker's stderr, any other stdout.
    /// Rotated siblings (`x.log.1`) count as their file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub console: Vec<String>,
}

/// How a source's files are cut into records; the journal owns the type,
/// since every checkpoint stores it.
pub use crate::journal::SourceKind;

/// The ordered list of extraction rules.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExtractConfig {
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
}

/// One extraction rule, as written in TOML; compiled by `extract::Rule`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: String,
    /// What the rule reads: JSON objects (the default) or text lines.
    #[serde(default)]
    pub input: RuleInput,
    /// What the matched records are: metrics at a step (the default), the
    /// run's configuration, or the run's end.
    #[serde(default)]
    pub kind: RuleKind,
    /// JSON: every key must be present with this value.
    #[serde(default, rename = "match")]
    pub match_fields: BTreeMap<String, toml::Value>,
    /// JSON: every dotted path must be present, whatever its value.
    #[serde(default)]
    pub present: Vec<String>,
    /// Text: a regex the line must match; its named groups `wall_time`
    /// and `run_id`, when they take part, give those parts of the row.
    #[serde(default)]
    pub pattern: Option<String>,
    #[serde(default)]
    pub run_id: Vec<String>,
    #[serde(default)]
    pub run_id_from_path: Option<String>,
    #[serde(default)]
    pub step: Vec<String>,
    #[serde(default)]
    pub wall_time: Vec<String>,
    /// How a timestamp without a UTC offset is read.
    #[serde(default)]
    pub naive_time: NaiveTime,
    /// `kind = "metrics"`: the metric fields (at least one). JSON:
    /// `field = "*"` takes the whole record.
    #[serde(default)]
    pub metrics: Vec<MetricConfig>,
    /// JSON metrics: dotted paths left out of the metrics (with `*`).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// `kind = "config"`: dotted path of the configuration object. On a
    /// JSON metrics rule: the configuration carried in each record, made
    /// the run's configuration once (not metrics).
    #[serde(default)]
    pub config: Option<String>,
    /// `kind = "finished"`: fields tried in order for the exit code
    /// (absent: `default_exit_code`).
    #[serde(default)]
    pub exit_code: Vec<String>,
    /// `kind = "finished"`: the exit code when no `exit_code` field has one.
    #[serde(default)]
    pub default_exit_code: i32,
    /// The worker writes these points to its own TensorBoard event files
    /// too (CleanRL's text lines): for a run whose worker-written event
    /// files are read, the event files' copy is kept and this rule's rows
    /// are dropped (counted as `duplicates`), so each point arrives once.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub yields_to_tensorboard: bool,
}

/// What a rule reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleInput {
    /// Lines that are JSON objects.
    #[default]
    Json,
    /// Lines that are not: `key=value` and `Name: value` pairs.
    Text,
    /// Whole JSON documents, from `document` sources.
    Document,
}

/// How a rule reads a timestamp without a UTC offset: Python's logging
/// (`asctime`) and `datetime.now().isoformat()` write local time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NaiveTime {
    #[default]
    Utc,
    Local,
}

/// What a rule's records are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleKind {
    #[default]
    Metrics,
    Config,
    Finished,
}

/// A metric selector: a dotted field path and the tag it is written under.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricConfig {
    pub field: String,
    #[serde(default)]
    pub tag: Option<String>,
}

/// The sinks; each has its own durable cursor in the journal.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SinksConfig {
    #[serde(default)]
    pub jsonl: JsonlSinkConfig,
    #[serde(default)]
    pub tensorboard: TensorBoardSinkConfig,
    // --- wandb sink (issue 4) ---
    #[serde(default)]
    pub wandb: WandbSinkConfig,
    // --- end wandb sink ---
}

/// The `jsonl` sink: delivered rows as JSON lines, one file per run.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JsonlSinkConfig {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default = "default_jsonl_path")]
    pub path: String,
    /// Rows are appended at once; this is how often they are fsynced and
    /// acknowledged.
    #[serde(default = "default_file_flush")]
    pub flush_interval_ms: u64,
}

fn default_jsonl_path() -> String {
    "var/trainer/runs/{run_id}/shipper/rows.jsonl".into()
}

/// The file sinks' durability interval: rows reach their files (and
/// readers) at once, and each file written to costs one fsync per
/// interval, which is most of what a hundred runs written at once cost.
fn default_file_flush() -> u64 {
    5000
}

impl Default for JsonlSinkConfig {
    fn default() -> Self {
        JsonlSinkConfig {
            enabled: false,
            path: default_jsonl_path(),
            flush_interval_ms: default_file_flush(),
        }
    }
}

/// The `tensorboard` sink: one scalar event file per run, read live by
/// `tensorboard --logdir`. On unless switched off.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TensorBoardSinkConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "default_tensorboard_dir")]
    pub dir: String,
    #[serde(default = "default_file_flush")]
    pub flush_interval_ms: u64,
    #[serde(default = "default_tensorboard_open_files")]
    pub max_open_files: usize,
}

fn default_tensorboard_dir() -> String {
    "var/trainer/runs/{run_id}/tensorboard".into()
}
fn default_tensorboard_open_files() -> usize {
    64
}

impl Default for TensorBoardSinkConfig {
    fn default() -> Self {
        TensorBoardSinkConfig {
            enabled: true,
            dir: default_tensorboard_dir(),
            flush_interval_ms: default_file_flush(),
            max_open_files: default_tensorboard_open_files(),
        }
    }
}

// --- wandb sink (issue 4) ---

/// `enabled` of a sink that can also decide by itself: `true`, `false`
/// or `"auto"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Toggle {
    On,
    Off,
    /// The W&B sink: on when an API key is found, so that a fresh machine
    /// without an account (or network) runs without it.
    #[default]
    Auto,
}

impl Serialize for Toggle {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Toggle::On => s.serialize_bool(true),
            Toggle::Off => s.serialize_bool(false),
            Toggle::Auto => s.serialize_str("auto"),
        }
    }
}

impl<'de> Deserialize<'de> for Toggle {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            B(bool),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::B(true) => Ok(Toggle::On),
            Raw::B(false) => Ok(Toggle::Off),
            Raw::S(s) if s == "auto" => Ok(Toggle::Auto),
            Raw::S(s) => Err(serde::de::Error::custom(format!(
                "expected true, false or \"auto\", found {s:?}"
            ))),
        }
    }
}

/// The `wandb` sink: rows to a W&B server over file_stream. The API key
/// is never part of the configuration (WANDB_API_KEY or ~/.netrc); the
/// proxy URL may hold credentials, so `Debug` and `Serialize` mask it.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WandbSinkConfig {
    #[serde(default)]
    pub enabled: Toggle,
    /// Default https://api.wandb.ai; WANDB_BASE_URL overrides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity: Option<String>,
    /// May carry credentials: shown masked by `check-config`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_masked_url"
    )]
    pub proxy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    #[serde(default = "default_wandb_rows")]
    pub rows_per_request: usize,
    #[serde(default = "default_wandb_flush")]
    pub flush_interval_ms: u64,
    #[serde(default = "default_wandb_idle")]
    pub idle_finish_secs: u64,
    /// Daemon mode: how long a run's worker process (found holding the
    /// run's files, `sysmetrics::liveness`) must be gone, with no
    /// run-finished record read meanwhile, before its run ends failed;
    /// 0 turns the watch off.
    #[serde(default = "default_wandb_worker_gone")]
    pub worker_gone_secs: u64,
    #[serde(default = "default_wandb_timeout")]
    pub timeout_ms: u64,
    #[serde(default = "default_wandb_retry_initial")]
    pub retry_initial_ms: u64,
    #[serde(default = "default_wandb_retry_max")]
    pub retry_max_ms: u64,
    #[serde(default = "default_wandb_give_up")]
    pub give_up_secs: u64,
    #[serde(default = "yes")]
    pub compress: bool,
    // --- wandb offline sink (issue 5) ---
    /// "online" (default); "offline": write W&B offline run directories
    /// under `offline_dir` instead of uploading; "stage": hold rows in the
    /// journal for `sync`/`export`. WANDB_MODE overrides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Where offline run directories go; default `var/wandb`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offline_dir: Option<PathBuf>,
    // --- end wandb offline sink ---
    /// A run whose worker tracks W&B itself (its own SDK run under
    /// `worker_dir`): "skip" (default) leaves it to the worker, "ship"
    /// ships it too.
    #[serde(default = "default_when_worker_tracks")]
    pub when_worker_tracks: String,
    /// Where a worker's own W&B SDK writes (its `WANDB_DIR`), with
    /// `{run_id}`; "" looks nowhere.
    #[serde(default = "default_worker_dir")]
    pub worker_dir: String,
}

/// What to do with a run whose worker tracks W&B itself
/// (`sinks.wandb.when_worker_tracks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhenWorkerTracks {
    /// Leave the run to the worker's own W&B run.
    #[default]
    Skip,
    /// Ship it as any other run (two W&B runs of the same metrics).
    Ship,
}

impl WhenWorkerTracks {
    /// The configuration's word; `None` for anything else.
    pub fn parse(s: &str) -> Option<WhenWorkerTracks> {
        match s {
            "skip" => Some(WhenWorkerTracks::Skip),
            "ship" => Some(WhenWorkerTracks::Ship),
            _ => None,
        }
    }
}

fn default_when_worker_tracks() -> String {
    "skip".into()
}
fn default_worker_dir() -> String {
    "var/trainer/runs/{run_id}/wandb".into()
}

fn serialize_masked_url<S: serde::Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(u) => s.serialize_str(&crate::util::mask_url(u)),
        None => s.serialize_none(),
    }
}

fn default_wandb_rows() -> usize {
    1000
}
fn default_wandb_flush() -> u64 {
    15_000
}
fn default_wandb_idle() -> u64 {
    1800
}
fn default_wandb_worker_gone() -> u64 {
    10
}
fn default_wandb_timeout() -> u64 {
    60_000
}
fn default_wandb_retry_initial() -> u64 {
    2_000
}
fn default_wandb_retry_max() -> u64 {
    60_000
}
fn default_wandb_give_up() -> u64 {
    300
}

impl std::fmt::Debug for WandbSinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let masked = self.proxy.as_deref().map(crate::util::mask_url);
        f.debug_struct("WandbSinkConfig")
            .field("enabled", &self.enabled)
            .field("base_url", &self.base_url)
            .field("project", &self.project)
            .field("entity", &self.entity)
            .field("proxy", &masked)
            .field("ca_file", &self.ca_file)
            .field("rows_per_request", &self.rows_per_request)
            .field("flush_interval_ms", &self.flush_interval_ms)
            .field("idle_finish_secs", &self.idle_finish_secs)
            .field("worker_gone_secs", &self.worker_gone_secs)
            .field("timeout_ms", &self.timeout_ms)
            .field("retry_initial_ms", &self.retry_initial_ms)
            .field("retry_max_ms", &self.retry_max_ms)
            .field("give_up_secs", &self.give_up_secs)
            .field("compress", &self.compress)
            .field("when_worker_tracks", &self.when_worker_tracks)
            .field("worker_dir", &self.worker_dir)
            .finish()
    }
}

impl Default for WandbSinkConfig {
    fn default() -> Self {
        WandbSinkConfig {
            enabled: Toggle::Auto,
            base_url: None,
            project: None,
            entity: None,
            proxy: None,
            ca_file: None,
            rows_per_request: default_wandb_rows(),
            flush_interval_ms: default_wandb_flush(),
            idle_finish_secs: default_wandb_idle(),
            worker_gone_secs: default_wandb_worker_gone(),
            timeout_ms: default_wandb_timeout(),
            retry_initial_ms: default_wandb_retry_initial(),
            retry_max_ms: default_wandb_retry_max(),
            give_up_secs: default_wandb_give_up(),
            compress: true,
            mode: None,        // wandb offline sink (issue 5)
            offline_dir: None, // wandb offline sink (issue 5)
            when_worker_tracks: default_when_worker_tracks(),
            worker_dir: default_worker_dir(),
        }
    }
}

impl Config {
    fn validate_wandb(&self) -> Result<(), ConfigError> {
        let w = &self.sinks.wandb;
        if w.rows_per_request == 0 {
            return Err(self.invalid("sinks.wandb.rows_per_request must be at least 1"));
        }
        if w.timeout_ms < 100 {
            return Err(self.invalid("sinks.wandb.timeout_ms must be at least 100"));
        }
        if WhenWorkerTracks::parse(&w.when_worker_tracks).is_none() {
            return Err(self.invalid(format!(
                "sinks.wandb.when_worker_tracks must be \"skip\" or \"ship\", not {:?}",
                w.when_worker_tracks
            )));
        }
        if w.retry_initial_ms == 0 || w.retry_max_ms < w.retry_initial_ms {
            return Err(self.invalid(
                "sinks.wandb: retry_initial_ms must be positive and at most retry_max_ms",
            ));
        }
        Ok(())
    }
}
// --- end wandb sink ---

/// The agent's own logs.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default = "default_level")]
    pub level: String,
    #[serde(default)]
    pub dir: Option<PathBuf>,
    #[serde(default = "default_max_files")]
    pub max_files: usize,
    /// Cap on the log files' total size (bytes); the oldest go first.
    #[serde(default = "default_log_max_bytes")]
    pub max_bytes: u64,
}

fn default_level() -> String {
    "info".into()
}
fn default_max_files() -> usize {
    7
}
fn default_log_max_bytes() -> u64 {
    64 << 20
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: default_level(),
            dir: None,
            max_files: default_max_files(),
            max_bytes: default_log_max_bytes(),
        }
    }
}

/// The HTTP endpoint for Prometheus and probes (`src/metrics/`). Off by
/// default: an agent beside the workers should open no port nobody asked
/// for, and when asked, only on loopback unless the address says otherwise.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    #[serde(default)]
    pub enabled: bool,
    /// `host:port` to listen on (an IP address, not a name).
    #[serde(default = "default_metrics_listen")]
    pub listen: String,
    /// `/ready` fails when a sink with rows to deliver has not delivered
    /// any for this long.
    #[serde(default = "default_metrics_stale")]
    pub stale_after_secs: u64,
}

fn default_metrics_listen() -> String {
    "127.0.0.1:9598".into()
}
fn default_metrics_stale() -> u64 {
    300
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: false,
            listen: default_metrics_listen(),
            stale_after_secs: default_metrics_stale(),
        }
    }
}

impl MetricsConfig {
    /// The listen address; validated with the configuration.
    pub fn addr(&self) -> Result<std::net::SocketAddr, String> {
        self.listen.parse().map_err(|e| {
            format!(
                "metrics.listen {:?} is not an IP address and port (e.g. \"127.0.0.1:9598\"): {e}",
                self.listen
            )
        })
    }
}

impl Config {
    /// Loads the configuration the CLI asked for: `--config`, else
    /// `$MOSAIC_SHIPPER_CONFIG`, else the embedded default.
    pub fn load(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        let env_path = std::env::var_os(CONFIG_ENV).filter(|v| !v.is_empty());
        match explicit
            .map(Path::to_path_buf)
            .or_else(|| env_path.map(PathBuf::from))
        {
            Some(path) => {
                let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                Config::parse(&text, &path.display().to_string())
            }
            None => Config::parse(EMBEDDED_DEFAULT, "<embedded default>"),
        }
    }

    /// Parses and validates TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        config.origin = origin.to_string();
        config.validate()?;
        Ok(config)
    }

    /// An `Invalid` error naming this configuration's origin, for the
    /// rooms that check their own section.
    pub fn invalid(&self, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            origin: self.origin.clone(),
            message: message.into(),
        }
    }

    /// Checks what serde cannot: globs, regexes, ranges and paths.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if matches!(&self.tail.sources, Some(p) if p.is_empty()) {
            return Err(self.invalid("tail.sources is empty: name at least one glob pattern"));
        }
        let sources = self.sources();
        if sources.is_empty() {
            return Err(self.invalid("sources is empty: name at least one [[sources]] table"));
        }
        let mut names = std::collections::BTreeSet::new();
        for source in &sources {
            if !names.insert(source.name.as_str()) {
                return Err(
                    self.invalid(format!("sources: the name {:?} is used twice", source.name))
                );
            }
            if source.paths.is_empty() {
                return Err(
                    self.invalid(format!("sources {:?}: paths names no pattern", source.name))
                );
            }
            if !source.console.is_empty() && source.kind != SourceKind::Lines {
                return Err(self.invalid(format!(
                    "sources {:?}: console is for lines sources only",
                    source.name
                )));
            }
            for pattern in source
                .paths
                .iter()
                .chain(&source.exclude)
                .chain(&source.console)
            {
                glob::Pattern::new(pattern).map_err(|e| {
                    self.invalid(format!(
                        "sources {:?}: bad glob {pattern:?}: {e}",
                        source.name
                    ))
                })?;
            }
        }
        if self.tail.max_line_bytes < 64 {
            return Err(self.invalid("tail.max_line_bytes must be at least 64"));
        }
        if self.tail.read_batch_bytes < 4096 {
            return Err(self.invalid("tail.read_batch_bytes must be at least 4096"));
        }
        if self.artifacts.multipart_threshold_bytes == 0 || self.artifacts.multipart_part_bytes == 0
        {
            return Err(self.invalid(
                "artifacts.multipart_threshold_bytes and artifacts.multipart_part_bytes must be at least 1",
            ));
        }
        if self.tail.poll_interval_ms == 0 || self.tail.poll_interval_ms > 60_000 {
            return Err(self.invalid("tail.poll_interval_ms must be between 1 and 60000"));
        }
        if self.tail.rescan_interval_ms < self.tail.poll_interval_ms
            || self.tail.rescan_interval_ms > 3_600_000
        {
            return Err(self.invalid(
                "tail.rescan_interval_ms must be at least tail.poll_interval_ms and at most 3600000",
            ));
        }
        if self.store.max_bytes < 1 << 20 {
            return Err(self.invalid("store.max_bytes must be at least 1048576 (1 MiB)"));
        }
        if self.store.cache_bytes < 1 << 20 {
            return Err(self.invalid("store.cache_bytes must be at least 1048576 (1 MiB)"));
        }
        if self.extract.rules.is_empty() {
            return Err(
                self.invalid("extract.rules is empty: without a rule no line becomes a row")
            );
        }

        if self.sinks.jsonl.enabled && !self.sinks.jsonl.path.contains("{run_id}") {
            return Err(
                self.invalid("sinks.jsonl.path must contain {run_id}: each run gets its own file")
            );
        }
        let tb = &self.sinks.tensorboard;
        if tb.enabled && !tb.dir.contains("{run_id}") {
            return Err(self.invalid(
                "sinks.tensorboard.dir must contain {run_id}: each run gets its own directory",
            ));
        }
        for (sink, ms) in [
            ("jsonl", self.sinks.jsonl.flush_interval_ms),
            ("tensorboard", tb.flush_interval_ms),
        ] {
            if ms == 0 || ms > 600_000 {
                return Err(self.invalid(format!(
                    "sinks.{sink}.flush_interval_ms must be between 1 and 600000"
                )));
            }
        }
        if tb.max_open_files == 0 {
            return Err(self.invalid("sinks.tensorboard.max_open_files must be at least 1"));
        }
        if let Err(e) = crate::logging::parse_filter(&self.log.level) {
            return Err(self.invalid(format!("log.level {:?}: {e}", self.log.level)));
        }
        self.init.validate().map_err(|m| self.invalid(m))?;
        self.metrics.addr().map_err(|m| self.invalid(m))?;
        let every = self.system_metrics.interval_secs;
        if !(every.is_finite() && every >= 0.1) {
            return Err(self.invalid(format!(
                "system_metrics.interval_secs must be at least 0.1 (got {every})"
            )));
        }
        if self.metrics.stale_after_secs == 0 {
            return Err(self.invalid("metrics.stale_after_secs must be at least 1"));
        }
        self.check_store_path()?;
        self.validate_wandb()?; // wandb sink (issue 4)
        Ok(())
    }

    /// The store must be creatable: an existing non-directory or an
    /// unwritable parent is reported now rather than at the first commit.
    fn check_store_path(&self) -> Result<(), ConfigError> {
        let path = &self.store.path;
        if path.exists() && !path.is_dir() {
            return Err(self.invalid(format!(
                "store.path {} exists and is not a directory",
                path.display()
            )));
        }
        let mut ancestor = path.as_path();
        while !ancestor.exists() {
            match ancestor.parent() {
                Some(p) if !p.as_os_str().is_empty() => ancestor = p,
                _ => return Ok(()),
            }
        }
        let meta = std::fs::metadata(ancestor).map_err(|e| {
            self.invalid(format!(
                "store.path {}: cannot inspect {}: {e}",
                path.display(),
                ancestor.display()
            ))
        })?;
        if !meta.is_dir() {
            return Err(self.invalid(format!(
                "store.path {}: {} is not a directory",
                path.display(),
                ancestor.display()
            )));
        }
        Ok(())
    }

    /// The sources in effect: the `[[sources]]` tables, plus a `lines`
    /// source "tail" for the older `tail.sources` list; with neither, the
    /// sources of the embedded default.
    pub fn sources(&self) -> Vec<SourceConfig> {
        let mut out = self.sources.clone().unwrap_or_default();
        if let Some(paths) = &self.tail.sources {
            out.push(SourceConfig {
                name: "tail".into(),
                kind: SourceKind::Lines,
                paths: paths.clone(),
                exclude: Vec::new(),
                run_id_from_path: None,
                console: Vec::new(),
            });
        }
        if self.sources.is_none() && self.tail.sources.is_none() {
            out = default_sources();
        }
        out
    }

    /// Directory of the agent's own log files.
    pub fn log_dir(&self) -> PathBuf {
        self.log
            .dir
            .clone()
            .unwrap_or_else(|| self.store.path.join("logs"))
    }
}

/// The `[system_metrics]` section: samples of the workers' processes and
/// host for W&B's System tab (`src/sysmetrics/`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SystemMetricsConfig {
    /// `"auto"`: in init mode (the agent knows its worker); `true`: in
    /// the daemon too, for every worker it can find; `false`: never.
    #[serde(default)]
    pub enabled: SystemMetricsEnabled,
    /// Seconds between samples; the W&B SDK's default.
    #[serde(default = "default_system_interval")]
    pub interval_secs: f64,
    /// `nvidia-smi` to read GPUs with; empty: the one on `PATH`, if any.
    #[serde(default)]
    pub nvidia_smi: String,
}

/// When system metrics are sampled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SystemMetricsEnabled {
    /// In init mode only.
    #[default]
    Auto,
    /// In init mode and the daemon.
    On,
    Off,
}

impl Serialize for SystemMetricsEnabled {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            SystemMetricsEnabled::Auto => s.serialize_str("auto"),
            SystemMetricsEnabled::On => s.serialize_bool(true),
            SystemMetricsEnabled::Off => s.serialize_bool(false),
        }
    }
}

impl<'de> Deserialize<'de> for SystemMetricsEnabled {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bool(true) => Ok(SystemMetricsEnabled::On),
            Raw::Bool(false) => Ok(SystemMetricsEnabled::Off),
            Raw::Text(t) if t == "auto" => Ok(SystemMetricsEnabled::Auto),
            Raw::Text(t) => Err(serde::de::Error::custom(format!(
                "system_metrics.enabled: {t:?}: expected true, false or \"auto\""
            ))),
        }
    }
}

/// The SDK's default sampling interval (`x_stats_sampling_interval`).
pub const DEFAULT_SYSTEM_INTERVAL_SECS: f64 = 15.0;

fn default_system_interval() -> f64 {
    DEFAULT_SYSTEM_INTERVAL_SECS
}

impl Default for SystemMetricsConfig {
    fn default() -> SystemMetricsConfig {
        SystemMetricsConfig {
            enabled: SystemMetricsEnabled::Auto,
            interval_secs: default_system_interval(),
            nvidia_smi: String::new(),
        }
    }
}

/// The `[init]` section: how `run -- CMD` supervises CMD and finishes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InitConfig {
    /// After CMD exits: longest time spent reading the logs to their end
    /// and waiting for the sinks to acknowledge every row.
    #[serde(default = "default_drain_deadline")]
    pub drain_deadline_secs: u64,
    /// Where forwarded signals go.
    #[serde(default)]
    pub signal_target: SignalTarget,
    /// Path template of the copies of CMD's output, with `{stream}`
    /// (`stdout`, `stderr`, or `console` for a pty) and `{run_id}`; empty:
    /// no pass-through and no copy (CMD inherits the agent's streams).
    #[serde(default = "default_console")]
    pub console: String,
    /// The run id for `{run_id}`; `$MOSAIC_RUN_ID` wins. Neither set: the
    /// `run_id` of CMD's first JSON line on stdout that has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// Longest wait for that JSON line before the copies go to the
    /// fallback directory `<store.path>/console/<time>-<pid>/`.
    #[serde(default = "default_run_id_wait")]
    pub run_id_wait_secs: u64,
}

/// Which processes a forwarded signal reaches (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SignalTarget {
    /// CMD's whole process group.
    #[default]
    Group,
    /// CMD's process only.
    Child,
}

/// Longest accepted drain deadline: a day catches a value meant in
/// milliseconds without limiting any real use.
const MAX_DRAIN_DEADLINE_SECS: u64 = 86_400;

fn default_drain_deadline() -> u64 {
    30
}

fn default_console() -> String {
    "var/trainer/runs/{run_id}/logs/init.{stream}.log".into()
}

fn default_run_id_wait() -> u64 {
    60
}

impl Default for InitConfig {
    fn default() -> Self {
        InitConfig {
            drain_deadline_secs: default_drain_deadline(),
            signal_target: SignalTarget::default(),
            console: default_console(),
            run_id: None,
            run_id_wait_secs: default_run_id_wait(),
        }
    }
}

impl InitConfig {
    /// What serde cannot check; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.drain_deadline_secs > MAX_DRAIN_DEADLINE_SECS {
            return Err(format!(
                "init.drain_deadline_secs must be at most {MAX_DRAIN_DEADLINE_SECS} (it is in seconds)"
            ));
        }
        if self.run_id_wait_secs > MAX_DRAIN_DEADLINE_SECS {
            return Err(format!(
                "init.run_id_wait_secs must be at most {MAX_DRAIN_DEADLINE_SECS} (it is in seconds)"
            ));
        }
        if !self.console.is_empty() && !self.console.contains("{stream}") {
            return Err(
                "init.console must contain {stream} (stdout and stderr go to different files), or be \"\" to turn the copy off"
                    .into(),
            );
        }
        if let Some(id) = &self.run_id {
            if !valid_run_id(id) {
                return Err(format!(
                    "init.run_id {id:?} cannot name a directory (1 to 128 of A-Z a-z 0-9 . _ -, not starting with a dot)"
                ));
            }
        }
        Ok(())
    }

    pub fn drain_deadline(&self) -> Duration {
        Duration::from_secs(self.drain_deadline_secs)
    }
}

/// The longest run id `valid_run_id` accepts.
pub const MAX_RUN_ID: usize = 128;

/// Whether `id` can name a directory: 1 to 128 of `A-Z a-z 0-9 . _ -`,
/// not starting with a dot (so never `.` or `..`). MOSAIC's ULIDs and its
/// custom-script ids (`cleanrl-ppo-20260201-143022`) pass.
pub fn valid_run_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_RUN_ID
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_parses_and_enables_jsonl_and_tensorboard() {
        let c = Config::parse(EMBEDDED_DEFAULT, "embedded").unwrap();
        assert_eq!(c.store.path, PathBuf::from("var/shipper"));
        assert_eq!(c.store.max_bytes, 1 << 30);
        // (wandb is "auto": on only where an API key is found.)
        assert_eq!(c.enabled_sinks()[..2], ["jsonl", "tensorboard"]);
        assert_eq!(
            c.sinks.tensorboard.dir,
            "var/trainer/runs/{run_id}/tensorboard"
        );
        assert_eq!(c.sinks.tensorboard.flush_interval_ms, 5000);
        assert_eq!(c.sinks.jsonl.flush_interval_ms, 5000);
        assert_eq!(c.extract.rules.len(), 11);
    }

    #[test]
    fn wandb_proxy_credentials_are_masked() {
        let text = EMBEDDED_DEFAULT.replace(
            "enabled = \"auto\"",
            "enabled = false\nproxy = \"http://u:s3cr3t@proxy:3128\"",
        );
        let c = Config::parse(&text, "t.toml").unwrap();
        assert!(!c.render().contains("s3cr3t"), "{}", c.render());
        assert!(!format!("{c:?}").contains("s3cr3t"));
        assert!(c.render().contains("***@proxy:3128"));
        let bad = EMBEDDED_DEFAULT.replace("enabled = \"auto\"", "enabled = \"sometimes\"");
        let err = Config::parse(&bad, "t.toml").unwrap_err().to_string();
        assert!(err.contains("sometimes"), "{err}");
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let text = format!("{EMBEDDED_DEFAULT}\n[tail2]\nx = 1\n");
        let err = Config::parse(&text, "t.toml").unwrap_err().to_string();
        assert!(err.contains("tail2"), "{err}");
        let text = EMBEDDED_DEFAULT.replace("follow_rotated", "follow_rotatd");
        let err = Config::parse(&text, "t.toml").unwrap_err().to_string();
        assert!(err.contains("follow_rotatd"), "{err}");
    }

    #[test]
    fn tensorboard_is_on_unless_switched_off_and_its_dir_needs_the_run_id() {
        let text = EMBEDDED_DEFAULT.replace("[sinks.tensorboard]", "[sinks.tensorboard_was]");
        assert!(
            Config::parse(&text, "t.toml").is_err(),
            "the section is in the default"
        );
        let start = EMBEDDED_DEFAULT.find("[sinks.tensorboard]").unwrap();
        let end = EMBEDDED_DEFAULT[start..].find("\n[log]").unwrap() + start;
        let without = format!("{}{}", &EMBEDDED_DEFAULT[..start], &EMBEDDED_DEFAULT[end..]);
        let c = Config::parse(&without, "t.toml").unwrap();
        assert!(c.sinks.tensorboard.enabled, "on by default");
        let off = EMBEDDED_DEFAULT.replace("enabled = true\ndir", "enabled = false\ndir");
        let c = Config::parse(&off, "t.toml").unwrap();
        assert_eq!(c.enabled_sinks(), vec!["jsonl"]);
        let bad = EMBEDDED_DEFAULT.replace("runs/{run_id}/tensorboard", "runs/tensorboard");
        let err = Config::parse(&bad, "t.toml").unwrap_err().to_string();
        assert!(err.contains("sinks.tensorboard.dir"), "{err}");
    }

    #[test]
    fn a_staged_wandb_cursor_holds_rows_but_is_not_waited_for() {
        let text = EMBEDDED_DEFAULT.replace("# mode = \"online\"", "mode = \"stage\"");
        let c = Config::parse(&text, "t.toml").unwrap();
        if std::env::var_os("WANDB_MODE").is_none() {
            assert_eq!(c.enabled_sinks(), ["jsonl", "tensorboard", "wandb"]);
            assert_eq!(c.delivering_sinks(), ["jsonl", "tensorboard"]);
        }
    }

    #[test]
    fn metrics_are_off_by_default_and_listen_on_loopback() {
        let c = Config::parse(EMBEDDED_DEFAULT, "embedded").unwrap();
        assert!(!c.metrics.enabled);
        assert!(c.metrics.addr().unwrap().ip().is_loopback());
        let on = EMBEDDED_DEFAULT.replace(
            "enabled = false\n# host:port",
            "enabled = true\n# host:port",
        );
        assert!(Config::parse(&on, "t.toml").unwrap().metrics.enabled);
        let bad = EMBEDDED_DEFAULT.replace("\"127.0.0.1:9598\"", "\"localhost:9598\"");
        let err = Config::parse(&bad, "t.toml").unwrap_err().to_string();
        assert!(
            err.contains("metrics.listen") && err.contains("localhost:9598"),
            "{err}"
        );
    }

    #[test]
    fn bad_glob_is_an_error_naming_it() {
        let text = EMBEDDED_DEFAULT.replace("\"var/trainer/runs/*/logs/*.jsonl\"", "\"a/[b\"");
        let err = Config::parse(&text, "t.toml").unwrap_err().to_string();
        assert!(err.contains("a/[b"), "{err}");
    }
}
