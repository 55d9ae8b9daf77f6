//! TensorBoard event files that workers write, read as scalar points.
//!
//! A file is framed with [`crate::format::tfrecord::split`], each record is
//! decoded with [`decode`], and [`Plugins`] (one per file) says which
//! decoded values are scalars; [`metric_name`] names them as W&B's own
//! TensorBoard sync does. All of it is pure but [`metric_name`] (which
//! lists directories), so the file follower owns every I/O decision.
//! Format facts and their sources: `docs/tensorboard-format.md`.

mod event;
mod naming;

use std::collections::HashMap;

pub use event::{decode, Content, Data, DecodeError, Decoded, Value};
pub use naming::{holds_event_file, metric_name, metric_name_with, namespace, qualified};

use crate::format::tensorboard_proto::SCALARS_PLUGIN;

/// Per-file memory of the plugin that owns each tag. Writers put a value's
/// metadata on the first value of a tag only (`summary.proto`: "only the
/// first value ... is required to have metadata"; W&B's
/// `tfeventconverter.go`, `pluginNameByTag`), so whether a later tensor is
/// a scalar depends on what came before in the same file.
///
/// A one-element float tensor whose tag has no known plugin counts as a
/// scalar: a reader that resumes at a committed offset has not seen the
/// tag's first value, and no TensorBoard plugin but `scalars` writes
/// one-element float tensors. A tag known to belong to another plugin is
/// not a scalar. `simple_value` is always a scalar, as in TensorBoard
/// (`data_compat.py`, `_migrate_scalar_value`).
#[derive(Debug, Default, Clone)]
pub struct Plugins {
    by_tag: HashMap<String, String>,
}

impl Plugins {
    /// The scalar that `v` holds, remembering its plugin for later values
    /// of the same tag. `None` for non-scalars and for an empty tag (W&B
    /// drops those: `withNamespace`, "empty key").
    pub fn scalar(&mut self, v: &Value) -> Option<f64> {
        if let Some(p) = &v.plugin {
            if self.by_tag.get(&v.tag) != Some(p) {
                self.by_tag.insert(v.tag.clone(), p.clone());
            }
        }
        self.value_of(v)
    }

    /// The scalar that `v` holds given what is known of its tag so far.
    fn value_of(&self, v: &Value) -> Option<f64> {
        if v.tag.is_empty() {
            return None;
        }
        let plugin = v.plugin.as_deref().or_else(|| self.plugin_of(&v.tag));
        match v.data {
            Data::Simple(x) => Some(f64::from(x)),
            Data::Tensor(x) if plugin.map_or(true, |p| p == SCALARS_PLUGIN) => Some(x),
            Data::Tensor(_) | Data::Image | Data::Histogram | Data::Audio | Data::Other => None,
        }
    }

    /// The plugin that owns `tag`, as far as this file has said.
    pub fn plugin_of(&self, tag: &str) -> Option<&str> {
        self.by_tag.get(tag).map(String::as_str)
    }

    /// The scalars of a decoded record as `(tag, value)` in file order, and
    /// how many of its summary values were not scalars.
    pub fn scalars<'a>(&mut self, d: &'a Decoded) -> (Vec<(&'a str, f64)>, usize) {
        let Content::Summary(values) = &d.content else {
            return (Vec::new(), 0);
        };
        let mut out = Vec::with_capacity(values.len());
        for v in values {
            if let Some(x) = self.scalar(v) {
                out.push((v.tag.as_str(), x));
            }
        }
        let ignored = values.len() - out.len();
        (out, ignored)
    }
}

/// What a record that holds no scalar holds, for `explain` and the
/// "no rows" warning: one short description per part ("header", "histogram
/// `weights`", ...). Read after [`Plugins::scalars`] has seen the record,
/// so that a tag's plugin is known.
pub fn held(d: &Decoded, plugins: &Plugins) -> Vec<Held> {
    match &d.content {
        Content::FileVersion(v) => vec![Held {
            what: "header".into(),
            tag: Some(v.clone()),
        }],
        Content::Other => vec![Held {
            what: "graph, session log or run metadata".into(),
            tag: None,
        }],
        Content::Summary(values) if values.is_empty() => vec![Held {
            what: "empty summary".into(),
            tag: None,
        }],
        Content::Summary(values) => values
            .iter()
            .filter(|v| plugins.value_of(v).is_none())
            .map(|v| Held {
                what: kind_of(v, plugins),
                tag: Some(v.tag.clone()),
            })
            .collect(),
    }
}

/// One non-scalar part of a record: what it is and its tag (for a header,
/// the file version).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub what: String,
    pub tag: Option<String>,
}

impl std::fmt::Display for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.tag, self.what.as_str()) {
            (Some(v), "header") => write!(f, "header ({v})"),
            (Some(t), _) if t.is_empty() => write!(f, "{} with an empty tag", self.what),
            (Some(t), _) => write!(f, "{} {t:?}", self.what),
            (None, _) => f.write_str(&self.what),
        }
    }
}

/// What a value that is not a scalar is.
fn kind_of(v: &Value, plugins: &Plugins) -> String {
    let plugin = v.plugin.as_deref().or_else(|| plugins.plugin_of(&v.tag));
    match (v.data, plugin) {
        (Data::Image, _) | (_, Some("images")) => "image".into(),
        (Data::Histogram, _) | (_, Some("histograms")) => "histogram".into(),
        (Data::Audio, _) | (_, Some("audio")) => "audio".into(),
        (_, Some("text")) => "text".into(),
        (_, Some(p)) if p != SCALARS_PLUGIN => format!("{p} plugin value"),
        // Only an empty tag keeps a scalar from being one.
        (Data::Simple(_) | Data::Tensor(_), _) => "scalar".into(),
        _ => "tensor that is not one number".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(tag: &str, plugin: Option<&str>, data: Data) -> Value {
        Value {
            tag: tag.into(),
            plugin: plugin.map(Into::into),
            data,
        }
    }

    #[test]
    fn metadata_on_the_first_value_decides_later_ones() {
        let mut p = Plugins::default();
        assert_eq!(
            p.scalar(&v("a", Some("scalars"), Data::Tensor(1.0))),
            Some(1.0)
        );
        assert_eq!(p.scalar(&v("a", None, Data::Tensor(2.0))), Some(2.0));
        // A tag of another plugin whose later values carry no metadata.
        assert_eq!(p.scalar(&v("h", Some("histograms"), Data::Other)), None);
        assert_eq!(p.scalar(&v("h", None, Data::Tensor(3.0))), None);
        // Unknown tag (resumed mid-file): a scalar.
        assert_eq!(p.scalar(&v("new", None, Data::Tensor(4.0))), Some(4.0));
        assert_eq!(
            p.scalar(&v("s", Some("text"), Data::Simple(5.0))),
            Some(5.0)
        );
        assert_eq!(p.scalar(&v("", None, Data::Simple(5.0))), None);
        let nan = p.scalar(&v("n", None, Data::Simple(f32::NAN))).unwrap();
        assert!(nan.is_nan());
    }

    #[test]
    fn scalars_of_a_record_and_the_ignored_count() {
        let d = Decoded {
            wall_time: 1.0,
            step: 2,
            content: Content::Summary(vec![
                v("a", None, Data::Simple(1.5)),
                v("img", Some("images"), Data::Other),
                v("b", Some("scalars"), Data::Tensor(-0.5)),
            ]),
            writer: None,
        };
        let mut p = Plugins::default();
        assert_eq!(p.scalars(&d), (vec![("a", 1.5), ("b", -0.5)], 1));
        let header = Decoded {
            wall_time: 1.0,
            step: 0,
            content: Content::FileVersion("brain.Event:2".into()),
            writer: None,
        };
        assert_eq!(p.scalars(&header), (vec![], 0));
    }

    #[test]
    fn what_a_record_holds_besides_scalars() {
        let d = Decoded {
            wall_time: 1.0,
            step: 2,
            content: Content::Summary(vec![
                v("a", None, Data::Simple(1.5)),
                v("w", None, Data::Histogram),
                v("img", None, Data::Image),
                v("h2", Some("histograms"), Data::Other),
                v("t", Some("text"), Data::Other),
                v("pr", Some("pr_curves"), Data::Other),
                v("m", None, Data::Other),
                v("", None, Data::Simple(1.0)),
            ]),
            writer: None,
        };
        let mut p = Plugins::default();
        p.scalars(&d);
        // A later tensor of a tag whose plugin was said earlier.
        let later = Decoded {
            content: Content::Summary(vec![v("h2", None, Data::Tensor(1.0))]),
            ..d.clone()
        };
        let said =
            |d: &Decoded| -> Vec<String> { held(d, &p).iter().map(ToString::to_string).collect() };
        assert_eq!(
            said(&d),
            [
                r#"histogram "w""#,
                r#"image "img""#,
                r#"histogram "h2""#,
                r#"text "t""#,
                r#"pr_curves plugin value "pr""#,
                r#"tensor that is not one number "m""#,
                "scalar with an empty tag",
            ]
        );
        assert_eq!(said(&later), [r#"histogram "h2""#]);
        let header = Decoded {
            content: Content::FileVersion("brain.Event:2".into()),
            ..d
        };
        assert_eq!(said(&header), ["header (brain.Event:2)"]);
    }
}
