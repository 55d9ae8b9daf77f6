//! TensorBoard event files written by workers: decoding their `Event`
//! records into scalars.

/// What one event holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub wall_time: f64,
    pub step: i64,
    pub what: What,
}

/// The parts of an event the agent uses.
#[derive(Debug, Clone, PartialEq)]
pub enum What {
    /// The first record of a file; `writer` from its source metadata.
    FileVersion {
        writer: Option<String>,
    },
    Scalars(Vec<(String, f64)>),
    Other,
}

/// Decodes one `Event` payload: the TF1 `simple_value` and the rank-0
/// float tensor forms of scalars.
pub fn decode(payload: &[u8]) -> Result<Decoded, String> {
    use crate::sink::tensorboard::proto::{event, summary_value, Event};
    use prost::Message;
    let e = Event::decode(payload).map_err(|e| e.to_string())?;
    let what = match e.what {
        Some(event::What::FileVersion(_)) => What::FileVersion {
            writer: e.source_metadata.map(|m| m.writer),
        },
        Some(event::What::Summary(s)) => {
            let scalars: Vec<(String, f64)> = s
                .value
                .into_iter()
                .filter_map(|v| {
                    let x = match v.value? {
                        summary_value::Value::SimpleValue(x) => f64::from(x),
                        summary_value::Value::Tensor(t) => t
                            .float_val
                            .first()
                            .map(|&x| f64::from(x))
                            .or_else(|| t.double_val.first().copied())?,
                    };
                    Some((v.tag, x))
                })
                .collect();
            if scalars.is_empty() {
                What::Other
            } else {
                What::Scalars(scalars)
            }
        }
        None => What::Other,
    };
    Ok(Decoded {
        wall_time: e.wall_time,
        step: e.step,
        what,
    })
}

/// The metric name of `tag` in `event_file` under the run's TensorBoard root.
pub fn metric_name(_tb_root: &std::path::Path, _event_file: &std::path::Path, tag: &str) -> String {
    tag.to_string()
}
