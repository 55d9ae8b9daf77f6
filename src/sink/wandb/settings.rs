//! The effective W&B settings: configuration plus environment, resolved
//! once, with the reasons `check-config` prints.
//!
//! Environment variables win over the configuration file (as everywhere in
//! W&B tooling): `WANDB_BASE_URL`, `WANDB_PROJECT`, `WANDB_ENTITY`,
//! `WANDB_API_KEY`, `WANDB_MODE`, `WANDB_DISABLED`, proxy variables (see
//! proxy.rs). The key itself is never stored in the configuration.

use std::time::Duration;

use super::auth::{self, ApiKey, KeySource};
use super::http::HttpOptions;
use super::proxy::{self, mask_url, ProxyChoice, Target};
use crate::config::{Toggle, WandbSinkConfig};

/// The public W&B API. (wandb 0.31.0 defaults to the Forge proxy
/// `api.forge.coreweave.com` in front of it; api.wandb.ai is the W&B API
/// host itself; docs/wandb-protocol.md section 1.2.)
pub const DEFAULT_BASE_URL: &str = "https://api.wandb.ai";

/// Whether the sink runs, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Activity {
    On(String),
    Off(String),
    /// Switched on explicitly but unusable (e.g. no key): a config error.
    Broken(String),
    /// wandb offline sink (issue 5): staging offline run directories.
    Offline(String),
    /// Air-gapped staging in the journal: rows are held for the `wandb`
    /// cursor, nothing connects; `sync` uploads them on a connected
    /// machine (after `export`/`import`, or here once connected).
    Staged(String),
}

/// Everything the sink needs to run.
#[derive(Debug, Clone)]
pub struct WandbSettings {
    pub activity: Activity,
    pub base_url: String,
    pub project: String,
    pub entity: Option<String>,
    pub key: Option<ApiKey>,
    pub key_source: KeySource,
    pub http: HttpOptions,
    pub rows_per_request: usize,
    pub flush_interval: Duration,
    /// An open run without rows for this long stops heartbeating (W&B then
    /// shows it crashed) until rows arrive again; zero: never.
    pub idle_finish: Duration,
    /// How often an open run is kept alive with an empty file_stream
    /// request when nothing else was sent: core's 30 s
    /// (`defaultHeartbeatInterval`); shorter only in tests.
    pub heartbeat: Duration,
    /// Whether open runs of the saved state that get no rows are announced
    /// again and heartbeated after a start: the agent, which follows their
    /// workers, yes; `sync`, which uploads what is staged and leaves, no.
    pub revive_open_runs: bool,
    pub compress: bool,
    /// wandb offline sink (issue 5): where offline run directories go.
    pub offline_dir: std::path::PathBuf,
    /// Runs whose worker tracks W&B itself.
    pub tracking: super::worker_tracks::WorkerTracking,
}

fn env_flag(v: Option<String>) -> bool {
    v.is_some_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    })
}

/// Resolves `cfg` against the environment read through `env`.
pub fn resolve(cfg: &WandbSinkConfig, env: &dyn Fn(&str) -> Option<String>) -> WandbSettings {
    let get = |n: &str| {
        env(n)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let base_url = get("WANDB_BASE_URL")
        .or_else(|| cfg.base_url.clone())
        .unwrap_or_else(|| DEFAULT_BASE_URL.into())
        .trim_end_matches('/')
        .to_string();
    let project = get("WANDB_PROJECT")
        .or_else(|| cfg.project.clone())
        .unwrap_or_else(|| "mosaic".into());
    let entity = get("WANDB_ENTITY").or_else(|| cfg.entity.clone());
    let (key, key_source) = auth::find_key(&base_url, env);
    let target = Target::parse(&base_url);
    let proxy = match &target {
        Ok(t) => proxy::select(t, cfg.proxy.as_deref(), env),
        Err(_) => ProxyChoice {
            url: None,
            reason: "base URL is invalid".into(),
        },
    };
    // wandb offline sink (issue 5): the configured mode applies unless
    // WANDB_MODE is set.
    let mode = get("WANDB_MODE")
        .or_else(|| cfg.mode.clone())
        .map(|m| m.to_ascii_lowercase());
    let activity = if cfg.enabled == Toggle::Off {
        Activity::Off("sinks.wandb.enabled = false".into())
    } else if env_flag(get("WANDB_DISABLED")) {
        Activity::Off("WANDB_DISABLED is set".into())
    } else if mode.as_deref() == Some("disabled") {
        Activity::Off("WANDB_MODE=disabled".into())
    } else if matches!(mode.as_deref(), Some("offline") | Some("dryrun")) {
        // wandb offline sink (issue 5): no key needed, nothing leaves the host.
        Activity::Offline(format!(
            "mode {}: offline run directories, upload them later with `wandb sync`",
            mode.as_deref().unwrap_or_default()
        ))
    } else if mode.as_deref() == Some("stage") {
        Activity::Staged(
            "mode stage: rows wait in the journal for `mosaic-shipper sync` (or `export`)".into(),
        )
    } else if let Some(m) = mode.as_deref().filter(|m| !matches!(*m, "online" | "run")) {
        Activity::Broken(format!(
            "W&B mode {m:?} (WANDB_MODE or sinks.wandb.mode) is not one of online, offline, stage, disabled"
        ))
    } else if key.is_none() && cfg.enabled == Toggle::Auto {
        // Checked before the URL: "auto" without a key must never stop
        // the agent, whatever else is set.
        Activity::Off(format!("enabled = \"auto\" and no API key: {key_source}"))
    } else if let Err(e) = &target {
        Activity::Broken(format!("W&B base URL: {e}"))
    } else if key.is_none() {
        match cfg.enabled {
            Toggle::On => Activity::Broken(format!(
                "sinks.wandb.enabled = true but no W&B API key: {key_source}"
            )),
            _ => Activity::Off(format!("enabled = \"auto\" and no API key: {key_source}")),
        }
    } else {
        Activity::On(match cfg.enabled {
            Toggle::On => format!("sinks.wandb.enabled = true, key from {key_source}"),
            _ => format!("enabled = \"auto\", key from {key_source}"),
        })
    };
    WandbSettings {
        activity,
        base_url,
        project,
        entity,
        key,
        key_source,
        http: HttpOptions {
            timeout: Duration::from_millis(cfg.timeout_ms),
            proxy,
            ca_file: cfg.ca_file.clone(),
            retry_initial: Duration::from_millis(cfg.retry_initial_ms),
            retry_max: Duration::from_millis(cfg.retry_max_ms),
            give_up_after: Duration::from_secs(cfg.give_up_secs),
            username: get("WANDB_USERNAME").unwrap_or_default(),
            email: get("WANDB_USER_EMAIL").unwrap_or_default(),
        },
        rows_per_request: cfg.rows_per_request,
        flush_interval: Duration::from_millis(cfg.flush_interval_ms),
        idle_finish: Duration::from_secs(cfg.idle_finish_secs),
        heartbeat: super::HEARTBEAT,
        revive_open_runs: true,
        compress: cfg.compress,
        offline_dir: cfg
            .offline_dir
            .clone()
            .unwrap_or_else(|| "var/wandb".into()),
        tracking: super::worker_tracks::WorkerTracking {
            when: super::worker_tracks::WhenWorkerTracks::parse(&cfg.when_worker_tracks)
                .unwrap_or_default(),
            dir: cfg.worker_dir.clone(),
        },
    }
}

/// Reads the process environment.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

impl WandbSettings {
    pub fn is_on(&self) -> bool {
        matches!(self.activity, Activity::On(_))
    }

    /// wandb offline sink (issue 5): the offline writer runs instead.
    pub fn is_offline(&self) -> bool {
        matches!(self.activity, Activity::Offline(_))
    }

    /// Rows are held in the journal for a later `sync`; no sink runs.
    pub fn is_staged(&self) -> bool {
        matches!(self.activity, Activity::Staged(_))
    }

    /// The `check-config` section: what applies and why; no secrets.
    pub fn describe(&self) -> String {
        let (state, why) = match &self.activity {
            Activity::On(w) => ("on", w),
            Activity::Off(w) => ("off", w),
            Activity::Broken(w) => ("NOT USABLE", w),
            Activity::Offline(w) => ("offline", w),
            Activity::Staged(w) => ("staging", w),
        };
        format!(
            "# W&B sink: {state} ({why})\n#   base URL: {}\n#   project: {}, entity: {}\n#   API key: {}\n#   proxy for {}: {}\n",
            mask_url(&self.base_url),
            self.project,
            self.entity.as_deref().unwrap_or("(the account's default entity)"),
            match &self.key {
                Some(_) => format!("*** from {}", self.key_source),
                None => self.key_source.to_string(),
            },
            mask_url(&self.base_url),
            self.http.proxy,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(enabled: Toggle) -> WandbSinkConfig {
        WandbSinkConfig {
            enabled,
            ..WandbSinkConfig::default()
        }
    }

    #[test]
    fn auto_needs_a_key_and_modes_switch_off() {
        let none = |_: &str| None;
        let s = resolve(&cfg(Toggle::Auto), &|k| {
            if k == "HOME" {
                Some("/nonexistent".into())
            } else {
                none(k)
            }
        });
        assert!(matches!(s.activity, Activity::Off(_)), "{:?}", s.activity);
        let with_key = |k: &str| (k == "WANDB_API_KEY").then(|| "k".repeat(40));
        assert!(resolve(&cfg(Toggle::Auto), &with_key).is_on());
        let disabled = |k: &str| match k {
            "WANDB_API_KEY" => Some("k".repeat(40)),
            "WANDB_MODE" => Some("disabled".into()),
            _ => None,
        };
        assert!(!resolve(&cfg(Toggle::Auto), &disabled).is_on());
        let s = resolve(&cfg(Toggle::On), &|k| {
            if k == "HOME" {
                Some("/nonexistent".into())
            } else {
                None
            }
        });
        assert!(matches!(s.activity, Activity::Broken(_)));
    }

    #[test]
    fn environment_overrides_the_configuration() {
        let mut c = cfg(Toggle::Auto);
        c.project = Some("from-config".into());
        c.entity = Some("team-config".into());
        c.base_url = Some("https://api.example.com".into());
        let none = |_: &str| None;
        let s = resolve(&c, &none);
        assert_eq!(
            (s.project.as_str(), s.entity.as_deref()),
            ("from-config", Some("team-config"))
        );
        assert_eq!(s.base_url, "https://api.example.com");
        let env = |k: &str| match k {
            "WANDB_PROJECT" => Some("from-env".to_string()),
            "WANDB_ENTITY" => Some("team-env".to_string()),
            "WANDB_BASE_URL" => Some("http://127.0.0.1:9/".to_string()),
            _ => None,
        };
        let s = resolve(&c, &env);
        assert_eq!(
            (s.project.as_str(), s.entity.as_deref()),
            ("from-env", Some("team-env"))
        );
        assert_eq!(s.base_url, "http://127.0.0.1:9");
        let s = resolve(&cfg(Toggle::Auto), &none);
        assert_eq!((s.project.as_str(), s.entity), ("mosaic", None));
        assert_eq!(s.base_url, DEFAULT_BASE_URL);
        let off = |k: &str| match k {
            "WANDB_API_KEY" => Some("k".repeat(40)),
            "WANDB_DISABLED" => Some("true".to_string()),
            _ => None,
        };
        assert!(!resolve(&cfg(Toggle::On), &off).is_on());
        let offline = |k: &str| match k {
            "WANDB_API_KEY" => Some("k".repeat(40)),
            "WANDB_MODE" => Some("offline".to_string()),
            _ => None,
        };
        // wandb offline sink (issue 5): WANDB_MODE=offline routes to the
        // offline writer, also without a key and from the config file.
        let s = resolve(&cfg(Toggle::On), &offline);
        assert!(s.is_offline() && !s.is_on());
        assert_eq!(s.offline_dir, std::path::PathBuf::from("var/wandb"));
        let mut c = cfg(Toggle::Auto);
        c.mode = Some("offline".into());
        assert!(resolve(&c, &none).is_offline());
        let online = |k: &str| (k == "WANDB_MODE").then(|| "online".to_string());
        assert!(!resolve(&c, &online).is_offline());
        // Journal staging needs neither a key nor a valid URL.
        c.mode = Some("stage".into());
        c.base_url = Some("not a url".into());
        let s = resolve(&c, &none);
        assert!(s.is_staged() && !s.is_on() && !s.is_offline());
    }

    #[test]
    fn describe_masks_secrets() {
        let env = |k: &str| match k {
            "WANDB_API_KEY" => Some("supersecretkey0123456789012345678901234567".into()),
            "HTTPS_PROXY" => Some("http://user:proxypass@proxy:3128".into()),
            "WANDB_BASE_URL" => Some("https://api.example.com/".into()),
            _ => None,
        };
        let s = resolve(&cfg(Toggle::Auto), &env);
        assert_eq!(s.base_url, "https://api.example.com");
        let text = s.describe();
        assert!(
            !text.contains("supersecret") && !text.contains("proxypass"),
            "{text}"
        );
        assert!(text.contains("$HTTPS_PROXY"), "{text}");
    }
}
