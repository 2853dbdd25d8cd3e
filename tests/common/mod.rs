//! Shared support for integration tests: real servers on loopback ports.
//!
//! Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

pub mod azurite;
pub mod gcs;
pub mod http;
pub mod moto;
