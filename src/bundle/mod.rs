//! Bundles: rows staged for W&B, carried from an air-gapped machine to a
//! connected one (`export --to DIR`, then `import DIR` there).
//!
//! A machine without network runs the agent with `sinks.wandb.mode =
//! "stage"`: rows wait in its journal for the `wandb` cursor. `export`
//! writes them to a directory (`rows.bin` plus `manifest.json` with each
//! file's SHA-256) and hands them over by moving that cursor; `import` on
//! the connected machine verifies the bundle and appends its rows to that
//! journal, where every enabled sink (and `sync`) takes them like rows read
//! from logs. Checkpoint versions recorded for W&B artifacts travel with
//! the rows, their files in the bundle ([`checkpoints`]). The format is in
//! docs/bundle.md.
//!
//! Both commands need the store to themselves (sled allows one process per
//! store), so the agent must not be running on it.

mod checkpoints;
mod digest;
mod export;
mod frames;
mod import;
mod manifest;
mod order;
mod publish;

use std::path::PathBuf;

use thiserror::Error;

use crate::journal::JournalError;

pub use checkpoints::STORE_DIR as CHECKPOINTS_DIR;
pub use export::{export, Exported};
pub use import::{import, Imported};
pub use manifest::{ArtifactEntry, Manifest, MANIFEST_FILE, ROWS_FILE};

/// The sink whose staged rows a bundle carries.
pub const WANDB_SINK: &str = "wandb";

/// Why an export or import did not happen; each names the directory or
/// store and what to do. Nothing is changed when one is returned.
#[derive(Debug, Error)]
pub enum BundleError {
    /// The bundle is damaged, inconsistent, or out of order here.
    #[error("refusing bundle {dir}: {reason}; nothing was imported")]
    Refused { dir: PathBuf, reason: String },
    #[error("cannot export from store {store}: {reason}")]
    Export { store: PathBuf, reason: String },
    #[error("cannot write a bundle to {dir}: {reason}")]
    Target { dir: PathBuf, reason: String },
    #[error(
        "store {store} is in use by a running mosaic-shipper agent (its lock is held): \
         stop the agent on this store (in a container, wait until the worker is done and \
         the agent has exited), then {action} again"
    )]
    Locked {
        store: PathBuf,
        action: &'static str,
    },
    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Journal(#[from] JournalError),
}

impl BundleError {
    /// A journal error, with the lock (a running agent) named for `action`.
    fn journal(e: JournalError, action: &'static str) -> BundleError {
        match e {
            JournalError::Locked { path } => BundleError::Locked {
                store: path,
                action,
            },
            e => BundleError::Journal(e),
        }
    }
}

/// Unix seconds now.
fn now_unix() -> u64 {
    crate::util::now_secs() as u64
}
