//! Rows to event records.
//!
//! A row becomes one `Event` (its wall time and step) whose `Summary`
//! holds one value per metric, each a rank-0 `DT_FLOAT` tensor with the
//! scalars plugin's metadata: exactly what TensorBoard's own
//! `tensorboard.plugins.scalar.summary_v2.scalar_pb` (and `tf.summary.scalar`)
//! write, so that readers need no legacy conversion. The encoding is a pure
//! function of the row: rewriting a row after a crash produces the same
//! bytes at the same offset, so a live reader that already saw them is
//! never left in the middle of a record.

use prost::Message;

use crate::format::tensorboard_proto::{
    event, summary_value, Event, PluginData, SourceMetadata, Summary, SummaryMetadata,
    SummaryValue, TensorProto, TensorShapeProto, DT_FLOAT, FILE_VERSION, SCALARS_PLUGIN, WRITER,
};
use crate::format::tfrecord;
use crate::row::Row;

/// Encodes rows into framed records, reusing its buffers: after the first
/// rows it allocates nothing per row, which matters at a million rows.
pub struct Encoder {
    event: Event,
    scratch: Vec<u8>,
}

/// One scalar value in the form [`Encoder`] writes, with `value` as `f32`
/// (TensorBoard's scalar readers accept `DT_FLOAT` tensors only).
pub fn scalar_value(tag: &str, value: f64) -> SummaryValue {
    SummaryValue {
        tag: tag.to_string(),
        value: Some(summary_value::Value::Tensor(TensorProto {
            dtype: DT_FLOAT,
            tensor_shape: Some(TensorShapeProto::default()),
            float_val: vec![value as f32],
            ..Default::default()
        })),
        metadata: Some(SummaryMetadata {
            plugin_data: Some(PluginData {
                plugin_name: SCALARS_PLUGIN.to_string(),
                // ScalarPluginData { version: 0 } serializes to no bytes.
                content: Vec::new(),
            }),
            ..Default::default()
        }),
    }
}

impl Default for Encoder {
    fn default() -> Self {
        Encoder {
            event: Event {
                wall_time: 0.0,
                step: 0,
                what: Some(event::What::Summary(Summary::default())),
                source_metadata: None,
            },
            scratch: Vec::with_capacity(512),
        }
    }
}

impl Encoder {
    /// Appends the file-version record that starts every event file.
    pub fn file_version(&mut self, out: &mut Vec<u8>, wall_time: f64) {
        let e = Event {
            wall_time,
            step: 0,
            what: Some(event::What::FileVersion(FILE_VERSION.to_string())),
            source_metadata: Some(SourceMetadata {
                writer: WRITER.to_string(),
            }),
        };
        self.scratch.clear();
        e.encode(&mut self.scratch).expect("a Vec grows as needed");
        tfrecord::append_record(out, &self.scratch);
    }

    /// Appends the record of `row`; a row without values writes nothing.
    pub fn row(&mut self, out: &mut Vec<u8>, row: &Row) {
        if row.values.is_empty() {
            return;
        }
        self.event.wall_time = row.wall_time;
        self.event.step = row.step;
        let Some(event::What::Summary(summary)) = &mut self.event.what else {
            unreachable!("the reused event always holds a summary")
        };
        let values = &mut summary.value;
        // Reuse the value slots: only the tag text and the float change.
        values.truncate(row.values.len());
        while values.len() < row.values.len() {
            values.push(scalar_value("", 0.0));
        }
        for (slot, (tag, &value)) in values.iter_mut().zip(&row.values) {
            slot.tag.clear();
            slot.tag.push_str(tag);
            if let Some(summary_value::Value::Tensor(t)) = &mut slot.value {
                t.float_val[0] = value as f32;
            }
        }
        self.scratch.clear();
        self.event
            .encode(&mut self.scratch)
            .expect("a Vec grows as needed");
        tfrecord::append_record(out, &self.scratch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn row(values: &[(&str, f64)]) -> Row {
        Row {
            run_id: "r".into(),
            step: 3,
            wall_time: 1.5,
            values: values
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect::<BTreeMap<_, _>>(),
            event: None,
            origin: Default::default(),
        }
    }

    #[test]
    fn row_encodes_as_scalar_pb_does() {
        // Bytes of event_pb2.Event(wall_time=1.5, step=3,
        // summary=summary_v2.scalar_pb("charts/SPS", 1234.5)).SerializeToString()
        // from tensorboard 2.21.0.
        let want = "09000000000000f83f10032a270a250a0a6368617274732f535053420a080112002a0400509a444a0b0a090a077363616c617273";
        let mut out = Vec::new();
        Encoder::default().row(&mut out, &row(&[("charts/SPS", 1234.5)]));
        let records = tfrecord::read_records(&out).unwrap();
        let hex: String = records[0].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, want);
    }

    #[test]
    fn reused_buffers_give_the_same_bytes_as_fresh_ones() {
        let rows = [
            row(&[("a", 1.0), ("b", f64::NAN), ("c", -0.0)]),
            row(&[("x", f64::INFINITY)]),
            row(&[]),
            row(&[("a", 1e300), ("long/tag/name/here", 2.5e-4)]),
        ];
        let mut reused = Encoder::default();
        let mut a = Vec::new();
        for r in &rows {
            reused.row(&mut a, r);
        }
        let mut b = Vec::new();
        for r in &rows {
            Encoder::default().row(&mut b, r);
        }
        assert_eq!(a, b);
        let records = tfrecord::read_records(&a).unwrap();
        assert_eq!(records.len(), 3, "the empty row writes nothing");
        let e = Event::decode(records[2]).unwrap();
        let Some(event::What::Summary(s)) = e.what else {
            panic!("{e:?}")
        };
        assert_eq!(s.value.len(), 2);
        assert_eq!(s.value[1].tag, "long/tag/name/here");
        assert_eq!(
            s.value[0],
            scalar_value("a", f64::INFINITY),
            "1e300 is inf as f32"
        );
    }
}
