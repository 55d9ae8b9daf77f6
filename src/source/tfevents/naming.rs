//! Metric names for values read from event files anywhere under a run's
//! `tensorboard/` directory, following W&B's own TensorBoard sync so that
//! a run shipped by the agent and one synced by W&B name metrics alike.
//!
//! W&B's rule (wandb/wandb @b6e2950, wandb-core):
//! `core/internal/tensorboard/tensorboard.go` (`getRootDirAndNamespace`,
//! `namespaceFrom`), `rootdirguesser.go` (`RootDirGuesser`, `TrimFrom`) and
//! `tfeventconverter.go` (`withNamespace`). Every directory a
//! `SummaryWriter` opens a file in is a "log directory"; the metric is
//! `<namespace>/<tag>`, or `<tag>` when the namespace is empty, where the
//! namespace is the log directory's path below a root directory, with `/`
//! separators and no leading or trailing `/`. The root is the
//! `root_logdir` given to `wandb.tensorboard.patch`, else the longest
//! common path prefix of the first two log directories seen (TensorBoard's
//! "train"/"validation" sub-directories), else, with a single log
//! directory, none: the namespace is empty ("likely to be ugly like
//! runs/CURRENT_DATETIME_HOSTNAME"). The older Python watcher
//! (`wandb/sdk/internal/tb_watcher.py`, `_calculate_namespace`) agrees,
//! and keeps a lone log directory named `train` or `validation` as the
//! namespace.
//!
//! For the workers this means: CleanRL's single writer in
//! `tensorboard/<env>__<exp>__<seed>__<ts>/` has no namespace
//! (`charts/episodic_return`); Ray's writers in `tensorboard/` itself have
//! none (`ray/tune/...`); XuanCe's main writer in `tensorboard/seed_<s>_<ts>/`
//! opens first and `add_scalars` then opens one child log directory per
//! key, so the root is the main writer's directory, its own tags have no
//! namespace and each child's tags are prefixed by the child's path below
//! it (`Train-Episode-Rewards_rank_0_env-0/Train-Episode-Rewards/rank_0`
//! with torch, `Train-Episode-Rewards/rank_0/env-0/Train-Episode-Rewards/rank_0`
//! with tensorboardX, which nests `main_tag/key`): two envs stay two metrics.
//!
//! Without W&B's order of writer creation, the root is taken as the
//! *outermost writer*: the shallowest directory from `tensorboard/` down to
//! the file's own that holds an event file. The main writer creates its
//! file when constructed, before any `add_scalars` child exists, so this is
//! the directory W&B infers; unlike an inference from the set of all
//! directories, a name does not change when more directories appear. One
//! difference remains: sibling writers directly under `tensorboard/`
//! (e.g. `a/`, `b/`, neither holding the other) get no namespace here,
//! where W&B would prefix `a/`, `b/`; only the `train`/`validation` pair of
//! Keras is kept apart, as the Python watcher does.

use std::path::{Component, Path};

/// Log directory names kept as a namespace even for the outermost writer
/// (`tb_watcher.py`, `_calculate_namespace`: `["train", "validation"]`).
const KEPT: [&str; 2] = ["train", "validation"];

/// The metric name of `tag` read from `event_file`, found under `tb_root`
/// (the run's `tensorboard/` directory). Reads the listings of the
/// directories between the two to find the outermost writer (see the
/// module documentation); compute it once when a file is first followed
/// and keep it, so that it stays the same if files are later removed.
pub fn metric_name(tb_root: &Path, event_file: &Path, tag: &str) -> String {
    metric_name_with(tb_root, event_file, tag, holds_event_file)
}

/// [`metric_name`] with the question "does this directory hold an event
/// file?" answered by `holds_event_file` (pure, for tests).
pub fn metric_name_with(
    tb_root: &Path,
    event_file: &Path,
    tag: &str,
    holds_event_file: impl FnMut(&Path) -> bool,
) -> String {
    qualified(&namespace(tb_root, event_file, holds_event_file), tag)
}

/// `tag` in `namespace`: `<namespace>/<tag>`, or whichever is not empty.
pub fn qualified(namespace: &str, tag: &str) -> String {
    match (namespace.is_empty(), tag.is_empty()) {
        (true, _) => tag.to_string(),
        (false, true) => namespace.to_string(),
        (false, false) => format!("{namespace}/{tag}"),
    }
}

/// The namespace of `event_file`'s directory: its path below the outermost
/// writer's directory, `/`-separated; empty for a file outside `tb_root`
/// (W&B: "rootDir not prefix of logDir" gives an empty namespace).
pub fn namespace(
    tb_root: &Path,
    event_file: &Path,
    mut holds_event_file: impl FnMut(&Path) -> bool,
) -> String {
    let Some(rel) = event_file
        .parent()
        .and_then(|dir| dir.strip_prefix(tb_root).ok())
    else {
        return String::new();
    };
    let mut parts = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_string_lossy()),
            Component::CurDir => {}
            _ => return String::new(),
        }
    }
    // The file's own directory holds an event file, so a writer is found
    // at the latest there (`root == parts.len()`).
    let mut dir = tb_root.to_path_buf();
    let mut root = parts.len();
    for (i, p) in parts.iter().enumerate() {
        if holds_event_file(&dir) {
            root = i;
            break;
        }
        dir.push(p.as_ref());
    }
    // The outermost writer's own directory, if it is `train`/`validation`.
    let start = match root.checked_sub(1) {
        Some(i) if KEPT.contains(&parts[i].as_ref()) => i,
        _ => root,
    };
    parts[start..].join("/")
}

/// Whether `dir` directly holds a file whose name contains `tfevents`,
/// the test of TensorBoard's loaders (`io_wrapper.IsTensorFlowEventsFile`)
/// and W&B's watcher (`tb_watcher.py`, `is_tfevents_file_created_by`).
pub fn holds_event_file(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        e.file_name().to_string_lossy().contains("tfevents")
            && e.file_type().is_ok_and(|t| !t.is_dir())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::path::PathBuf;

    /// Names for files at the given paths below `/r/tensorboard`, every
    /// file's directory holding an event file.
    fn names(files: &[&str], tag: &str) -> Vec<String> {
        let root = PathBuf::from("/r/tensorboard");
        let dirs: HashSet<PathBuf> = files
            .iter()
            .map(|f| root.join(f).parent().unwrap().to_path_buf())
            .collect();
        files
            .iter()
            .map(|f| metric_name_with(&root, &root.join(f), tag, |d| dirs.contains(d)))
            .collect()
    }

    #[test]
    fn cleanrl_single_run_directory_adds_nothing() {
        assert_eq!(
            names(
                &["CartPole-v1__ppo__1__1773107642/events.out.tfevents.1.h"],
                "charts/episodic_return"
            ),
            ["charts/episodic_return"]
        );
    }

    #[test]
    fn ray_files_in_the_root_add_nothing() {
        assert_eq!(
            names(
                &["events.out.tfevents.1.h", "events.out.tfevents.2.h"],
                "ray/tune/x"
            ),
            ["ray/tune/x", "ray/tune/x"]
        );
    }

    #[test]
    fn xuance_add_scalars_children_keep_envs_apart() {
        let files = [
            "seed_1_2026_0310_015427/events.out.tfevents.1.h",
            "seed_1_2026_0310_015427/Train-Episode-Rewards_rank_0_env-0/events.out.tfevents.2.h",
            "seed_1_2026_0310_015427/Train-Episode-Rewards_rank_0_env-1/events.out.tfevents.3.h",
        ];
        assert_eq!(
            names(&files, "Train-Episode-Rewards/rank_0"),
            [
                "Train-Episode-Rewards/rank_0",
                "Train-Episode-Rewards_rank_0_env-0/Train-Episode-Rewards/rank_0",
                "Train-Episode-Rewards_rank_0_env-1/Train-Episode-Rewards/rank_0",
            ]
        );
        // tensorboardX nests main_tag/key under a writer in the root.
        let files = [
            "events.out.tfevents.1.h",
            "Train-Episode-Rewards/rank_0/env-0/events.out.tfevents.2.h",
        ];
        assert_eq!(
            names(&files, "Train-Episode-Rewards/rank_0"),
            [
                "Train-Episode-Rewards/rank_0",
                "Train-Episode-Rewards/rank_0/env-0/Train-Episode-Rewards/rank_0",
            ]
        );
    }

    #[test]
    fn keras_train_and_validation_stay_apart() {
        let files = [
            "train/events.out.tfevents.1.h",
            "validation/events.out.tfevents.2.h",
        ];
        assert_eq!(
            names(&files, "epoch_loss"),
            ["train/epoch_loss", "validation/epoch_loss"]
        );
        let files = ["run/train/events.out.tfevents.1.h"];
        assert_eq!(names(&files, "epoch_loss"), ["train/epoch_loss"]);
    }

    #[test]
    fn files_outside_the_root_and_odd_tags() {
        let root = Path::new("/r/tensorboard");
        let never = |_: &Path| false;
        assert_eq!(
            metric_name_with(
                root,
                Path::new("/elsewhere/x/events.out.tfevents.1"),
                "a",
                never
            ),
            "a"
        );
        assert_eq!(
            metric_name_with(
                root,
                Path::new("/r/tensorboard/../x/events.out.tfevents.1"),
                "a",
                never
            ),
            "a"
        );
        let f = Path::new("/r/tensorboard/main/sub/events.out.tfevents.1");
        let main = |d: &Path| d == Path::new("/r/tensorboard/main");
        assert_eq!(metric_name_with(root, f, "a", main), "sub/a");
        assert_eq!(metric_name_with(root, f, "", main), "sub");
    }

    #[test]
    fn on_disk_the_outermost_writer_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("tensorboard");
        let main = root.join("seed_1");
        let child = main.join("Episode-Steps_rank_0_env-0");
        std::fs::create_dir_all(&child).unwrap();
        // A directory named like an event file does not count.
        std::fs::create_dir_all(root.join("x.tfevents.dir")).unwrap();
        let child_file = child.join("events.out.tfevents.2.h");
        std::fs::write(&child_file, b"").unwrap();
        // Before the main writer's file exists, the child looks like a
        // writer of its own.
        assert_eq!(
            metric_name(&root, &child_file, "Episode-Steps/rank_0"),
            "Episode-Steps/rank_0"
        );
        std::fs::write(main.join("events.out.tfevents.1.h"), b"").unwrap();
        assert_eq!(
            metric_name(&root, &child_file, "Episode-Steps/rank_0"),
            "Episode-Steps_rank_0_env-0/Episode-Steps/rank_0"
        );
        assert!(!holds_event_file(&root));
        assert!(holds_event_file(&main));
    }
}
