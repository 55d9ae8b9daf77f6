//! Wire formats that both a writer and a reader of this crate need, kept
//! apart from either so that neither depends on the other: the
//! `tensorboard` sink writes event files with them and the event-file
//! source reads workers' files with them.

pub mod tensorboard_proto;
pub mod tfrecord;
