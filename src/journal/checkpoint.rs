//! The checkpoint of a followed file: what the journal stores with every
//! commit of rows, so that a restart resumes at the exact byte.
//!
//! The journal owns this type because it is what it stores; the follower
//! (`source::follow`) fills it in and the tests read it back.

use serde::{Deserialize, Serialize};

use crate::stats::Counters;

/// How a source's files are cut into records.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// Text files of lines, appended to and rotated: JSON objects go to
    /// the JSON rules, other lines to the text rules.
    #[default]
    Lines,
    /// TensorBoard event files: TFRecord frames of `Event` protos.
    Tfevents,
    /// Whole JSON documents, read again whenever they change.
    Document,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Lines => "lines",
            SourceKind::Tfevents => "tfevents",
            SourceKind::Document => "document",
        }
    }
}

/// The checkpoint of one followed file, as committed in the journal.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FileState {
    pub id: u64,
    /// Where the file was last seen (it moves on rotation).
    pub path: String,
    pub dev: u64,
    pub ino: u64,
    /// Fingerprint of the first `fp_len` bytes (crc32c).
    pub fp_len: u32,
    pub fp: u32,
    /// Byte offset just past the last complete line taken.
    pub offset: u64,
    /// The first `fp_len` bytes themselves. A copytruncate copy can be
    /// shorter than the fingerprinted prefix (the file grew between the
    /// copy and our look); it is recognised by comparing what both have.
    #[serde(default, with = "hex_bytes")]
    pub head: Vec<u8>,
    /// What was read from this file.
    #[serde(default)]
    pub counters: Counters,
    /// The source that found the file (its name), and so how it is read.
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub kind: SourceKind,
    /// Modification time (ns since the epoch) when a document was last
    /// read: a document rewritten in place to the same length is read
    /// again when this changes.
    #[serde(default)]
    pub mtime_ns: i64,
    /// Why the file is followed but not read (e.g. an event file the
    /// agent wrote itself): its identity is kept so it is not taken for
    /// a new file, its bytes are left alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignored: Option<String>,
    /// An event file's metric namespace (its writer's sub-directory, as
    /// W&B's TensorBoard sync names it), fixed when it was first read so
    /// that names do not change when other files come and go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// What extraction carries from one line of the file to the next (the
    /// latest step, run id, config digest), as of `offset`.
    #[serde(default)]
    pub memo: super::Memo,
}

/// Serde for byte strings as hex: readable in the JSON checkpoint.
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    const DIGITS: &[u8; 16] = b"0123456789abcdef";

    // Every commit serialises the checkpoint of each file it moves, head
    // (up to a kilobyte) included: no allocation per byte.
    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        let mut hex = String::with_capacity(bytes.len() * 2);
        for b in bytes {
            hex.push(DIGITS[usize::from(b >> 4)] as char);
            hex.push(DIGITS[usize::from(b & 15)] as char);
        }
        s.serialize_str(&hex)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let hex = String::deserialize(d)?;
        if hex.len() % 2 != 0 {
            return Err(serde::de::Error::custom("odd-length hex"));
        }
        let digit = |c: u8| -> Result<u8, D::Error> {
            match c {
                b'0'..=b'9' => Ok(c - b'0'),
                b'a'..=b'f' => Ok(c - b'a' + 10),
                b'A'..=b'F' => Ok(c - b'A' + 10),
                _ => Err(serde::de::Error::custom(format!(
                    "not a hex digit: {:?}",
                    c as char
                ))),
            }
        };
        hex.as_bytes()
            .chunks_exact(2)
            .map(|pair| Ok(digit(pair[0])? << 4 | digit(pair[1])?))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Head(#[serde(with = "super::hex_bytes")] Vec<u8>);

    #[test]
    fn heads_are_hex_both_ways_and_bad_hex_is_refused() {
        let all: Vec<u8> = (0..=255).collect();
        let json = serde_json::to_string(&Head(all.clone())).unwrap();
        assert!(
            json.starts_with("\"000102") && json.ends_with("fdfeff\""),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<Head>(&json).unwrap(), Head(all));
        assert_eq!(
            serde_json::from_str::<Head>("\"0A\"").unwrap(),
            Head(vec![10])
        );
        assert!(
            serde_json::from_str::<Head>("\"abc\"").is_err(),
            "odd length"
        );
        assert!(serde_json::from_str::<Head>("\"zz\"").is_err(), "not hex");
    }
}
