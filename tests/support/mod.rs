//! Shared test support for the W&B tests.
#![allow(dead_code)] // each test crate uses a different part

pub mod artifacts;
pub mod harness;
pub mod sdk;
pub mod standin;
pub mod tinyproxy;
