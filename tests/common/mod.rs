//! Shared support for integration tests: real servers on loopback ports, and the helpers the
//! storage tests use to drive the real `litestream` against them.
//!
//! Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

pub mod azurite;
pub mod ceph;
pub mod fault_proxy;
pub mod figures;
pub mod gcs;
pub mod http;
pub mod litestream;
pub mod moto;
pub mod nats;
pub mod s3;
pub mod seaweedfs;
pub mod server;
pub mod shell;
pub mod sigv4;
pub mod tools;
pub mod usage;
