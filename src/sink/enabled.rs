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
/// settings must resolve (a mode, a key where one is needed).
pub fn check(config: &Config) -> Result<(), ConfigError> {
    if let Activity::Broken(why) = config.wandb().activity {
        return Err(config.invalid(format!("sinks.wandb: {why}")));
    }
    Ok(())
}
