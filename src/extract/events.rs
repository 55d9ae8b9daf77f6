//! Rows from the records of TensorBoard event files.
//!
//! An event file needs no rules: each `Event` already says its step, wall
//! time and scalars by tag. What is left to decide is whose run it is (the
//! run id from the file's path) and what a metric is called (the tag, with
//! the sub-directory a writer such as `add_scalars` put it in: see
//! `source::tfevents::metric_name`).

use std::collections::BTreeMap;
use std::path::Path;

use regex::Regex;

use super::{Explanation, Outcome};
use crate::config::{SourceConfig, SourceKind};
use crate::journal::FileState;
use crate::row::{Origin, Row};
use crate::source::tfevents::{self, Plugins};
use crate::stats::Counters;

/// Where a run id is in a path when a source does not say.
pub const DEFAULT_RUN_ID_FROM_PATH: &str = "runs/(?P<run_id>[^/]+)/";

/// The writer name the agent's own TensorBoard sink puts in the first
/// record of its files, by which they are told from a worker's.
use crate::format::tensorboard_proto::WRITER as OWN_WRITER;

/// How the records of each `tfevents` (and `document`) source are read.
#[derive(Debug)]
pub struct Readers {
    by_source: BTreeMap<String, EventReader>,
    fallback: EventReader,
    /// Per followed event file (by checkpoint id): what its earlier
    /// records taught.
    files: std::collections::HashMap<u64, FileMemo>,
}

/// What the reader keeps about one event file between its records.
#[derive(Debug, Default)]
struct FileMemo {
    /// Which plugin owns each tag seen so far (see `tfevents::Plugins`).
    plugins: Plugins,
    /// The path the run below was found in, and the run id with the end of
    /// the run's directory in it: a file holds thousands of records, and
    /// matching the path's regex for each was a seventh of the reading
    /// time (scripts/bench-sources).
    run: Option<(String, Option<(String, usize)>)>,
}

/// One source's reading settings.
#[derive(Debug)]
pub struct EventReader {
    run_id: Regex,
}

/// What one event record gave.
#[derive(Debug)]
pub enum EventOutcome {
    Rows(Vec<Row>),
    /// The file is one of the agent's own: stop reading it.
    OwnFile,
}

impl Readers {
    pub fn new(sources: &[SourceConfig]) -> Result<Readers, String> {
        let mut by_source = BTreeMap::new();
        for s in sources {
            if s.kind == SourceKind::Lines {
                continue;
            }
            let reader = EventReader::new(s.run_id_from_path.as_deref())
                .map_err(|e| format!("sources {:?}: {e}", s.name))?;
            by_source.insert(s.name.clone(), reader);
        }
        Ok(Readers {
            by_source,
            fallback: EventReader::new(None).expect("the default regex compiles"),
            files: Default::default(),
        })
    }

    /// The reader of the source named `name` (a checkpoint from before the
    /// source was renamed gets the default).
    pub fn get(&self, name: &str) -> &EventReader {
        self.by_source.get(name).unwrap_or(&self.fallback)
    }

    /// The rows of one event record of the file whose checkpoint is
    /// `state`; the file's namespace is fixed in `state` on its first read.
    pub fn event(
        &mut self,
        state: &mut FileState,
        offset: u64,
        payload: &[u8],
        counters: &mut Counters,
    ) -> EventOutcome {
        let reader = self.by_source.get(&state.source).unwrap_or(&self.fallback);
        let memo = self.files.entry(state.id).or_default();
        reader.event(state, offset, payload, memo, counters)
    }

    /// The run an event file belongs to, by its path.
    pub fn run_of(&self, state: &FileState) -> Option<String> {
        let reader = self.by_source.get(&state.source).unwrap_or(&self.fallback);
        reader.run_of(&state.path).map(|(run, _)| run.to_string())
    }

    /// What [`event`](Self::event) makes of one record, and if no row,
    /// why: the record is read exactly as the agent reads it (same plugin
    /// memory, same run id and naming), then, when it gave no row, decoded
    /// once more to say what it holds. An event file the agent wrote
    /// itself gets `state.ignored` set, as the ingest loop sets it.
    pub fn explain(
        &mut self,
        state: &mut FileState,
        offset: u64,
        payload: &[u8],
        counters: &mut Counters,
    ) -> Explanation {
        let before = *counters;
        let rows = match self.event(state, offset, payload, counters) {
            EventOutcome::Rows(rows) => rows,
            EventOutcome::OwnFile => {
                state.ignored = Some("written by mosaic-shipper".into());
                return skipped(
                    "an event file written by mosaic-shipper itself (its first record says so): \
                     never read"
                        .into(),
                );
            }
        };
        if !rows.is_empty() {
            return Explanation {
                rule: None,
                outcome: Outcome::Rows(rows),
            };
        }
        let decoded = match tfevents::decode(payload) {
            Ok(d) => d,
            Err(e) => {
                return Explanation {
                    rule: None,
                    outcome: Outcome::Invalid(e.to_string()),
                }
            }
        };
        if counters.rejected > before.rejected {
            return Explanation {
                rule: None,
                outcome: Outcome::Rejected(format!(
                    "step {} holds scalars, but the file's path has no run id (the source's \
                     run_id_from_path, default {DEFAULT_RUN_ID_FROM_PATH:?})",
                    decoded.step
                )),
            };
        }
        let plugins = &mut self.files.entry(state.id).or_default().plugins;
        let held: Vec<String> = tfevents::held(&decoded, plugins)
            .iter()
            .map(ToString::to_string)
            .collect();
        skipped(match decoded.content {
            tfevents::Content::Summary(_) => {
                format!("step {}: {} (not a scalar)", decoded.step, held.join(", "))
            }
            _ => held.join(", "),
        })
    }

    /// Forgets the per-file memory of a file no longer followed.
    pub fn forget(&mut self, id: u64) {
        self.files.remove(&id);
    }
}

fn skipped(why: String) -> Explanation {
    Explanation {
        rule: None,
        outcome: Outcome::Skipped(why),
    }
}

impl EventReader {
    fn new(run_id_from_path: Option<&str>) -> Result<EventReader, String> {
        let re = super::patterns::compile(run_id_from_path.unwrap_or(DEFAULT_RUN_ID_FROM_PATH))
            .map_err(|e| format!("run_id_from_path: {e}"))?;
        if !re.capture_names().any(|n| n == Some("run_id")) {
            return Err("run_id_from_path needs a named group (?P<run_id>...)".into());
        }
        Ok(EventReader { run_id: re })
    }

    /// The run id in `path` and where the run's directory ends in it.
    pub fn run_of<'p>(&self, path: &'p str) -> Option<(&'p str, usize)> {
        let caps = self.run_id.captures(path)?;
        let m = caps.name("run_id")?;
        Some((m.as_str(), caps.get(0).map_or(m.end(), |all| all.end())))
    }

    /// [`run_of`](Self::run_of), remembered in `memo` while the file's
    /// path stays the same.
    fn run_of_memo<'m>(&self, path: &str, memo: &'m mut FileMemo) -> Option<(&'m str, usize)> {
        if memo.run.as_ref().map_or(true, |(p, _)| p != path) {
            let run = self.run_of(path).map(|(r, end)| (r.to_string(), end));
            memo.run = Some((path.to_string(), run));
        }
        let (_, run) = memo.run.as_ref().expect("just set");
        run.as_ref().map(|(r, end)| (r.as_str(), *end))
    }

    /// The rows of one event record of the file whose checkpoint is `state`.
    fn event(
        &self,
        state: &mut FileState,
        offset: u64,
        payload: &[u8],
        memo: &mut FileMemo,
        counters: &mut Counters,
    ) -> EventOutcome {
        let path = state.path.as_str();
        let event = match tfevents::decode(payload) {
            Ok(e) => e,
            Err(e) => {
                counters.invalid_json += 1;
                tracing::warn!(file = path, offset, error = %e, "skipping TensorBoard record");
                return EventOutcome::Rows(Vec::new());
            }
        };
        if event.writer.as_deref() == Some(OWN_WRITER) {
            return EventOutcome::OwnFile;
        }
        let (scalars, ignored) = memo.plugins.scalars(&event);
        if scalars.is_empty() {
            // Headers, graphs, images, histograms, text: not metrics.
            counters.unmatched += 1;
            return EventOutcome::Rows(Vec::new());
        }
        counters.skipped_values += ignored as u64;
        let Some((run_id, run_end)) = self.run_of_memo(path, memo) else {
            counters.rejected += 1;
            tracing::warn!(file = path, offset, "skipping TensorBoard record: no run id in the file's path (sources.run_id_from_path)");
            return EventOutcome::Rows(Vec::new());
        };
        let namespace = state.namespace.get_or_insert_with(|| {
            // The run's TensorBoard root: the directory right below the
            // run's (`tensorboard/`), under which writers' directories lie.
            let rest = &path[run_end..];
            let root = match rest.find('/') {
                Some(i) => &path[..run_end + i],
                None => &path[..run_end],
            };
            tfevents::namespace(Path::new(root), Path::new(path), tfevents::holds_event_file)
        });
        let values = scalars
            .into_iter()
            .map(|(tag, v)| (tfevents::qualified(namespace, tag), v))
            .collect();
        counters.rows += 1;
        EventOutcome::Rows(vec![Row {
            run_id: run_id.to_string(),
            step: event.step,
            wall_time: event.wall_time,
            values,
            event: None,
            origin: Origin::Tfevents,
        }])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::tensorboard_proto::{event, summary_value, Event, Summary, SummaryValue};
    use prost::Message;

    fn scalar(step: i64) -> Vec<u8> {
        Event {
            wall_time: 1.0,
            step,
            what: Some(event::What::Summary(Summary {
                value: vec![SummaryValue {
                    tag: "loss".into(),
                    value: Some(summary_value::Value::SimpleValue(0.5)),
                    metadata: None,
                }],
            })),
            source_metadata: None,
        }
        .encode_to_vec()
    }

    fn run_ids(readers: &mut Readers, state: &mut FileState, step: i64) -> Vec<String> {
        let mut counters = Counters::default();
        match readers.event(state, 0, &scalar(step), &mut counters) {
            EventOutcome::Rows(rows) => rows.into_iter().map(|r| r.run_id).collect(),
            EventOutcome::OwnFile => panic!("not an own file"),
        }
    }

    /// The run id is remembered per file, but not past a change of the
    /// file's path.
    #[test]
    fn the_run_id_follows_the_files_path() {
        let mut readers = Readers::new(&[]).unwrap();
        let mut state = FileState {
            id: 7,
            path: "/x/runs/A/tensorboard/events.out.tfevents.1".into(),
            ..FileState::default()
        };
        assert_eq!(run_ids(&mut readers, &mut state, 1), ["A"]);
        assert_eq!(run_ids(&mut readers, &mut state, 2), ["A"]);
        state.path = "/x/runs/B/tensorboard/events.out.tfevents.1".into();
        assert_eq!(run_ids(&mut readers, &mut state, 3), ["B"]);
        state.path = "/x/elsewhere/events.out.tfevents.1".into();
        assert!(run_ids(&mut readers, &mut state, 4).is_empty());
        readers.forget(7);
        assert!(readers.files.is_empty());
    }
}
