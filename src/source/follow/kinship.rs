//! What a newly found file is to the files already followed. Its inode
//! says "new" in two cases where reading it from its start would ship
//! lines again, so both are decided by content:
//! - a copytruncate copy (`x.log.1` made of `x.log`'s bytes, then `x.log`
//!   emptied): read only once its original is truncated, from where the
//!   original was left;
//! - a followed file restored under a new inode (`cp -p` to a backup, `mv`
//!   back over it): it takes over the old file's checkpoint.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::identity::{dev_ino, head, CheckpointIdentity};
use super::{read_at_most, rotation_family, rotation_number, Tailer};
use crate::config::SourceKind;
use crate::journal::FileState;

/// How many bytes before a checkpoint's offset are compared with the old
/// file, when it can still be read, to tell its restored copy from a new
/// file that merely begins alike.
const TAIL_CHECK_BYTES: u64 = 4096;

/// What a newly found line file is to the files of its rotation family.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Copy {
    /// Not a copy: a new file, read from its start.
    No,
    /// Not to be read yet: an empty rotated file (logrotate creates the
    /// copy empty, then fills it), or a copy of a followed file that may
    /// still hold everything the copy does. Judged again by later scans.
    Wait(String),
    /// A copy of a truncated or vanished original (the `index`th of the
    /// truncated ones the tailer keeps, if it is one of those): its
    /// unread part starts at `offset`.
    From {
        of: String,
        offset: u64,
        index: Option<usize>,
    },
}

/// Whether `a` and `b` agree over what both have, and both have something.
fn shares_prefix(a: &[u8], b: &[u8]) -> bool {
    let n = a.len().min(b.len());
    n > 0 && a[..n] == b[..n]
}

/// Whether two open files begin with the same bytes over the fingerprint
/// length, or over the shorter file when it is shorter (never empty).
fn same_prefix(a: &File, a_len: u64, b: &File, b_len: u64) -> bool {
    let (Ok(x), Ok(y)) = (head(a, a_len), head(b, b_len)) else {
        return false;
    };
    shares_prefix(&x, &y)
}

/// Whether the file now at `state.path`, another than `(dev, ino)`, begins
/// with the checkpoint's first bytes and holds its offset's worth.
pub(super) fn held_at_own_path(state: &FileState, key: (u64, u64)) -> bool {
    let Ok(file) = File::open(&state.path) else {
        return false;
    };
    let Ok(meta) = file.metadata() else {
        return false;
    };
    if dev_ino(&meta) == key || meta.len() < state.offset || state.head.is_empty() {
        return false;
    }
    head(&file, meta.len())
        .is_ok_and(|b| b.len() >= state.head.len() && shares_prefix(&state.head, &b))
}

impl Tailer {
    /// Whether an untracked line file at `path`, beginning with `bytes`
    /// (read in this scan, after the followed files were looked at), is
    /// a copy of another member of its rotation family: named
    /// `<original>.<N>` beside it and beginning with the bytes the
    /// original began with. The original may be followed already or be
    /// new in this scan (`fresh`, with the first bytes read of each).
    ///
    /// A followed original is compared as it was last verified (the first
    /// bytes its checkpoint keeps) as well as it is now: logrotate may
    /// finish the copy and truncate the original between this scan's look
    /// at the original and its look at the copy, and the copy must still
    /// be recognised; the next scan then finds the truncation.
    pub(super) fn copy_of<'a>(
        &'a self,
        path: &Path,
        bytes: &[u8],
        file: &File,
        len: u64,
        fresh: impl Iterator<Item = (&'a Path, &'a [u8])>,
    ) -> Copy {
        // Rotations rename the copy and the original alike (x.log.1 may be
        // x.log.2 by the next look), so kinship is by rotation family.
        // The copy is the older, higher-numbered file of the two.
        let Some(number) = rotation_number(path) else {
            return Copy::No;
        };
        if bytes.is_empty() {
            // Nothing in it can be told from a copy being made: wait until
            // it has something (an empty file has nothing to lose).
            return Copy::Wait("(nothing yet)".into());
        }
        let family = rotation_family(path);
        let is_sibling = |orig: &Path| {
            rotation_family(orig) == family && rotation_number(orig).unwrap_or(0) < number
        };
        // A truncated original survives as its first bytes. A copy that
        // holds all of them is its copy; one that holds only some (a copy
        // still being made, or one made before the original's first bytes
        // were all written) is its copy only if it is none of a file that
        // is still whole, checked first.
        let mut weak = None;
        for (index, (r, _)) in self.replaced.iter().enumerate() {
            if !is_sibling(Path::new(&r.path)) {
                continue;
            }
            let (same, whole_head) = if r.head.len() != r.fp.len as usize {
                // A checkpoint without its head bytes: the fingerprint.
                (
                    r.fp.len > 0 && r.fp.matches(file, len).unwrap_or(false),
                    true,
                )
            } else {
                (shares_prefix(&r.head, bytes), bytes.len() >= r.head.len())
            };
            if same {
                let from = Copy::From {
                    of: r.path.clone(),
                    offset: r.offset,
                    index: Some(index),
                };
                if whole_head {
                    return from;
                }
                weak = weak.or(Some(from));
            }
        }
        for id in self.families.get(&family).into_iter().flatten() {
            let Some(t) = self.files.get(id) else {
                continue;
            };
            if !is_sibling(Path::new(&t.state.path)) {
                continue;
            }
            let recorded = t.state.head.len() == t.state.fp_len as usize
                && shares_prefix(&t.state.head, bytes);
            if t.deleted || (!t.seen && t.file.is_none()) {
                // Deleted, or not found where it was: it is not going to
                // be truncated, and what was read of it is read.
                if recorded {
                    let from = Copy::From {
                        of: t.state.path.clone(),
                        offset: t.state.offset,
                        index: None,
                    };
                    if bytes.len() >= t.state.head.len() {
                        return from;
                    }
                    weak = weak.or(Some(from));
                }
                continue;
            }
            let now = || {
                t.file.as_ref().is_some_and(|f| {
                    f.metadata()
                        .is_ok_and(|m| same_prefix(file, len, f, m.len()))
                })
            };
            if recorded || now() {
                return Copy::Wait(t.state.path.clone());
            }
        }
        for (p, b) in fresh {
            // A copy being made holds at most what its original holds: a
            // file with more than a sibling that is also new in this scan
            // is not that sibling's copy (a 1-byte copy in progress at
            // x.log.1 begins like every older rotation of the same log).
            // Had it copied an earlier content of it, nothing of that was
            // read, so it is read from its start.
            if is_sibling(p) && shares_prefix(b, bytes) && bytes.len() <= b.len() {
                return Copy::Wait(p.display().to_string());
            }
        }
        weak.unwrap_or(Copy::No)
    }

    /// The followed file that an untracked file at `path` (`len` long,
    /// beginning with `bytes`) is a restored copy of, if any: one last
    /// seen at `path` or in its rotation family (a rotation may rename the
    /// restored file before the agent looks) and gone (deleted while
    /// held, or not found while the agent held no handle, e.g. after a
    /// restart), whose content the new file has as far as it is checked:
    /// the first bytes, at least up to the checkpoint's offset, and the
    /// last bytes before that offset when the old file can still be read
    /// (else, for lines, a line's end just before it). Documents are left
    /// out: they are read whole whenever they change anyway. With
    /// `same_path`, only a file last seen at `path` is considered.
    pub(super) fn restored(
        &self,
        path: &Path,
        file: &File,
        len: u64,
        bytes: &[u8],
        same_path: bool,
    ) -> Option<u64> {
        if bytes.is_empty() {
            return None;
        }
        // Every checkpoint last seen at `path` is a candidate, not only the
        // one the path lookup prefers: a stale checkpoint there (a file
        // renamed away and deleted while the agent was stopped) must not
        // hide the one the file restores, or the restored file's copy
        // would be taken for it and the file itself read again.
        let family = self.families.get(&rotation_family(path))?;
        family.iter().copied().find(|&id| {
            (!same_path
                || self
                    .files
                    .get(&id)
                    .is_some_and(|t| Path::new(&t.state.path) == path))
                && self.restores(id, file, len, bytes)
        })
    }

    /// As [`Tailer::restored`], for checkpoints dropped in this scan or a
    /// recent one because their inode held other content (a file deleted
    /// and its inode reused): the index of the one, last at `path`, whose
    /// first bytes `file` begins with, with a line's end (for lines)
    /// just before its offset.
    pub(super) fn restored_replaced(
        &self,
        path: &Path,
        file: &File,
        len: u64,
        bytes: &[u8],
    ) -> Option<usize> {
        self.replaced.iter().position(|(r, _)| {
            Path::new(&r.path) == path
                && r.kind != SourceKind::Document
                && !r.head.is_empty()
                && r.head.len() == r.fp.len as usize
                && len >= r.offset
                && bytes.len() >= r.head.len()
                && shares_prefix(&r.head, bytes)
                && (r.kind != SourceKind::Lines || r.offset == 0 || {
                    let mut last = [0u8];
                    file.read_exact_at(&mut last, r.offset - 1).is_ok() && last[0] == b'\n'
                })
        })
    }

    /// Whether `file` holds what followed file `id` held (see
    /// [`Tailer::restored`]).
    fn restores(&self, id: u64, file: &File, len: u64, bytes: &[u8]) -> bool {
        let Some(t) = self.files.get(&id) else {
            return false;
        };
        let s = &t.state;
        let gone = !t.seen && (t.deleted || t.file.is_none());
        if !gone || s.kind == SourceKind::Document || len < s.offset {
            return false;
        }
        let begins_alike = match &t.file {
            Some(old) => {
                let Ok(old_head) = old.metadata().and_then(|m| head(old, m.len())) else {
                    return false;
                };
                // All of it: a short file must not pass for a long one.
                bytes.len() >= old_head.len() && shares_prefix(&old_head, bytes)
            }
            None if s.head.len() == s.fp_len as usize => {
                bytes.len() >= s.head.len() && shares_prefix(&s.head, bytes)
            }
            // A checkpoint without its head bytes: the fingerprint.
            None => s.fp_len > 0 && s.fingerprint().matches(file, len).unwrap_or(false),
        };
        if !begins_alike {
            return false;
        }
        let offset = s.offset;
        match &t.file {
            Some(old) => {
                let from = offset.saturating_sub(TAIL_CHECK_BYTES);
                let want = offset - from;
                match (
                    read_at_most(old, from, want),
                    read_at_most(file, from, want),
                ) {
                    (Ok(a), Ok(b)) => a.len() as u64 == want && a == b,
                    _ => false,
                }
            }
            None if s.kind == SourceKind::Lines && offset > 0 => {
                let mut last = [0u8];
                file.read_exact_at(&mut last, offset - 1).is_ok() && last[0] == b'\n'
            }
            None => true,
        }
    }

    /// Moves checkpoint `id` onto `file`, its restored copy (see
    /// [`Tailer::restored`]): reading goes on at the same offset. The new
    /// identity is committed even if there is nothing to read, so a
    /// restart knows the file by its new inode.
    pub(super) fn adopt(
        &mut self,
        id: u64,
        path: &Path,
        file: File,
        meta: &std::fs::Metadata,
        bytes: Vec<u8>,
    ) {
        let t = self.files.get_mut(&id).expect("id from restored()");
        tracing::info!(id, file = %path.display(), was = %t.state.path, offset = t.state.offset, "file replaced by one with the same content (restored from a backup?): going on from its offset");
        t.state.path = path.display().to_string();
        let (dev, ino) = dev_ino(meta);
        t.state.dev = dev;
        t.state.ino = ino;
        if bytes.len() >= t.state.head.len() {
            t.state.set_head(bytes);
        }
        t.file = Some(file);
        t.seen = true;
        t.unseen_scans = 0;
        t.deleted = false;
        t.closed = None;
        t.needs_commit = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_compared_over_what_both_have() {
        assert!(shares_prefix(b"abc", b"abcdef"));
        assert!(shares_prefix(b"abcdef", b"ab"));
        assert!(!shares_prefix(b"abd", b"abcdef"));
        assert!(!shares_prefix(b"", b"abc"), "nothing proves nothing");
    }
}
