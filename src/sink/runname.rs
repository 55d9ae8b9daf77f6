//! Run ids made into names every destination can hold, the same way for
//! every sink.
//!
//! Run ids come from log content, so they can be anything: `..`, `a/b`, a
//! NUL, 300 characters, CJK, `%2e%2e`. Each sink puts the id somewhere
//! with rules of its own (a path component for `jsonl` and TensorBoard, a
//! directory and file name for `wandb-offline`, a URL path segment and
//! run name for W&B), and the old per-sink clean-ups were not injective:
//! `実験-1` and `測定-1` both became `__-1`, two runs in one file.
//!
//! One rule for all of them, in two flavours ([`Flavor`]):
//!
//! - An id that is already safe is kept as it is, so ULIDs and ordinary
//!   names keep the paths they always had. Safe: 1 to [`MAX_LEN`]
//!   characters from `A-Z a-z 0-9 - _ .`, not starting with `.`, and not
//!   ending the way a mapped name ends (`--` and ten characters of
//!   `a-z 2-7`), so that no kept id can equal a mapped one.
//! - Anything else is mapped: every other character becomes `_`, a
//!   leading `.` becomes `_`, the result is cut to leave room, and `--`
//!   plus ten characters of a SHA-256 of the original id (50 bits, base32)
//!   are appended. Two different ids map to two different names unless
//!   their hashes collide in 50 bits.
//! - W&B ([`Flavor::Wandb`]) additionally wants lower case: W&B's own run
//!   ids are lower case (`wandb/sdk/lib/runid.py` draws them from
//!   `a-z0-9`) and its server may compare names without case. A ULID is
//!   case-insensitive by definition and is only lowered (its W&B id has
//!   always been the ULID in lower case); any other id with an upper-case
//!   letter counts as changed and gets the hash, so `Run-A` and `run-a`
//!   stay two W&B runs. The result also satisfies the SDK's own checks
//!   (`wandb_settings.py` `validate_run_id`: not empty, no surrounding
//!   whitespace, none of `: ; , # ? / '`), and `.`/`..`/`%2e%2e` can no
//!   longer turn `/files/<entity>/<project>/<run>/file_stream` into a
//!   different URL.
//!
//! Every mapped name fits in one path component of any file system
//! (at most [`MAX_LEN`] bytes, ASCII), so no run id can leave the directory
//! a sink was given.

use std::borrow::Cow;

use sha2::{Digest, Sha256};

/// The longest name kept or produced. W&B generates 8-character run ids
/// and refuses project names over 128 characters; 64 leaves room for the
/// names W&B and the sinks derive from a run id (`offline-run-<time>-<id>`,
/// `run-<id>.wandb.synced`) within a 255-byte file name.
pub const MAX_LEN: usize = 64;

/// Characters of the hash suffix (base32, 5 bits each).
const HASH_CHARS: usize = 10;
const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// Where a name goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// A path component (`jsonl`, TensorBoard): case kept.
    Path,
    /// A W&B run id (online and offline): lower case.
    Wandb,
}

/// The name for `run_id` in a path (`{run_id}` of a template).
pub fn path_name(run_id: &str) -> Cow<'_, str> {
    map(run_id, Flavor::Path)
}

/// The W&B run id for `run_id` (online run name, offline run id and
/// directory).
pub fn wandb_id(run_id: &str) -> String {
    map(run_id, Flavor::Wandb).into_owned()
}

/// Whether `c` may appear in a kept name.
fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

/// A ULID: 26 characters of Crockford's base32, any case, with the
/// letters its decoders accept as aliases (I and L for 1, O for 0); only
/// U is never one.
fn is_ulid(s: &str) -> bool {
    s.len() == 26
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() && !matches!(b, b'U' | b'u'))
}

/// Whether `s` ends the way a mapped name does.
fn looks_mapped(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= HASH_CHARS + 2 && {
        let (head, tail) = b.split_at(b.len() - HASH_CHARS);
        head.ends_with(b"--") && tail.iter().all(|c| BASE32.contains(c))
    }
}

/// The ten-character hash of the original id.
fn hash(run_id: &str) -> String {
    let digest = Sha256::digest(run_id.as_bytes());
    let mut bits = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
    let mut out = String::with_capacity(HASH_CHARS);
    for _ in 0..HASH_CHARS {
        out.push(BASE32[(bits >> 59) as usize] as char);
        bits <<= 5;
    }
    out
}

/// The name of `run_id` in `flavor`.
pub fn map(run_id: &str, flavor: Flavor) -> Cow<'_, str> {
    let mut changed = false;
    let base: Cow<str> = match flavor {
        Flavor::Path => Cow::Borrowed(run_id),
        Flavor::Wandb if run_id.bytes().any(|b| b.is_ascii_uppercase()) => {
            // A ULID's two spellings are one id; any other name's are two.
            changed = !is_ulid(run_id);
            Cow::Owned(run_id.to_ascii_lowercase())
        }
        Flavor::Wandb => Cow::Borrowed(run_id),
    };
    let safe = !base.is_empty()
        && base.len() <= MAX_LEN
        && !base.starts_with('.')
        && base.chars().all(allowed)
        && !looks_mapped(&base);
    if safe && !changed {
        return base;
    }
    let keep = MAX_LEN - HASH_CHARS - 2;
    let mut out = String::with_capacity(MAX_LEN);
    for (i, c) in base.chars().enumerate() {
        if out.len() >= keep {
            break;
        }
        out.push(if allowed(c) && !(i == 0 && c == '.') {
            c
        } else {
            '_'
        });
    }
    out.push_str("--");
    out.push_str(&hash(run_id));
    Cow::Owned(out)
}

/// Whether `run_id` is shown under another name by some sink (the W&B id
/// of a ULID, only lowered, does not count).
pub fn is_mapped(run_id: &str) -> bool {
    path_name(run_id) != run_id || {
        let w = wandb_id(run_id);
        w != run_id && !(is_ulid(run_id) && w == run_id.to_ascii_lowercase())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn safe_ids_are_kept() {
        for id in [
            "01JD9X2K7M3N4P5Q6R7S8T9V0X",
            "run-1",
            "CartPole-v1__ppo__1__1700000000",
            "a.b_c",
        ] {
            assert_eq!(path_name(id), id);
            assert!(matches!(path_name(id), Cow::Borrowed(_)));
        }
        assert_eq!(
            wandb_id("01JD9X2K7M3N4P5Q6R7S8T9V0X"),
            "01jd9x2k7m3n4p5q6r7s8t9v0x"
        );
        assert_eq!(wandb_id("run-1"), "run-1");
        // Crockford's aliases (I, L, O) are still a ULID: lowered only.
        assert_eq!(
            wandb_id("01JDAO0000000000000000FL0I"),
            "01jdao0000000000000000fl0i"
        );
        assert!(!is_mapped("01JD9X2K7M3N4P5Q6R7S8T9V0X"));
        assert!(!is_mapped("run-1"));
    }

    #[test]
    fn unsafe_ids_map_to_distinct_safe_names() {
        let long = "x".repeat(300);
        let hostile = [
            "実験-1",
            "測定-1",
            "a/b",
            "a_b",
            "..",
            ".",
            "",
            "%2e%2e",
            "a\0b",
            "a b",
            long.as_str(),
            "../../etc/passwd",
            ".hidden",
            "Run-A",
            "run-a",
            "x: y; z, #?'",
        ];
        let mut paths = HashSet::new();
        let mut wandb = HashSet::new();
        for id in hostile {
            for (flavor, seen) in [(Flavor::Path, &mut paths), (Flavor::Wandb, &mut wandb)] {
                let n = map(id, flavor);
                assert!(!n.is_empty() && n.len() <= MAX_LEN, "{id:?} -> {n:?}");
                assert!(!n.starts_with('.'), "{id:?} -> {n:?}");
                assert!(n.chars().all(allowed), "{id:?} -> {n:?}");
                if flavor == Flavor::Wandb {
                    assert!(!n.bytes().any(|b| b.is_ascii_uppercase()), "{n}");
                }
                assert!(seen.insert(n.to_string()), "{id:?} collides as {n:?}");
                // Stable: a restarted agent finds the same place.
                assert_eq!(map(id, flavor), n);
            }
        }
        assert_eq!(path_name("a_b"), "a_b", "safe, kept");
        assert_ne!(path_name("a/b"), "a_b");
        assert!(path_name("実験-1").starts_with("__-1--"));
        assert_eq!(path_name("Run-A"), "Run-A", "paths keep case");
        assert!(wandb_id("Run-A").starts_with("run-a--"));
        assert!(is_mapped("a/b") && is_mapped("Run-A"));
    }

    #[test]
    fn a_kept_id_never_equals_a_mapped_one() {
        let mapped = path_name("a/b").into_owned();
        // Given as a run id of its own, that name is mapped again.
        assert_ne!(path_name(&mapped), mapped);
        assert!(looks_mapped(&mapped));
        assert!(!looks_mapped("run--1"));
    }
}
