//! `lightcl-bench`: benchmarks of the real lightcl services on loopback, run on demand (they
//! are not tests: they print figures, they do not pass or fail). Each subcommand starts its own
//! private nats-server and anvil, a benchmark source and mock ELs in this process, and the
//! release service binaries as child processes. See `BENCHMARKS.md` for the figures.
//!
//! ```text
//! cargo build --release -p lightcl-poller -p lightcl-validator -p lightcl-engine-driver -p lightcl-bench
//! target/release/lightcl-bench latency      # figure 1 (+ in-process baseline)
//! target/release/lightcl-bench throughput   # figure 2
//! target/release/lightcl-bench fanout       # figures 3 and 5
//! target/release/lightcl-bench footprint    # figure 4
//! target/release/lightcl-bench tiplag       # figure 8 (fixed vs phase-locked polling)
//! target/release/lightcl-bench machine      # what to paste under "machine"
//! ```

mod error;
mod fanout;
mod footprint;
mod hops;
mod latency;
mod procfs;
mod rig;
mod source;
mod stats;
mod throughput;
mod timeline;
mod tiplag;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "lightcl-bench",
    about = "Benchmarks of the lightcl pipeline (real processes on loopback)"
)]
struct Cli {
    /// Directory with the service binaries (default: next to this binary; env LIGHTCL_BIN_DIR).
    #[arg(long = "bin-dir", global = true)]
    bin_dir: Option<PathBuf>,
    /// RUST_LOG of the services (their logs go to a temp dir).
    #[arg(long = "service-log", global = true, default_value = "info")]
    service_log: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Figure 1: source poll -> EL forkchoice update, pipeline vs in-process baseline.
    Latency(latency::Options),
    /// Figure 2: validator statuses/s, L1 requests per status, cache hit rate.
    Throughput {
        /// Statuses in the burst.
        #[arg(long, default_value_t = 2000)]
        statuses: usize,
        /// Statuses of the paced phase (10/s).
        #[arg(long, default_value_t = 200)]
        paced: usize,
    },
    /// Figures 3 and 5: fan-out to N engine-drivers, and the load on the source.
    Fanout {
        /// Engine-drivers / mock ELs.
        #[arg(long, default_value_t = 50)]
        els: usize,
        /// Time between head changes.
        #[arg(long = "head-every", default_value = "100ms", value_parser = humantime::parse_duration)]
        head_every: Duration,
        /// Poll interval.
        #[arg(long = "poll-interval", default_value = "50ms", value_parser = humantime::parse_duration)]
        poll_interval: Duration,
        /// Measured window.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        window: Duration,
    },
    /// Figure 4: RSS and CPU of each service.
    Footprint {
        /// Poll interval.
        #[arg(long = "poll-interval", default_value = "2s", value_parser = humantime::parse_duration)]
        poll_interval: Duration,
        /// Time between head changes.
        #[arg(long = "head-every", default_value = "2s", value_parser = humantime::parse_duration)]
        head_every: Duration,
        /// Warm-up.
        #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
        warmup: Duration,
        /// Measured window.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        window: Duration,
    },
    /// Figure 8: source-answerable -> EL forkchoice update with default poller settings, fixed
    /// cadence vs phase-locked polling, and source requests per block.
    Tiplag(tiplag::Options),
    /// The bus's floor: one message through nats-server, core NATS and JetStream, no lightcl
    /// code in the path.
    Hops(hops::Options),
    /// Prints the machine description (nproc, memory, CPU model, rustc, load, date).
    Machine,
}

#[tokio::main]
async fn main() -> eyre::Result<()> {
    let cli = Cli::parse();
    let rig = rig::RigOptions {
        els: 0,
        bin_dir: cli.bin_dir.clone().unwrap_or_else(lightcl_devnet::procs::bin_dir),
        rust_log: cli.service_log.clone(),
    };
    match cli.cmd {
        Cmd::Latency(o) => latency::run(rig, &o).await?,
        Cmd::Throughput { statuses, paced } => {
            throughput::run(rig, &throughput::Options { statuses, paced }).await?;
        }
        Cmd::Fanout { els, head_every, poll_interval, window } => {
            fanout::run(rig, &fanout::Options { els, head_every, poll_interval, window }).await?;
        }
        Cmd::Footprint { poll_interval, head_every, warmup, window } => {
            let o = footprint::Options { poll_interval, head_every, warmup, window };
            footprint::run(rig, &o).await?;
        }
        Cmd::Tiplag(o) => tiplag::run(rig, &o).await?,
        Cmd::Hops(o) => hops::run(&o).await?,
        Cmd::Machine => machine(),
    }
    Ok(())
}

fn machine() {
    let sh = |cmd: &str| {
        std::process::Command::new("sh")
            .args(["-c", cmd])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim_end().to_owned())
            .unwrap_or_default()
    };
    println!("date (UTC): {}", sh("date -u '+%Y-%m-%d %H:%M:%S'"));
    println!("nproc: {}", sh("nproc"));
    println!("cpu: {}", sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").trim());
    println!("memory:\n{}", sh("free -h"));
    println!("rustc: {}", sh("rustc --version"));
    println!("uptime: {}", sh("uptime"));
}
