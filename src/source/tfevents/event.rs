//! One TFRecord payload (a serialized `Event`) to what it holds.
//!
//! Workers write scalars in two forms, and both are read:
//! - TF 1.x `simple_value` (an f32): torch's `SummaryWriter.add_scalar`
//!   (CleanRL, XuanCe) and tensorboardX's `add_scalar`/`add_scalars`
//!   (Ray's `TBXLoggerCallback`);
//! - a one-element floating-point tensor with the `scalars` plugin's
//!   metadata: `tf.summary.scalar`, TensorBoard's own
//!   `summary_v2.scalar_pb` and this crate's sink. The element is in
//!   `float_val`/`double_val`/`half_val` or in `tensor_content`
//!   (little-endian), by `dtype` (`DT_FLOAT`, `DT_DOUBLE`, `DT_HALF`).
//!
//! Decoding is per record and pure; which tensors are scalars also
//! depends on earlier records of the file (metadata may be on the first
//! value of a tag only), which [`super::Plugins`] remembers.

use prost::Message;

use crate::format::tensorboard_proto::{
    event, summary_value, Event, TensorProto, DT_DOUBLE, DT_FLOAT, DT_HALF,
};

/// One decoded event record.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// Seconds since the Unix epoch, as the writer stamped it.
    pub wall_time: f64,
    pub step: i64,
    pub content: Content,
    /// The program that wrote the file, from the header record's
    /// `source_metadata` (TensorBoard's writer and the agent's own set it):
    /// how the agent tells its own event files from a worker's.
    pub writer: Option<String>,
}

/// What an event record holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    /// The header record that starts every event file (`"brain.Event:2"`).
    FileVersion(String),
    /// A summary: the values logged at one step, in file order.
    Summary(Vec<Value>),
    /// Anything else: graph defs, session logs, run metadata.
    Other,
}

/// One value of a summary.
#[derive(Debug, Clone, PartialEq)]
pub struct Value {
    pub tag: String,
    /// The plugin named by this value's metadata, if it carries any.
    pub plugin: Option<String>,
    pub data: Data,
}

/// The payload of a summary value, as far as scalars are concerned.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Data {
    /// `simple_value`: always a scalar.
    Simple(f32),
    /// A one-element `DT_FLOAT`/`DT_DOUBLE`/`DT_HALF` tensor: a scalar
    /// unless its series belongs to a plugin other than `scalars`.
    Tensor(f64),
    /// A TF 1.x image (`add_image`): not a scalar.
    Image,
    /// A TF 1.x histogram (`add_histogram`): not a scalar.
    Histogram,
    /// A TF 1.x audio clip (`add_audio`): not a scalar.
    Audio,
    /// Tensors that are not one-element floats (text, TF 2 histograms and
    /// images: their plugin says which), or no value at all.
    Other,
}

/// Why a payload is not an event.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("record is not a tensorflow Event protobuf: {0}")]
    Proto(#[from] prost::DecodeError),
}

/// Decodes one TFRecord payload. Non-finite values are kept.
pub fn decode(payload: &[u8]) -> Result<Decoded, DecodeError> {
    let e = Event::decode(payload)?;
    let writer = e
        .source_metadata
        .map(|m| m.writer)
        .filter(|w| !w.is_empty());
    let content = match e.what {
        Some(event::What::FileVersion(v)) => Content::FileVersion(v),
        Some(event::What::Summary(s)) => Content::Summary(
            s.value
                .into_iter()
                .map(|v| Value {
                    plugin: v
                        .metadata
                        .and_then(|m| m.plugin_data)
                        .map(|p| p.plugin_name)
                        .filter(|n| !n.is_empty()),
                    data: match &v.value {
                        Some(summary_value::Value::SimpleValue(x)) => Data::Simple(*x),
                        Some(summary_value::Value::Tensor(t)) => {
                            tensor_scalar(t).map_or(Data::Other, Data::Tensor)
                        }
                        Some(summary_value::Value::Image(_)) => Data::Image,
                        Some(summary_value::Value::Histo(_)) => Data::Histogram,
                        Some(summary_value::Value::Audio(_)) => Data::Audio,
                        None => Data::Other,
                    },
                    tag: v.tag,
                })
                .collect(),
        ),
        None => Content::Other,
    };
    Ok(Decoded {
        wall_time: e.wall_time,
        step: e.step,
        content,
        writer,
    })
}

/// The element of a one-element floating-point tensor. One element, not
/// only rank 0, as W&B's reader accepts (`core/internal/tensorboard/
/// tensor.go`, `Scalar`: "exactly one value"); TensorBoard's writers
/// always write rank 0.
fn tensor_scalar(t: &TensorProto) -> Option<f64> {
    let dims = t.tensor_shape.as_ref().map_or(&[][..], |s| &s.dim[..]);
    if !dims.iter().all(|d| d.size == 1) {
        return None;
    }
    let content = &t.tensor_content[..];
    match t.dtype {
        DT_FLOAT => match (&t.float_val[..], content) {
            ([x], []) => Some(f64::from(*x)),
            ([], b) => Some(f64::from(f32::from_le_bytes(b.try_into().ok()?))),
            _ => None,
        },
        DT_DOUBLE => match (&t.double_val[..], content) {
            ([x], []) => Some(*x),
            ([], b) => Some(f64::from_le_bytes(b.try_into().ok()?)),
            _ => None,
        },
        DT_HALF => match (&t.half_val[..], content) {
            // The 16 bits are the low half of the int32.
            ([x], []) => Some(half_to_f64(*x as u16)),
            ([], b) => Some(half_to_f64(u16::from_le_bytes(b.try_into().ok()?))),
            _ => None,
        },
        _ => None,
    }
}

/// IEEE 754 binary16 to f64 (exact: every half is a double).
fn half_to_f64(h: u16) -> f64 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = i32::from((h >> 10) & 0x1f);
    let man = f64::from(h & 0x3ff);
    match exp {
        0 => sign * man * 2f64.powi(-24),
        31 if man == 0.0 => sign * f64::INFINITY,
        31 => f64::NAN,
        e => sign * (1.0 + man / 1024.0) * 2f64.powi(e - 15),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::tensorboard_proto::{
        tensor_shape_proto::Dim, PluginData, Summary, SummaryMetadata, SummaryValue,
        TensorShapeProto,
    };

    fn event_with(values: Vec<SummaryValue>) -> Vec<u8> {
        Event {
            wall_time: 12.5,
            step: -3,
            what: Some(event::What::Summary(Summary { value: values })),
            source_metadata: None,
        }
        .encode_to_vec()
    }

    fn tensor(t: TensorProto) -> SummaryValue {
        SummaryValue {
            tag: "t".into(),
            value: Some(summary_value::Value::Tensor(t)),
            metadata: None,
        }
    }

    fn one(payload: &[u8]) -> Value {
        match decode(payload).unwrap().content {
            Content::Summary(mut v) if v.len() == 1 => v.remove(0),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn half_floats_convert_exactly() {
        assert_eq!(half_to_f64(0x3c00), 1.0);
        assert_eq!(half_to_f64(0xc000), -2.0);
        assert_eq!(half_to_f64(0x7bff), 65504.0);
        assert_eq!(half_to_f64(0x0001), 2f64.powi(-24));
        assert_eq!(half_to_f64(0x3555), 0.333251953125);
        assert_eq!(half_to_f64(0xfc00), f64::NEG_INFINITY);
        assert!(half_to_f64(0x7e00).is_nan());
        assert_eq!(half_to_f64(0x8000).to_bits(), (-0.0f64).to_bits());
    }

    #[test]
    fn tensors_in_every_storage() {
        let t = |dtype, f: fn(&mut TensorProto)| {
            let mut t = TensorProto {
                dtype,
                tensor_shape: Some(TensorShapeProto::default()),
                ..Default::default()
            };
            f(&mut t);
            one(&event_with(vec![tensor(t)])).data
        };
        assert_eq!(t(DT_FLOAT, |t| t.float_val = vec![1.5]), Data::Tensor(1.5));
        assert_eq!(
            t(DT_FLOAT, |t| t.tensor_content =
                2.25f32.to_le_bytes().to_vec()),
            Data::Tensor(2.25)
        );
        assert_eq!(
            t(DT_DOUBLE, |t| t.double_val = vec![0.1]),
            Data::Tensor(0.1)
        );
        assert_eq!(
            t(DT_DOUBLE, |t| t.tensor_content =
                1e300f64.to_le_bytes().to_vec()),
            Data::Tensor(1e300)
        );
        assert_eq!(t(DT_HALF, |t| t.half_val = vec![0x3c00]), Data::Tensor(1.0));
        assert_eq!(
            t(DT_HALF, |t| t.tensor_content = vec![0x00, 0xc0]),
            Data::Tensor(-2.0)
        );
        match t(DT_FLOAT, |t| t.float_val = vec![f32::NAN]) {
            Data::Tensor(x) => assert!(x.is_nan()),
            other => panic!("{other:?}"),
        }
        // Not one float element: other.
        assert_eq!(t(DT_FLOAT, |t| t.float_val = vec![1.0, 2.0]), Data::Other);
        assert_eq!(t(DT_FLOAT, |_| {}), Data::Other);
        assert_eq!(t(DT_FLOAT, |t| t.tensor_content = vec![0; 8]), Data::Other);
        assert_eq!(
            t(7 /* DT_STRING */, |t| t.float_val = vec![1.0]),
            Data::Other
        );
        assert_eq!(
            t(DT_FLOAT, |t| {
                t.float_val = vec![1.0];
                t.tensor_shape = Some(TensorShapeProto {
                    dim: vec![Dim {
                        size: 3,
                        name: String::new(),
                    }],
                });
            }),
            Data::Other
        );
        assert_eq!(
            t(DT_FLOAT, |t| {
                t.float_val = vec![4.0];
                t.tensor_shape = Some(TensorShapeProto {
                    dim: vec![Dim {
                        size: 1,
                        name: String::new(),
                    }],
                });
            }),
            Data::Tensor(4.0)
        );
    }

    #[test]
    fn simple_values_plugins_and_headers() {
        let v = SummaryValue {
            tag: "charts/SPS".into(),
            value: Some(summary_value::Value::SimpleValue(f32::INFINITY)),
            metadata: Some(SummaryMetadata {
                plugin_data: Some(PluginData {
                    plugin_name: "scalars".into(),
                    content: Vec::new(),
                }),
                ..Default::default()
            }),
        };
        let d = decode(&event_with(vec![v])).unwrap();
        assert_eq!((d.wall_time, d.step), (12.5, -3));
        assert_eq!(
            d.content,
            Content::Summary(vec![Value {
                tag: "charts/SPS".into(),
                plugin: Some("scalars".into()),
                data: Data::Simple(f32::INFINITY),
            }])
        );
        let header = Event {
            wall_time: 1.0,
            step: 0,
            what: Some(event::What::FileVersion("brain.Event:2".into())),
            source_metadata: None,
        };
        assert_eq!(
            decode(&header.encode_to_vec()).unwrap().content,
            Content::FileVersion("brain.Event:2".into())
        );
        // TF 1.x histogram (Summary.Value field 5) and image (field 4), as
        // torch writes them: tag, then the message (a double `min` here).
        let histo = [
            0x0a, 0x01, b'h', 0x2a, 0x09, 0x09, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f,
        ];
        let image = [0x0a, 0x01, b'i', 0x22, 0x02, 0x08, 0x01];
        for (value, want) in [(&histo[..], Data::Histogram), (&image[..], Data::Image)] {
            let mut summary = vec![0x0a, value.len() as u8];
            summary.extend_from_slice(value);
            let mut event = vec![0x2a, summary.len() as u8];
            event.extend_from_slice(&summary);
            assert_eq!(one(&event).data, want);
        }
        // graph_def (field 4): other.
        assert_eq!(decode(&[0x22, 0x01, 0x00]).unwrap().content, Content::Other);
        // Not a protobuf.
        let err = decode(&[0xff, 0xff, 0xff]).unwrap_err();
        assert!(err.to_string().contains("Event protobuf"), "{err}");
    }
}
