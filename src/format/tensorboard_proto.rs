//! The subset of TensorFlow's event protos that scalar event files need,
//! shared by the `tensorboard` sink (which writes them) and the event-file
//! source [`crate::source::tfevents`] (which reads what workers write).
//!
//! Hand-derived with `prost` (no protoc, no generated code) from the
//! `.proto` files TensorBoard vendors under `tensorboard/compat/proto/`:
//! `event.proto`, `summary.proto`, `tensor.proto`, `tensor_shape.proto` and
//! `types.proto` (field numbers re-checked against tensorboard 2.21.0's
//! compiled descriptors). Only the fields the sink writes and the reader
//! decodes are declared; the field numbers are the real ones, so any
//! protobuf reader decodes these messages as the full ones, and decoding a
//! full message here skips the undeclared fields (graph defs, the contents
//! of images and histograms: an undeclared member of a `oneof` decodes as
//! `None`). Fields are
//! declared in field number order because prost encodes them in
//! declaration order and the byte-for-byte comparison with TensorBoard's
//! own writer relies on the canonical (ascending) order that the Python
//! protobuf runtime uses.

/// `tensorflow.Event`: one record of an event file.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Event {
    /// Seconds since the Unix epoch.
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    #[prost(int64, tag = "2")]
    pub step: i64,
    #[prost(oneof = "event::What", tags = "3, 5")]
    pub what: Option<event::What>,
    /// Names the program that wrote the file (set on the file-version
    /// record, as TensorBoard's own `EventFileWriter` does).
    #[prost(message, optional, tag = "10")]
    pub source_metadata: Option<SourceMetadata>,
}

/// `tensorflow.SourceMetadata`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SourceMetadata {
    #[prost(string, tag = "1")]
    pub writer: String,
}

/// The `oneof what` of [`Event`].
pub mod event {
    /// What an event carries; the other members of the real oneof
    /// (graph_def 4, log_message 6, session_log 7, tagged_run_metadata 8,
    /// meta_graph_def 9) are not declared and decode as `None`.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum What {
        /// `"brain.Event:2"` in the first record of every file.
        #[prost(string, tag = "3")]
        FileVersion(String),
        #[prost(message, tag = "5")]
        Summary(super::Summary),
    }
}

/// `tensorflow.Summary`: the values logged at one step.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Summary {
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<SummaryValue>,
}

/// `tensorflow.Summary.Value`: one tagged value.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SummaryValue {
    #[prost(string, tag = "1")]
    pub tag: String,
    #[prost(oneof = "summary_value::Value", tags = "2, 4, 5, 6, 8")]
    pub value: Option<summary_value::Value>,
    #[prost(message, optional, tag = "9")]
    pub metadata: Option<SummaryMetadata>,
}

/// The `oneof value` of [`SummaryValue`].
pub mod summary_value {
    /// The payload of a summary value: the TF 1.x `simple_value` (what
    /// torch's and tensorboardX's `add_scalar` write; TensorBoard converts
    /// it on load) or a tensor (what the sink writes, the form current
    /// TensorBoard treats as first-class). The TF 1.x image, histogram and
    /// audio members (torch's `add_image`, `add_histogram`, `add_audio`
    /// write them, without plugin metadata) are declared with their
    /// contents skipped, only so that `explain` can say what a record that
    /// holds no scalar holds; obsolete_old_style_histogram (3) is not
    /// declared and decodes as `None`.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Value {
        #[prost(float, tag = "2")]
        SimpleValue(f32),
        #[prost(message, tag = "4")]
        Image(super::Skipped),
        #[prost(message, tag = "5")]
        Histo(super::Skipped),
        #[prost(message, tag = "6")]
        Audio(super::Skipped),
        #[prost(message, tag = "8")]
        Tensor(super::TensorProto),
    }
}

/// A message whose fields are all skipped: what a value is, not what it
/// holds (an image's pixels, a histogram's buckets).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Skipped {}

/// `tensorflow.SummaryMetadata`: which plugin owns a time series.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SummaryMetadata {
    #[prost(message, optional, tag = "1")]
    pub plugin_data: Option<PluginData>,
    #[prost(string, tag = "2")]
    pub display_name: String,
    #[prost(string, tag = "3")]
    pub summary_description: String,
    /// `tensorflow.DataClass`; see [`DATA_CLASS_SCALAR`].
    #[prost(int32, tag = "4")]
    pub data_class: i32,
}

/// `tensorflow.SummaryMetadata.PluginData`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PluginData {
    #[prost(string, tag = "1")]
    pub plugin_name: String,
    /// Plugin-specific serialized proto; for scalars `ScalarPluginData`
    /// with version 0, which serializes to no bytes.
    #[prost(bytes = "vec", tag = "2")]
    pub content: Vec<u8>,
}

/// `tensorflow.TensorProto`, reduced to the fields a floating-point
/// scalar can be stored in.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorProto {
    /// `tensorflow.DataType`; see [`DT_FLOAT`].
    #[prost(int32, tag = "1")]
    pub dtype: i32,
    #[prost(message, optional, tag = "2")]
    pub tensor_shape: Option<TensorShapeProto>,
    /// The raw little-endian element bytes, an alternative to the `*_val`
    /// fields (`tf.make_tensor_proto` uses it for numpy arrays).
    #[prost(bytes = "vec", tag = "4")]
    pub tensor_content: Vec<u8>,
    /// Packed, as proto3 encodes repeated scalars.
    #[prost(float, repeated, tag = "5")]
    pub float_val: Vec<f32>,
    #[prost(double, repeated, tag = "6")]
    pub double_val: Vec<f64>,
    /// `DT_HALF` / `DT_BFLOAT16`: each element's 16 bits in an int32.
    #[prost(int32, repeated, tag = "13")]
    pub half_val: Vec<i32>,
}

/// `tensorflow.TensorShapeProto`; empty (no dims) means rank 0.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorShapeProto {
    #[prost(message, repeated, tag = "2")]
    pub dim: Vec<tensor_shape_proto::Dim>,
}

/// Nested messages of [`TensorShapeProto`].
pub mod tensor_shape_proto {
    /// One dimension of a tensor shape.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Dim {
        #[prost(int64, tag = "1")]
        pub size: i64,
        #[prost(string, tag = "2")]
        pub name: String,
    }
}

/// `tensorflow.DataType.DT_FLOAT`.
pub const DT_FLOAT: i32 = 1;
/// `tensorflow.DataType.DT_DOUBLE`.
pub const DT_DOUBLE: i32 = 2;
/// `tensorflow.DataType.DT_HALF` (IEEE 754 binary16).
pub const DT_HALF: i32 = 19;
/// `tensorflow.DataClass.DATA_CLASS_SCALAR`.
pub const DATA_CLASS_SCALAR: i32 = 1;
/// The scalars plugin's name (`tensorboard/plugins/scalar/metadata.py`).
pub const SCALARS_PLUGIN: &str = "scalars";
/// The writer named in the file-version record's `source_metadata`.
pub const WRITER: &str = "mosaic-shipper";
/// The `file_version` of the first record of an event file.
pub const FILE_VERSION: &str = "brain.Event:2";
