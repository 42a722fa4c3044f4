//! # lightcl-proto
//!
//! The `lightcl.v1` protobuf contracts: bus messages (`RawStatus`, `Target`, `Rejection`,
//! `EngineState`, `EngineLease`) and one control service per lightcl service. Code is
//! generated at build time with protox, so no `protoc` binary is needed.
//!
//! Every mapping between these messages and the core types lives in [`convert`] (targets,
//! statuses, rejections and their reasons, evidence, engine states, phases and answers), and
//! [`FromWire`] ties a bus message's protobuf type, name and conversion together for typed
//! consumers. Decoding is strict: a hash that is not exactly 32 bytes or a missing required ref
//! is an error naming the field, never a silently zeroed value.

#![allow(missing_docs, clippy::use_self)] // generated code

/// Generated `lightcl.v1` types, clients and servers.
pub mod v1 {
    tonic::include_proto!("lightcl.v1");
}

pub mod convert;

pub use convert::{FromWire, ProtoError, SourceStatus, TargetUpdate};

/// Encoded file descriptor set of `lightcl.v1`, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("lightcl_descriptor");

/// Fully-qualified message names, sent in the bus `Lightcl-Message` header.
pub mod names {
    /// `lightcl.v1.RawStatus`
    pub const RAW_STATUS: &str = "lightcl.v1.RawStatus";
    /// `lightcl.v1.Target`
    pub const TARGET: &str = "lightcl.v1.Target";
    /// `lightcl.v1.Rejection`
    pub const REJECTION: &str = "lightcl.v1.Rejection";
    /// `lightcl.v1.EngineState`
    pub const ENGINE_STATE: &str = "lightcl.v1.EngineState";
    /// `lightcl.v1.EngineLease`
    pub const ENGINE_LEASE: &str = "lightcl.v1.EngineLease";
}
