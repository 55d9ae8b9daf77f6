//! Large checkpoints in parts, as wandb-core 0.31.0 uploads them
//! (core/pkg/artifacts/multipart.go, `createMultiPartRequest` and
//! `getChunkSize`; saver.go, `uploadMultipart`; the requests are recorded
//! in tests/fixtures/wandb-sdk-artifacts-large.json):
//!
//! - a file of `S3MinMultiUploadSize` (2 GiB) and more is announced to
//!   `CreateArtifactFiles` with `uploadPartsInput`: per part, its number
//!   (from 1) and the MD5 of its bytes in hex;
//! - parts are 100 MiB (`S3DefaultChunkSize`), the last one shorter; a
//!   file that would need more than 10,000 parts (`S3MaxParts`) gets
//!   larger parts, the size divided by 10,000 rounded up to 4 KiB;
//! - the server answers with one URL per part; each part is PUT with its
//!   `Content-MD5` (base64) and `Content-Length`, and the storage's answer
//!   carries its `ETag`; `CompleteMultipartUploadArtifact` then hands the
//!   ETags back, and only then does the server hold the file.
//!
//! Parts are read from the file one at a time (and in 1 MiB pieces), never
//! the whole file in memory. The threshold and part size can be lowered
//! (`artifacts.multipart_threshold_bytes`, `artifacts.multipart_part_bytes`)
//! so that the protocol can be exercised with small files.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use md5::{Digest, Md5};

/// The SDK's threshold: from this size on a file goes in parts.
pub const SDK_THRESHOLD: u64 = 2 << 30;
/// The SDK's part size.
pub const SDK_PART_SIZE: u64 = 100 << 20;
/// S3's most parts per upload.
pub const MAX_PARTS: u64 = 10_000;

/// When files go in parts and how large the parts are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartPolicy {
    /// Files of this size and more go in parts.
    pub threshold: u64,
    /// The size of a part (the last one is shorter).
    pub part_size: u64,
}

impl Default for PartPolicy {
    fn default() -> Self {
        PartPolicy {
            threshold: SDK_THRESHOLD,
            part_size: SDK_PART_SIZE,
        }
    }
}

/// One part of a file: its number (from 1), where it starts, its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    pub number: u64,
    pub offset: u64,
    pub len: u64,
}

impl PartPolicy {
    /// The part size for a file of `size` bytes (module documentation).
    pub fn part_size_for(&self, size: u64) -> u64 {
        let base = self.part_size.max(1);
        if size < base.saturating_mul(MAX_PARTS) {
            return base;
        }
        size.div_ceil(MAX_PARTS).div_ceil(4096) * 4096
    }

    /// The parts of a file of `size` bytes; `None` when it goes whole
    /// (under the threshold, or empty: core never splits an empty file).
    pub fn parts(&self, size: u64) -> Option<Vec<Part>> {
        if size == 0 || size < self.threshold {
            return None;
        }
        let step = self.part_size_for(size);
        Some(
            (0..size.div_ceil(step))
                .map(|i| Part {
                    number: i + 1,
                    offset: i * step,
                    len: step.min(size - i * step),
                })
                .collect(),
        )
    }
}

/// The MD5 (hex) of each part of the file at `path`, in order; one part
/// at a time, in 1 MiB pieces. A file shorter than its parts is an error
/// (it changed since it was measured).
pub fn hash_parts(path: &Path, parts: &[Part]) -> std::io::Result<Vec<String>> {
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut out = Vec::with_capacity(parts.len());
    for p in parts {
        f.seek(SeekFrom::Start(p.offset))?;
        let mut h = Md5::new();
        let mut left = p.len;
        while left > 0 {
            let want = buf.len().min(left as usize);
            let got = f.read(&mut buf[..want])?;
            if got == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!(
                        "{} ends inside part {} (offset {}, {} bytes short)",
                        path.display(),
                        p.number,
                        p.offset,
                        left
                    ),
                ));
            }
            h.update(&buf[..got]);
            left -= got as u64;
        }
        out.push(hex(&h.finalize()));
    }
    Ok(out)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex MD5 as base64 (`Content-MD5` of a part; core's `HexToB64`).
pub fn hex_to_b64(hex: &str) -> Option<String> {
    if hex.len() % 2 != 0 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect();
    Some(crate::sink::wandb::redact::base64(&bytes?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_cores() {
        let p = PartPolicy::default();
        assert_eq!(p.parts((2 << 30) - 1), None);
        assert_eq!(p.parts(0), None);
        let parts = p.parts(2 << 30).unwrap();
        assert_eq!(parts.len(), 21);
        assert_eq!(parts[20].len, (2 << 30) - 20 * (100 << 20));
        assert_eq!(parts[20].number, 21);
        // 10,000 parts of 100 MiB and more: larger parts, 4 KiB multiples.
        let huge = 100u64 << 40;
        let s = p.part_size_for(huge);
        assert_eq!(s % 4096, 0);
        assert!(huge.div_ceil(s) <= MAX_PARTS);
    }

    #[test]
    fn part_hashes_are_md5s() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abcdefghij").unwrap();
        let p = PartPolicy {
            threshold: 1,
            part_size: 4,
        };
        let parts = p.parts(10).unwrap();
        assert_eq!(parts.len(), 3);
        let h = hash_parts(&path, &parts).unwrap();
        assert_eq!(h[2], hex(&Md5::digest(b"ij")));
        assert_eq!(h[0], "e2fc714c4727ee9395f324cd2e7f331f"); // md5("abcd")
        assert_eq!(hex_to_b64(&h[0]).unwrap(), "4vxxTEcn7pOV8yTNLn8zHw==");
        std::fs::write(&path, b"abc").unwrap();
        assert!(hash_parts(&path, &parts).is_err());
    }
}
