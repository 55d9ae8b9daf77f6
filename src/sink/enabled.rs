//! What the sink room reads from the configuration: which sinks it turns
//! on, and W&B's settings as they take effect (the `[sinks.wandb]` section
//! with the environment over it). Kept here, not in `config`, so that the
//! schema knows nothing of the sinks that read it.

use crate::config::{Config, ConfigError};
use crate::sink::wandb::settings::Activity;
use crate::sink::wandb::WandbSettings;

impl Config {
    /// The W&B settings as they take effect (configuration + environment).
    pub fn wandb(&self) -> WandbSettings {
        crate::sink::wandb::resolve(
            &self.sinks.wandb,
            &crate::sink::wandb::settings::process_env,
        )
    }

    /// The effective configuration as TOML, secrets masked, for `check-config`.
    pub fn render(&self) -> String {
        let mut text = format!("# effective configuration from {}\n", self.origin);
        text.push_str(&toml::to_string_pretty(self).unwrap_or_else(|e| format!("# {e}\n")));
        // wandb sink (issue 4): what applies after the environment, and why.
        text.push('\n');
        text.push_str(&self.wandb().describe());
        text
    }

    /// Names of the sinks that are switched on, in a stable order.
    pub fn enabled_sinks(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.sinks.jsonl.enabled {
            out.push("jsonl");
        }
        if self.sinks.tensorboard.enabled {
            out.push("tensorboard");
        }
        // wandb sink (issue 4); staged rows are held for its cursor.
        let wandb = self.wandb();
        if wandb.is_on() || wandb.is_staged() {
            out.push("wandb");
        }
        // wandb offline sink (issue 5)
        if wandb.is_offline() {
            out.push("wandb-offline");
        }
        out
    }

    /// The enabled sinks the agent runs: all but a staged `wandb`, whose
    /// cursor only holds rows back (for `sync` or `export`), so that
    /// `run --once` does not wait for a sink that never delivers.
    pub fn delivering_sinks(&self) -> Vec<&'static str> {
        let staged = self.wandb().is_staged();
        self.enabled_sinks()
            .into_iter()
            .filter(|s| !(staged && *s == "wandb"))
            .collect()
    }
}

/// The sink room's check of its sections beyond their schema: W&B's
/// settings must resolve (a mode, a key where one is needed), and with the
/// metrics endpoint on, `/ready`'s window must be longer than every
/// delivering sink's flush interval.
pub fn check(config: &Config) -> Result<(), ConfigError> {
    let wandb = config.wandb();
    if let Activity::Broken(why) = &wandb.activity {
        return Err(config.invalid(format!("sinks.wandb: {why}")));
    }
    if config.metrics.enabled {
        // A sink under a steady stream always has rows pending and makes
        // progress once per flush: a shorter window would fail `/ready`
        // between every two flushes of a healthy sink.
        let stale = std::time::Duration::from_secs(config.metrics.stale_after_secs);
        for sink in config.delivering_sinks() {
            let (section, every) = match sink {
                "jsonl" => (
                    "jsonl",
                    std::time::Duration::from_millis(config.sinks.jsonl.flush_interval_ms),
                ),
                "tensorboard" => (
                    "tensorboard",
                    std::time::Duration::from_millis(config.sinks.tensorboard.flush_interval_ms),
                ),
                _ => ("wandb", wandb.flush_interval),
            };
            if stale <= every {
                return Err(config.invalid(format!(
                    "metrics.stale_after_secs ({} s) must be longer than sinks.{section}.flush_interval_ms ({} ms): \
                     a sink makes progress once per flush, so /ready would fail between flushes",
                    config.metrics.stale_after_secs,
                    every.as_millis()
                )));
            }
        }
    }
    Ok(())
}
