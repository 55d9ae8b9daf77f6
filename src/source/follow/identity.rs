//! Telling files apart.
//!
//! A path is not an identity: rotation renames files and copytruncate
//! empties them in place. The (device, inode) pair follows a file through
//! renames, but inodes are reused once a file is deleted, so it is paired
//! with a checksum of the file's first bytes. Two files with the same
//! inode and a different beginning are different files.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};

use crate::journal::FileState;

/// How many leading bytes the fingerprint covers once the file is that long.
/// 256 bytes of a JSON log line hold a millisecond timestamp, which is what
/// makes two log files' beginnings differ.
pub const FINGERPRINT_BYTES: u64 = 256;

/// A checksum of a file's first `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    pub len: u32,
    pub crc: u32,
}

impl Fingerprint {
    /// Fingerprints exactly the first `len` bytes; a zero-length
    /// fingerprint matches every file, which is right for an empty file.
    pub fn of_prefix(file: &File, len: u64) -> io::Result<Fingerprint> {
        Ok(Self::of_bytes(&head(file, len)?))
    }

    pub fn of_bytes(bytes: &[u8]) -> Fingerprint {
        Fingerprint {
            len: bytes.len() as u32,
            crc: crc32c::crc32c(bytes),
        }
    }

    /// Whether `file` (now `file_len` bytes long) still begins with the
    /// bytes this fingerprint was taken of.
    pub fn matches(&self, file: &File, file_len: u64) -> io::Result<bool> {
        if file_len < u64::from(self.len) {
            return Ok(false);
        }
        Ok(Self::of_prefix(file, u64::from(self.len))? == *self)
    }
}

/// (device, inode) of an open file or a path's metadata.
pub fn dev_ino(meta: &std::fs::Metadata) -> (u64, u64) {
    (meta.dev(), meta.ino())
}

/// The first `min(len, FINGERPRINT_BYTES)` bytes of a file that is `len` long.
pub fn head(file: &File, len: u64) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len.min(FINGERPRINT_BYTES) as usize];
    file.read_exact_at(&mut buf, 0)?;
    Ok(buf)
}

/// The identity half of a checkpoint, kept here beside the fingerprint it
/// is made of (the journal stores the fields, the follower computes them).
pub trait CheckpointIdentity {
    /// Records `bytes` as the file's first bytes and their fingerprint.
    fn set_head(&mut self, bytes: Vec<u8>);
    fn fingerprint(&self) -> Fingerprint;
}

impl CheckpointIdentity for FileState {
    fn set_head(&mut self, bytes: Vec<u8>) {
        let fp = Fingerprint::of_bytes(&bytes);
        self.fp_len = fp.len;
        self.fp = fp.crc;
        self.head = bytes;
    }

    fn fingerprint(&self) -> Fingerprint {
        Fingerprint {
            len: self.fp_len,
            crc: self.fp,
        }
    }
}
