//! # lightcl-devnet
//!
//! A whole lightcl pipeline on one machine, for people (`lightcl-devnet`, the README's main
//! command) and for the end-to-end tests (`tests/`):
//!
//! ```text
//!  anvil (real L1, mined by the devnet) ◀── validator ──▶ NATS (private nats-server, JetStream)
//!        ▲                                   ▲                    │
//!        │ reads L1                          │ statuses           ▼ targets
//!  simulated source (MockSource) ◀── poller ─┘            engine-driver × N ──▶ mock EL × N
//!   L2 chain over real L1 origins                                       (downloads blocks from
//!   (sim::Simulator)                                                     the simulated chain)
//! ```
//!
//! The services are the real binaries, started as child processes with the documented flags on
//! free loopback ports ([`procs`]); readiness is polled on `/ready`. The simulated chain logic
//! (L2 blocks with L1 origins, re-derivation after an L1 reorg) is plain, property-tested code
//! in [`sim`]. [`Devnet`] offers injections (L1 reorg, L2 reorg, lying source, replayed status,
//! source/EL/NATS outages, `kill -9` of a service) and checks over every mock EL's call log
//! ([`Devnet::check_invariants`]).
//!
//! With [`DevnetConfig::sources`] > 1 several simulated sources serve the same chain, each
//! polled by its own poller; each can be stopped, stalled (status frozen) or made to lie about
//! one label ([`sim::Lie`]: a fabricated finalized, safe, local safe or unsafe head with a real
//! L1 origin, or the forged safe head whose L1 origin was never on L1), and the devnet
//! remembers every block a source made up so no FCU may name one. [`DevnetConfig::validators`]
//! runs several validator replicas sharing the durable consumer; validator flags such as
//! `--quorum=2` go through [`DevnetConfig::extra_args`].

pub mod checks;
pub mod devnet;
pub mod l1;
pub mod procs;
pub mod sim;

pub use devnet::{Devnet, DevnetConfig, DevnetError, SeenRejection, SeenTarget, Service, View};
