//! Which file-system errors of a file sink refuse one run, and which hold
//! every run.
//!
//! The file sinks (`jsonl`, `tensorboard`, `wandb-offline`) write each run
//! under a directory of its own. When that run's part of the tree cannot be
//! written (a path component replaced by a file, a name too long, its
//! directory or file made immutable or not writable for the agent's user),
//! retrying changes nothing and must not hold up the other runs: the error
//! becomes [`SinkError::Refused`] for that run, whose rows the runner then
//! sets aside for that sink (see `journal/set_aside.rs`).
//!
//! Errors of the whole destination stay plain errors that the runner
//! retries, as before: a full disk or quota (`ENOSPC`, `EDQUOT`), a
//! read-only file system (`EROFS`), an I/O error, and any error while the
//! sink's shared root (the directory above the runs' own part) is itself
//! not a writable directory: then every run would fail the same way, and
//! setting them aside one by one would only hide the cause.

use std::io;
use std::path::{Path, PathBuf};

use super::SinkError;

/// Errors that can belong to one path rather than to the file system.
fn about_one_path(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::ENOTDIR
                | libc::EISDIR
                | libc::ENAMETOOLONG
                | libc::EACCES
                | libc::EPERM
                | libc::ELOOP
                | libc::EEXIST
        )
    )
}

/// Whether `dir` is a directory this process may create entries in (as
/// root too: `access` reports an immutable directory or a read-only mount).
fn writable_dir(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated path for the call's duration.
    dir.is_dir() && unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } == 0
}

/// The error of a file operation `what` on `path` while writing rows of
/// MOSAIC run `run` (empty: not known, so not refused), for sink `sink`. `root`: the sink's shared directory
/// above every run's own part (`None`: all runs share the path, so nothing
/// is about one run). A refusal when the error is about one path and the
/// root is healthy; otherwise an error the runner retries.
pub fn error(
    sink: &str,
    root: Option<&Path>,
    run: &str,
    path: &Path,
    what: &str,
    e: io::Error,
) -> SinkError {
    let one = !run.is_empty() && one_run(root, &e);
    let message = format!("{sink} sink: {what} {}: {e}", path.display());
    if one {
        SinkError::Refused {
            run: run.to_string(),
            reason: message,
        }
    } else {
        SinkError::Io(message)
    }
}

/// Whether `e` is about one run's part of the tree under a healthy `root`.
fn one_run(root: Option<&Path>, e: &io::Error) -> bool {
    root.is_some_and(|root| about_one_path(e) && writable_dir(root))
}

/// For recovery: an error `what` on one run's `path` is logged and let
/// pass (`Ok`), as that run's next write fails too and refuses the run,
/// while every other run's files are recovered; an error of the whole
/// destination stops recovery (`Err`, retried).
pub fn let_pass(
    sink: &str,
    root: Option<&Path>,
    path: &Path,
    what: &str,
    e: io::Error,
) -> Result<(), SinkError> {
    if one_run(root, &e) {
        tracing::warn!(sink, file = %path.display(), error = %e, "cannot {what} one run's file to recover it; left as it is (that run's next rows will be refused)");
        return Ok(());
    }
    Err(SinkError::Io(format!(
        "{sink} sink: cannot {what} {}: {e}",
        path.display()
    )))
}

/// The directory above the first component of `template` that holds
/// `{run_id}` (`var/trainer/runs` for `var/trainer/runs/{run_id}/x`; `.`
/// when that component is the first); `None` without `{run_id}`.
pub fn template_root(template: &str) -> Option<PathBuf> {
    let at = template.find("{run_id}")?;
    let before = &template[..at];
    Some(match before.rfind('/') {
        Some(0) => PathBuf::from("/"),
        Some(i) => PathBuf::from(&before[..i]),
        None => PathBuf::from("."),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_is_above_the_runs_own_part() {
        assert_eq!(
            template_root("var/trainer/runs/{run_id}/shipper/rows.jsonl"),
            Some(PathBuf::from("var/trainer/runs"))
        );
        assert_eq!(
            template_root("/out/run-{run_id}.jsonl"),
            Some(PathBuf::from("/out"))
        );
        assert_eq!(template_root("/{run_id}"), Some(PathBuf::from("/")));
        assert_eq!(template_root("{run_id}/x"), Some(PathBuf::from(".")));
        assert_eq!(template_root("all.jsonl"), None);
    }

    #[test]
    fn one_runs_path_refuses_the_run_a_full_disk_does_not() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let err = |code| io::Error::from_raw_os_error(code);
        let p = root.join("r/x");
        for code in [
            libc::ENOTDIR,
            libc::EACCES,
            libc::ENAMETOOLONG,
            libc::EEXIST,
        ] {
            assert!(
                matches!(error("jsonl", Some(root), "r", &p, "cannot open", err(code)), SinkError::Refused { ref run, .. } if run == "r"),
                "{code}"
            );
        }
        for code in [libc::ENOSPC, libc::EROFS, libc::EIO, libc::EDQUOT] {
            assert!(matches!(
                error("jsonl", Some(root), "r", &p, "cannot write", err(code)),
                SinkError::Io(_)
            ));
        }
        // The shared root itself is broken: every run would fail alike.
        let gone = root.join("missing");
        assert!(matches!(
            error(
                "jsonl",
                Some(&gone),
                "r",
                &p,
                "cannot create",
                err(libc::ENOTDIR)
            ),
            SinkError::Io(_)
        ));
        assert!(matches!(
            error("jsonl", None, "r", &p, "cannot open", err(libc::EACCES)),
            SinkError::Io(_)
        ));
        assert!(matches!(
            error(
                "jsonl",
                Some(root),
                "",
                &p,
                "cannot open",
                err(libc::EACCES)
            ),
            SinkError::Io(_)
        ));
        assert!(let_pass("jsonl", Some(root), &p, "open", err(libc::ENOTDIR)).is_ok());
        assert!(let_pass("jsonl", Some(root), &p, "open", err(libc::EROFS)).is_err());
        let text = error(
            "jsonl",
            Some(root),
            "r",
            &p,
            "cannot open",
            err(libc::EACCES),
        )
        .to_string();
        assert!(
            text.contains("r/x") && text.contains("cannot open"),
            "{text}"
        );
    }
}
