//! # lightcl-harness
//!
//! Test harness for lightcl's integration and end-to-end tests: real processes
//! (`nats-server`, `anvil`) on random loopback ports, killed on drop, and faithful in-process
//! mocks of what cannot run here (an execution client's Engine API with JWT, an external
//! consensus node serving `optimism_syncStatus`), an in-process OTLP/gRPC trace receiver
//! ([`otlp`]), and real TLS on loopback ([`tls`]: a private CA generated in the test and an
//! HTTPS reverse proxy, optionally keyed like a hosted RPC provider, in front of any mock).

pub mod anvil;
pub mod captured;
pub mod config_check;
pub mod mock_el;
pub mod mock_source;
pub mod nats;
pub mod otlp;
pub mod tls;
