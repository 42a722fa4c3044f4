//! # lightcl-harness
//!
//! Test harness for lightcl's integration and end-to-end tests, the devnet and the bench — the
//! one place for:
//!
//! - real processes on random loopback ports, in their own process group, killed on drop:
//!   [`nats`] (`nats-server` with JetStream: start, stop/terminate, start again on the same
//!   ports and store, `/healthz` readiness) and [`anvil`] (a real L1, with a counting proxy);
//!   [`captured`] runs a service binary with its output captured;
//! - faithful in-process mocks of what cannot run here: an execution client's Engine API with
//!   JWT ([`mock_el`]), an external consensus node serving `optimism_syncStatus`
//!   ([`mock_source`]), an OTLP/gRPC trace receiver ([`otlp`]), and real TLS on loopback
//!   ([`tls`]: a private CA generated in the test and an HTTPS reverse proxy, optionally keyed
//!   like a hosted RPC provider, in front of any mock);
//! - checks: [`op_batcher`] restates the rules op-batcher applies to an `optimism_syncStatus`;
//! - waiting: [`wait::until`] / [`wait::until_async`] poll a condition against a deadline (sleeps
//!   are not synchronisation here);
//! - plain HTTP: [`http_get`] (admin `/ready`, `/metrics`, nats-server's `/healthz`).

pub mod anvil;
pub mod captured;
pub mod config_check;
mod get;
pub mod mock_el;
pub mod mock_source;
pub mod nats;
pub mod op_batcher;
pub mod otlp;
pub mod process;
pub mod tls;
pub mod wait;

pub use get::{HTTP_GET_TIMEOUT, HttpAnswer, http_get};
