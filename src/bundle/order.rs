//! Whether a verified bundle may be imported into a journal, given what
//! that journal already took from the same source.
//!
//! W&B gives each history line of a run the next offset in the order the
//! sink sends them, so rows must reach the importing journal in the order
//! they were logged: bundles from one source journal are taken in export
//! order. A bundle is identified twice over: by its id (the same bundle
//! again) and by its source journal and sequence numbers (the same rows in
//! another bundle, e.g. exported again after a crash lost the hand-over).
//! Rows already taken are skipped; rows older than those taken, or a
//! predecessor not taken yet, are refused.

use super::manifest::Manifest;
use crate::journal::{ImportRecord, SourceMark};

/// What to import of a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Rows up to this source sequence number are already here: skip them.
    pub skip_through: Option<u64>,
    /// Source rows missing before this bundle, accepted with `--allow-gap`.
    pub gap: Option<(u64, u64)>,
}

/// Decides for bundle `m`, given its own import record here (if any) and
/// how far its source journal has been imported here.
pub fn decide(
    m: &Manifest,
    already: Option<&ImportRecord>,
    source: Option<&SourceMark>,
    allow_gap: bool,
) -> Result<Plan, String> {
    if let Some(r) = already {
        return Err(format!(
            "bundle {} was already imported into this store ({}, as rows #{}..#{})",
            r.bundle_id,
            when(r.imported_at),
            r.local_first,
            r.local_last
        ));
    }
    let journal = &m.source.journal_id;
    let have = source.map_or(0, |s| s.last);
    if let Some(s) = source.filter(|s| m.seq.last <= s.last) {
        return Err(format!(
            "its rows #{}..#{} of journal {journal} (host {}) are already here: rows of that \
             journal were imported up to #{} (bundle {}). Bundles are imported in the order they \
             were exported; this one is older than one imported before",
            m.seq.first, m.seq.last, m.source.host, s.last, s.bundle_id
        ));
    }
    let mut gap = None;
    if let Some(p) = m.previous.as_ref().filter(|p| p.seq.last > have) {
        let (from, more) = match source {
            Some(_) => (have + 1, ""),
            None => (p.seq.first, " (and any exported before them)"),
        };
        let to = m.seq.first - 1;
        if !allow_gap {
            return Err(format!(
                "it follows bundle {} (rows #{}..#{} of journal {journal}, host {}), which has \
                 not been imported into this store: rows #{from}..#{to}{more} are missing. Import \
                 the bundles of that journal in the order they were exported (W&B history must \
                 follow the order rows were logged), or pass --allow-gap to import this one \
                 anyway and give up the missing rows",
                p.bundle_id, p.seq.first, p.seq.last, m.source.host
            ));
        }
        gap = Some((from, to));
    }
    let skip_through = source.and(Some(have)).filter(|&h| m.seq.first <= h);
    Ok(Plan { skip_through, gap })
}

/// A Unix time as RFC 3339 UTC, for messages.
fn when(secs: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs as i64)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("at {secs}"))
}

#[cfg(test)]
mod tests {
    use super::super::manifest::{FileEntry, Previous, SeqRange, Source, FORMAT, VERSION};
    use super::*;

    fn bundle(id: &str, first: u64, last: u64, previous: Option<(&str, u64, u64)>) -> Manifest {
        Manifest {
            format: FORMAT.into(),
            version: VERSION,
            bundle_id: id.into(),
            created: 0,
            source: Source {
                host: "h".into(),
                store: "/s".into(),
                journal_id: "J".into(),
            },
            seq: SeqRange { first, last },
            previous: previous.map(|(id, first, last)| Previous {
                bundle_id: id.into(),
                seq: SeqRange { first, last },
            }),
            rows: last - first + 1,
            runs: vec![],
            files: vec![FileEntry {
                path: "rows.bin".into(),
                bytes: 0,
                sha256: "0".repeat(64),
            }],
            artifacts: vec![],
        }
    }

    fn mark(last: u64) -> SourceMark {
        SourceMark {
            last,
            bundle_id: "B1".into(),
        }
    }

    const TAKE: Plan = Plan {
        skip_through: None,
        gap: None,
    };

    #[test]
    fn bundles_are_taken_in_export_order() {
        let b1 = bundle("B1", 1, 100, None);
        let b2 = bundle("B2", 101, 200, Some(("B1", 1, 100)));
        let b3 = bundle("B3", 201, 300, Some(("B2", 101, 200)));
        assert_eq!(decide(&b1, None, None, false), Ok(TAKE));
        let err = decide(&b2, None, None, false).unwrap_err();
        assert!(
            err.contains("follows bundle B1") && err.contains("#1..#100"),
            "{err}"
        );
        assert_eq!(decide(&b2, None, Some(&mark(100)), false), Ok(TAKE));
        let err = decide(&b3, None, Some(&mark(100)), false).unwrap_err();
        assert!(err.contains("rows #101..#200 are missing"), "{err}");
        assert_eq!(
            decide(&b3, None, Some(&mark(100)), true).unwrap().gap,
            Some((101, 200))
        );
        let err = decide(&b1, None, Some(&mark(300)), true).unwrap_err();
        assert!(err.contains("older"), "{err}");
    }

    #[test]
    fn rows_already_here_are_skipped_and_a_bundle_is_taken_once() {
        // Exported again after the hand-over was lost: 1..150, no predecessor.
        let again = bundle("B1b", 1, 150, None);
        assert_eq!(
            decide(&again, None, Some(&mark(100)), false),
            Ok(Plan {
                skip_through: Some(100),
                gap: None
            })
        );
        // The cursor moved without an export (rows uploaded from there).
        let later = bundle("B5", 500, 600, Some(("B1", 1, 100)));
        assert_eq!(decide(&later, None, Some(&mark(100)), false), Ok(TAKE));
        let record = ImportRecord {
            bundle_id: "B1".into(),
            source_host: "h".into(),
            source_store: "/s".into(),
            source_journal: "J".into(),
            first: 1,
            last: 100,
            rows: 100,
            local_first: 7,
            local_last: 106,
            imported_at: 0,
        };
        let err = decide(&bundle("B1", 1, 100, None), Some(&record), None, true).unwrap_err();
        assert!(
            err.contains("already imported") && err.contains("1970-01-01"),
            "{err}"
        );
    }
}
