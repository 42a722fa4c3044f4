//! # lightcl-harness
//!
//! Test harness for lightcl's integration and end-to-end tests: real processes
//! (`nats-server`, `anvil`) on random loopback ports, killed on drop, and faithful in-process
//! mocks of what cannot run here (an execution client's Engine API with JWT, an external
//! consensus node serving `optimism_syncStatus`), and an in-process OTLP/gRPC trace receiver
//! ([`otlp`]).

pub mod anvil;
pub mod mock_el;
pub mod mock_source;
pub mod nats;
pub mod otlp;
