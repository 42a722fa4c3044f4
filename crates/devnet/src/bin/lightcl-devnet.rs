//! `lightcl-devnet`: run the whole pipeline locally and watch the heads move.
//!
//! Prints one compact line per second (source heads, last target, each EL's applied heads and
//! lag, rejections). Injections: on a schedule (`--inject l1-reorg@30s,lying@45s,...`) or typed
//! on stdin while it runs (`r` L1 reorg, `l` toggle lying source, `o` EL 0 outage toggle,
//! `2` L2 reorg, `k` kill -9 + restart the validator, `s` toggle a stall of source 0, `f`
//! toggle a fabricated finalized head at the last source, `p` pause/resume, `q` quit).
//! Several sources (`--sources 3 --quorum 2`): each has its own poller; `--inject
//! liar@10s:finalized` makes the last one fabricate a label, `stall@20s:0` freezes source 0.
//! Ctrl-C (or `q`) stops every child process (SIGTERM, then SIGKILL after a grace period).

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use lightcl_devnet::sim::Lie;
use lightcl_devnet::{Devnet, DevnetConfig, Service};

#[derive(Debug, Parser)]
#[command(
    name = "lightcl-devnet",
    about = "Run lightcl locally: NATS, anvil L1, a simulated source, mock ELs and the three services"
)]
struct Cli {
    /// Number of mock ELs (one engine-driver each).
    #[arg(long = "els", env = "LIGHTCL_DEVNET_ELS", default_value_t = 2)]
    els: usize,
    /// Number of sources serving the same simulated chain, each with its own poller (source
    /// ids devnet-source, devnet-source-1, ...).
    #[arg(long = "sources", env = "LIGHTCL_DEVNET_SOURCES", default_value_t = 1)]
    sources: usize,
    /// The validator's --quorum (default: the validator's own, 1).
    #[arg(long = "quorum")]
    quorum: Option<usize>,
    /// Number of validator replicas (sharing the durable consumer).
    #[arg(long = "validators", default_value_t = 1)]
    validators: usize,
    /// An extra flag for every validator replica, e.g. `--validator-arg=--failover.hold=10s`
    /// (repeatable).
    #[arg(long = "validator-arg", allow_hyphen_values = true)]
    validator_args: Vec<String>,
    /// Simulated L2 block time.
    #[arg(long = "block-time", env = "LIGHTCL_DEVNET_BLOCK_TIME", default_value = "1s", value_parser = humantime::parse_duration)]
    block_time: Duration,
    /// An L1 block is mined every this many L2 blocks.
    #[arg(long = "l2-per-l1", default_value_t = 3)]
    l2_per_l1: u32,
    /// The poller's poll interval.
    #[arg(long = "poll-interval", env = "LIGHTCL_DEVNET_POLL_INTERVAL", default_value = "500ms", value_parser = humantime::parse_duration)]
    poll_interval: Duration,
    /// Mock EL download delay for unknown heads.
    #[arg(long = "download-delay", default_value = "100ms", value_parser = humantime::parse_duration)]
    download_delay: Duration,
    /// L2 chain id.
    #[arg(long = "chain-id", default_value_t = 901)]
    chain_id: u64,
    /// Where the service binaries are (default: next to this binary; env LIGHTCL_BIN_DIR).
    #[arg(long = "bin-dir")]
    bin_dir: Option<PathBuf>,
    /// Keep logs, JWT files and the NATS store here (default: a temp dir removed at exit).
    #[arg(long = "work-dir")]
    work_dir: Option<PathBuf>,
    /// Scheduled injections KIND@TIME[:ARG...], e.g.
    /// `l1-reorg@30s,lying@45s,honest@55s,el-down@60s,el-up@70s`. Kinds: l1-reorg, l2-reorg,
    /// lying (source 0 forges its safe head with an L1 origin never on L1), honest (every
    /// source tells the truth again), el-down, el-up, kill-validator, kill-poller, kill-driver,
    /// and per source: liar@T[:LIE[:SOURCE]] (LIE: finalized (default), unsafe, local-safe,
    /// safe, l1-origin; SOURCE: default the last), stall@T[:SOURCE] / unstall@T[:SOURCE]
    /// (frozen status), source-down@T[:SOURCE] / source-up@T[:SOURCE] (default source 0).
    #[arg(long = "inject", value_delimiter = ',')]
    inject: Vec<String>,
    /// Stop after this long (default: run until Ctrl-C).
    #[arg(long = "duration", value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// How long after an L1 reorg a forkchoice update may still carry, and an EL may still
    /// keep, a safe or finalized label whose L1 origin was reorged out, before the final check
    /// reports it (the validator's L1 watch retreats within about 1s + its
    /// --l1.watch-interval, default 1s).
    #[arg(long = "stale-bound", default_value = "2s", value_parser = humantime::parse_duration)]
    stale_bound: Duration,
    /// RUST_LOG for the services (their logs go to files in the work dir).
    #[arg(long = "service-log", default_value = "info")]
    service_log: String,
}

/// One injection: what, and for the per-source kinds which source and which lie.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Injection {
    kind: String,
    source: usize,
    lie: Lie,
}

impl Injection {
    fn new(kind: &str) -> Self {
        Self { kind: kind.to_owned(), source: 0, lie: Lie::Finalized }
    }
}

/// `KIND@TIME[:ARG...]` (see `--inject`), with `sources` sources running.
fn parse_inject(s: &str, sources: usize) -> Result<(Injection, Duration), String> {
    let (kind, rest) =
        s.split_once('@').ok_or_else(|| format!("--inject: {s:?} is not KIND@TIME"))?;
    let mut parts = rest.split(':');
    let at = parts.next().unwrap_or_default();
    let args: Vec<&str> = parts.collect();
    let known = [
        "l1-reorg",
        "l2-reorg",
        "lying",
        "honest",
        "el-down",
        "el-up",
        "kill-validator",
        "kill-poller",
        "kill-driver",
        "liar",
        "stall",
        "unstall",
        "source-down",
        "source-up",
    ];
    if !known.contains(&kind) {
        return Err(format!("--inject: unknown kind {kind:?} (known: {})", known.join(", ")));
    }
    let at = humantime::parse_duration(at).map_err(|e| format!("--inject: {s:?}: {e}"))?;
    let mut inj = Injection::new(kind);
    let source = |a: &str| -> Result<usize, String> {
        match a.parse::<usize>() {
            Ok(i) if i < sources => Ok(i),
            _ => Err(format!("--inject: {s:?}: source {a:?} is not 0..{sources}")),
        }
    };
    let max_args = match kind {
        "liar" => 2,
        "stall" | "unstall" | "source-down" | "source-up" => 1,
        _ => 0,
    };
    if args.len() > max_args {
        return Err(format!("--inject: {s:?}: {kind} takes at most {max_args} argument(s)"));
    }
    match (kind, args.as_slice()) {
        ("liar", a) => {
            inj.source = sources - 1;
            if let Some(l) = a.first() {
                inj.lie = l.parse().map_err(|e| format!("--inject: {s:?}: {e}"))?;
            }
            if let Some(i) = a.get(1) {
                inj.source = source(i)?;
            }
        }
        (_, [i]) => inj.source = source(i)?,
        _ => {}
    }
    Ok((inj, at))
}

async fn apply(net: &mut Devnet, inj: &Injection, state: &mut Toggles) {
    let kind = inj.kind.as_str();
    let i = inj.source;
    let r: Result<String, String> = match kind {
        "l1-reorg" => net
            .inject_l1_reorg()
            .await
            .map(|d| format!("L1 reorg of depth {d}"))
            .map_err(|e| e.to_string()),
        "l2-reorg" => Ok(format!("L2 reorg of {} blocks", net.inject_l2_reorg(2).len())),
        "lying" => {
            state.lying = true;
            net.set_lying(true);
            Ok("source is lying".into())
        }
        "honest" => {
            state.lying = false;
            state.fabricating = false;
            for i in 0..net.source_count() {
                net.set_source_lie(i, None);
            }
            Ok("every source is honest again".into())
        }
        "liar" => {
            state.fabricating = true;
            net.set_source_lie(i, Some(inj.lie));
            Ok(format!("source {i} lies about {}", inj.lie))
        }
        "stall" | "unstall" => {
            let on = kind == "stall";
            state.stalled = on;
            net.set_source_stalled(i, on);
            Ok(format!(
                "source {i} {}",
                if on { "stalled (status frozen)" } else { "follows the chain again" }
            ))
        }
        "source-down" => {
            net.stop_source_at(i).await;
            Ok(format!("source {i} down"))
        }
        "source-up" => net
            .start_source_at(i)
            .await
            .map(|()| format!("source {i} up"))
            .map_err(|e| e.to_string()),
        "el-down" => {
            state.el_down = true;
            net.stop_el(0).await;
            Ok("EL 0 down".into())
        }
        "el-up" => {
            state.el_down = false;
            net.start_el(0).await.map(|()| "EL 0 up".into()).map_err(|e| e.to_string())
        }
        "kill-validator" | "kill-poller" | "kill-driver" => {
            let s = match kind {
                "kill-validator" => Service::Validator,
                "kill-poller" => Service::Poller,
                _ => Service::Driver(0),
            };
            net.kill9(s).await;
            println!(">>> kill -9 {s}; restarting");
            net.restart(s)
                .await
                .map(|()| format!("{s} restarted and ready"))
                .map_err(|e| e.to_string())
        }
        other => Err(format!("unknown injection {other}")),
    };
    match r {
        Ok(m) => println!(">>> {m}"),
        Err(e) => println!(">>> injection {kind} failed: {e}"),
    }
}

#[derive(Default)]
struct Toggles {
    lying: bool,
    el_down: bool,
    paused: bool,
    stalled: bool,
    fabricating: bool,
}

#[tokio::main]
async fn main() -> eyre::Result<()> {
    let cli = Cli::parse();
    for (flag, n) in
        [("--els", cli.els), ("--sources", cli.sources), ("--validators", cli.validators)]
    {
        if n == 0 {
            eprintln!("error: {flag}: must be at least 1");
            std::process::exit(64);
        }
    }
    let mut schedule = Vec::new();
    for s in &cli.inject {
        match parse_inject(s, cli.sources) {
            Ok(x) => schedule.push(x),
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(64);
            }
        }
    }
    schedule.sort_by_key(|(_, at)| *at);
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();

    let mut validator_args: Vec<String> =
        cli.quorum.map(|k| format!("--quorum={k}")).into_iter().collect();
    validator_args.extend(cli.validator_args.iter().cloned());
    let cfg = DevnetConfig {
        chain_id: cli.chain_id,
        els: cli.els,
        sources: cli.sources,
        validators: cli.validators,
        extra_args: [("validator".to_owned(), validator_args)].into_iter().collect(),
        block_time: cli.block_time,
        l2_per_l1: cli.l2_per_l1,
        poll_interval: cli.poll_interval,
        download_delay: cli.download_delay,
        bin_dir: cli.bin_dir.clone(),
        work_dir: cli.work_dir.clone(),
        rust_log: cli.service_log.clone(),
        stale_label_grace: cli.stale_bound,
        stale_state_bound: Some(cli.stale_bound),
        ..DevnetConfig::default()
    };
    println!(
        "starting devnet: {} EL(s), {} source(s), {} validator(s), block time {:?}, poll interval {:?} ...",
        cli.els, cli.sources, cli.validators, cli.block_time, cli.poll_interval
    );
    let mut net = Devnet::start(cfg).await?;
    println!(
        "nats {} | anvil {} | source {} | logs in {}",
        net.nats_url(),
        net.l1_url(),
        net.source_url(),
        net.dir().display()
    );
    println!(
        "keys: r=L1 reorg  2=L2 reorg  l=lying on/off  o=EL0 outage on/off  k=kill -9 validator  s=stall source 0 on/off  f=fake finalized at the last source on/off  p=pause  q=quit  (then Enter)"
    );

    let started = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // Stdin lines from a plain thread (tokio's io-std feature is not enabled in the workspace).
    let (line_tx, mut stdin) = tokio::sync::mpsc::channel::<String>(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(l) = line else { break };
            if line_tx.blocking_send(l).is_err() {
                break;
            }
        }
    });
    let mut stdin_open = true;
    let mut toggles = Toggles::default();
    let mut next = 0;
    let sigint = tokio::signal::ctrl_c();
    tokio::pin!(sigint);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = &mut sigint => { println!("\nCtrl-C: stopping"); break; }
            _ = term.recv() => { println!("SIGTERM: stopping"); break; }
            _ = tick.tick() => {
                let elapsed = started.elapsed();
                while next < schedule.len() && schedule[next].1 <= elapsed {
                    let inj = schedule[next].0.clone();
                    apply(&mut net, &inj, &mut toggles).await;
                    next += 1;
                }
                println!("{:>5.0}s {}", elapsed.as_secs_f64(), net.view());
                if cli.duration.is_some_and(|d| elapsed >= d) { break; }
            }
            line = stdin.recv(), if stdin_open => match line {
                Some(l) => match l.trim() {
                    "r" => apply(&mut net, &Injection::new("l1-reorg"), &mut toggles).await,
                    "2" => apply(&mut net, &Injection::new("l2-reorg"), &mut toggles).await,
                    "l" => { let k = if toggles.lying { "honest" } else { "lying" }; apply(&mut net, &Injection::new(k), &mut toggles).await }
                    "o" => { let k = if toggles.el_down { "el-up" } else { "el-down" }; apply(&mut net, &Injection::new(k), &mut toggles).await }
                    "k" => apply(&mut net, &Injection::new("kill-validator"), &mut toggles).await,
                    "s" => { let k = if toggles.stalled { "unstall" } else { "stall" }; apply(&mut net, &Injection::new(k), &mut toggles).await }
                    "f" => {
                        let inj = if toggles.fabricating {
                            Injection::new("honest")
                        } else {
                            Injection { source: net.source_count() - 1, ..Injection::new("liar") }
                        };
                        apply(&mut net, &inj, &mut toggles).await;
                    }
                    "p" => { toggles.paused = !toggles.paused; net.set_paused(toggles.paused); println!(">>> paused: {}", toggles.paused); }
                    "q" => break,
                    "" => {}
                    other => println!(">>> unknown key {other:?}"),
                },
                None => stdin_open = false,
            },
        }
    }
    let check = net.check_invariants();
    let retreats = net.retreat_times();
    if retreats.iter().any(Option::is_some) {
        let shown: Vec<String> = retreats
            .iter()
            .enumerate()
            .map(|(i, t)| format!("el-{i} {}", t.map_or("-".to_owned(), |d| format!("{d:?}"))))
            .collect();
        println!("newest L1 reorg → first FCU with a canonical safe: {}", shown.join(", "));
    }
    for (name, status) in net.shutdown().await {
        println!("stopped {name}: {status}");
    }
    match check {
        Ok(()) => println!("invariants over every EL's forkchoice log: OK"),
        Err(v) => {
            println!("invariant violations:");
            for x in v.iter().take(20) {
                println!("  {x}");
            }
            std::process::exit(1);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn injections_parse_with_their_arguments() {
        let (i, at) = parse_inject("liar@10s:finalized", 3).unwrap();
        assert_eq!(
            (i.kind.as_str(), i.source, i.lie, at),
            ("liar", 2, Lie::Finalized, Duration::from_secs(10))
        );
        let (i, _) = parse_inject("liar@1m:tip:1", 3).unwrap();
        assert_eq!((i.source, i.lie), (1, Lie::Unsafe));
        let (i, _) = parse_inject("liar@5s", 1).unwrap();
        assert_eq!((i.source, i.lie), (0, Lie::Finalized));
        let (i, _) = parse_inject("stall@20s:1", 2).unwrap();
        assert_eq!((i.kind.as_str(), i.source), ("stall", 1));
        let (i, _) = parse_inject("source-down@3s", 2).unwrap();
        assert_eq!((i.kind.as_str(), i.source), ("source-down", 0));
        assert_eq!(parse_inject("l1-reorg@30s", 1).unwrap().1, Duration::from_secs(30));
        for bad in
            ["liar@10s:nonsense", "stall@1s:3", "l1-reorg@1s:0", "nope@1s", "liar", "stall@x"]
        {
            assert!(parse_inject(bad, 3).is_err(), "{bad}");
        }
    }
}
