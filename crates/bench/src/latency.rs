//! Figure 1: internal latency, source poll → mock EL forkchoice update, through the real
//! poller, validator and engine-driver processes and NATS, and the same core logic in one task
//! with no bus (the baseline). The two are measured in alternating blocks of one run (the
//! poller paused through its control API while the baseline runs, and the other way round), so
//! that a machine whose speed drifts over a run weighs on both alike.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy_primitives::B256;
use lightcl_core::engine::{Action, Planner, PlannerConfig};
use lightcl_core::poll::{PollDecision, Publication, next_delay};
use lightcl_core::validate::{Observation, Validator, ValidatorConfig, Verdict};
use lightcl_engine_driver::el::EngineClient;
use lightcl_harness::mock_el::{MockEl, MockElConfig};
use lightcl_validator::l1::L1Reader;
use tokio_util::sync::CancellationToken;

use crate::error::{BenchError, Ctx, failed};
use crate::rig::{CHAIN_ID, Rig, RigOptions, metric_sum, wait_for};
use crate::stats::{Summary, ms};
use crate::timeline::{self, Fcu};

/// Settings of the latency benchmark (its command line).
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Head changes measured per mode (split evenly over the rounds).
    #[arg(long, default_value_t = 1000)]
    pub heads: usize,
    /// Rounds: each round measures a block of the pipeline and a block of the baseline (in
    /// alternating order, ABBA), so both see the same machine; 1 = one after the other.
    #[arg(long, default_value_t = 10)]
    pub rounds: usize,
    /// Time between head changes at the source.
    #[arg(long = "head-every", default_value = "25ms", value_parser = humantime::parse_duration)]
    pub head_every: Duration,
    /// Poll interval of the poller (and of the baseline).
    #[arg(long = "poll-interval", default_value = "10ms", value_parser = humantime::parse_duration)]
    pub poll_interval: Duration,
    /// Warm-up head changes per mode (not measured).
    #[arg(long, default_value_t = 100)]
    pub warmup: usize,
    /// Only the pipeline.
    #[arg(long = "skip-baseline")]
    pub skip_baseline: bool,
    /// Only the baseline.
    #[arg(long = "skip-pipeline")]
    pub skip_pipeline: bool,
    /// Also time the pipeline's stages with a core-NATS subscriber on the statuses and targets
    /// (a third consumer of every message: it adds load, so the headline figures are measured
    /// without it).
    #[arg(long)]
    pub stages: bool,
    /// Run the validator with `--status.early-copies` (it runs as one replica here).
    #[arg(long = "early-copies")]
    pub early_copies: bool,
}

/// The two paths measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Pipeline,
    Baseline,
}

/// One mode's samples over all its measured blocks.
#[derive(Debug, Default)]
struct Tally {
    latencies: Vec<Duration>,
    heads: Vec<(B256, u64)>,
    fcus: Vec<Fcu>,
    served: Seen,
    unserved: usize,
    unreached: usize,
    coalesced: usize,
    polls: u64,
    time: Duration,
    /// p50 of each block, in order (`None`: no head of the block reached the EL).
    block_p50: Vec<Option<Duration>>,
}

/// The baseline task and its switch.
struct Baseline {
    el: Arc<MockEl>,
    active: tokio::sync::watch::Sender<bool>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), BenchError>>,
}

/// Runs the benchmark and prints its figures.
pub async fn run(rig_opts: RigOptions, o: &Options) -> Result<(), BenchError> {
    if o.rounds == 0 || o.heads < o.rounds {
        return Err(failed("options", "--rounds must be at least 1 and at most --heads"));
    }
    let mut rig = Rig::start(RigOptions { els: 1, ..rig_opts }).await?;
    println!(
        "latency: {} head changes per mode in {} rounds, a new head every {:?}, poll interval {:?}, validator early copies {}",
        o.heads,
        o.rounds,
        o.head_every,
        o.poll_interval,
        if o.early_copies { "on" } else { "off" }
    );
    let pipeline_el = rig.els[0].clone();
    if !o.skip_pipeline {
        let anvil = rig.anvil_url().to_owned();
        // Only when asked: binaries older than the flag (`--bin-dir`) refuse it.
        let early: &[&str] = if o.early_copies { &["--status.early-copies"] } else { &[] };
        rig.spawn_validator_with(&anvil, early)?;
        rig.spawn_poller(o.poll_interval)?;
        rig.spawn_drivers()?;
        rig.wait_ready(Duration::from_secs(60)).await?;
        rig.pause_poller(true).await?;
    }
    let baseline = if o.skip_baseline { None } else { Some(start_baseline(&mut rig, o).await?) };
    let page0 = if o.skip_pipeline { None } else { Some(rig.metrics("validator").await?) };
    let bus_seen = match (o.stages && !o.skip_pipeline).then(|| rig.nats_url()) {
        Some(url) => Some(BusWatch::start(&url).await?),
        None => None,
    };

    let mut modes = Vec::new();
    if !o.skip_pipeline {
        modes.push(Mode::Pipeline);
    }
    if baseline.is_some() {
        modes.push(Mode::Baseline);
    }
    let el_of = |m: Mode| match (m, &baseline) {
        (Mode::Baseline, Some(b)) => b.el.clone(),
        _ => pipeline_el.clone(),
    };
    // Warm-up of each mode: connections open, consumers bound, the EL following.
    for &m in &modes {
        switch(&rig, baseline.as_ref(), m, true, o).await?;
        block(&mut rig, &el_of(m), o.warmup.max(1), o.head_every, &mut Tally::default()).await?;
        switch(&rig, baseline.as_ref(), m, false, o).await?;
    }
    let mut tallies = [Tally::default(), Tally::default()];
    let per_block = o.heads / o.rounds;
    for round in 0..o.rounds {
        let mut order = modes.clone();
        if round % 2 == 1 {
            order.reverse();
        }
        for m in order {
            switch(&rig, baseline.as_ref(), m, true, o).await?;
            let t = &mut tallies[usize::from(m == Mode::Baseline)];
            block(&mut rig, &el_of(m), per_block, o.head_every, t).await?;
            switch(&rig, baseline.as_ref(), m, false, o).await?;
        }
    }

    let [pipe, base] = tallies;
    let mut pipeline = None;
    if !o.skip_pipeline {
        let label = if o.stages {
            "pipeline (3 processes + NATS), with the stage probe"
        } else {
            "pipeline (3 processes + NATS)"
        };
        pipeline = report(label, &pipe, o);
        if let Some(w) = bus_seen {
            print_stages(&pipe, w.stop());
        }
        if let Some(page0) = page0 {
            let page1 = rig.metrics("validator").await?;
            print_validator(&page0, &page1);
        }
    }
    let mut baseline_summary = None;
    if let Some(b) = baseline {
        baseline_summary = report("in-process baseline (no bus)", &base, o);
        b.cancel.cancel();
        b.task.await.ctx("baseline task")??;
    }
    if let (Some(p), Some(b)) = (pipeline, baseline_summary) {
        let r = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
        println!(
            "ratio pipeline/baseline: p50 {:.2}x  p99 {:.2}x  mean {:.2}x",
            r(p.p50, b.p50),
            r(p.p99, b.p99),
            r(p.mean, b.mean)
        );
        let rounds: Vec<String> = pipe
            .block_p50
            .iter()
            .zip(&base.block_p50)
            .map(|(p, b)| match (p, b) {
                (Some(p), Some(b)) => format!("{:.2}", r(*p, *b)),
                _ => "-".to_owned(),
            })
            .collect();
        println!("  p50 ratio of each round: {}", rounds.join(" "));
        let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
        println!(
            "goal p99 <= 5 ms: {}; goal ratio <= 1.5x: p50 {}, p99 {}",
            verdict(p.p99 <= Duration::from_millis(5)),
            verdict(r(p.p50, b.p50) <= 1.5),
            verdict(r(p.p99, b.p99) <= 1.5)
        );
    }
    for name in ["poller", "validator", "engine-driver-0"] {
        rig.stop_service(name).await;
    }
    rig.shutdown().await;
    Ok(())
}

/// A fresh EL at genesis that knows the whole chain so far (and, in `rig.els`, every later
/// block), and the in-process baseline driving it, idle until switched on.
async fn start_baseline(rig: &mut Rig, o: &Options) -> Result<Baseline, BenchError> {
    let secret = alloy_rpc_types_engine::JwtSecret::random();
    let mut c = MockElConfig::new(secret);
    c.chain_id = CHAIN_ID;
    c.download_delay = Duration::ZERO;
    c.genesis = rig.genesis();
    let el = Arc::new(MockEl::start(c).await.ctx("baseline EL")?);
    el.add_network_blocks(rig.chain());
    rig.els.push(el.clone());
    let (active, active_rx) = tokio::sync::watch::channel(false);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(in_process(
        rig.source.url(),
        rig.anvil_url().to_owned(),
        el.url(),
        secret,
        o.poll_interval,
        active_rx,
        cancel.clone(),
    ));
    Ok(Baseline { el, active, cancel, task })
}

/// Turns one mode on or off. Off waits until nothing polls the source any more.
async fn switch(
    rig: &Rig,
    baseline: Option<&Baseline>,
    mode: Mode,
    on: bool,
    o: &Options,
) -> Result<(), BenchError> {
    match (mode, baseline) {
        (Mode::Pipeline, _) => rig.pause_poller(!on).await?,
        (Mode::Baseline, Some(b)) => {
            b.active.send_replace(on);
        }
        (Mode::Baseline, None) => return Ok(()),
    }
    if !on {
        // A poll in flight when the switch flipped still completes: wait for quiet.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let before = rig.source.status_requests();
            tokio::time::sleep(o.poll_interval * 3).await;
            if rig.source.status_requests() == before {
                break;
            }
            if Instant::now() > deadline {
                return Err(failed("switching modes", "the source is still polled 10 s later"));
            }
        }
    }
    Ok(())
}

/// One block: a first head the active path must deliver to `el` (not measured), then `n`
/// head changes every `every`, each matched with `el`'s first forkchoice update reaching it.
async fn block(
    rig: &mut Rig,
    el: &MockEl,
    n: usize,
    every: Duration,
    t: &mut Tally,
) -> Result<(), BenchError> {
    let first = rig.advance().await?.hash;
    wait_for("the EL to follow the block's first head", Duration::from_secs(30), || async {
        el.calls().iter().any(|c| c.fcu.as_ref().is_some_and(|f| f.state.head_block_hash == first))
    })
    .await?;
    let skip = el.calls().len();
    rig.source.take_served();
    let polls0 = rig.source.status_requests();
    let mut tick = crate::rig::ticker(every);
    tick.tick().await;
    let t0 = Instant::now();
    let mut heads: Vec<(B256, u64)> = Vec::with_capacity(n);
    for _ in 0..n {
        tick.tick().await;
        let b = rig.advance().await?;
        heads.push((b.hash, b.number));
    }
    let elapsed = t0.elapsed();
    let (last_hash, _) = heads.last().copied().unwrap_or_default();
    let _ = wait_for("the last head to reach the EL", Duration::from_secs(10), || async {
        el.calls()
            .iter()
            .skip(skip)
            .any(|c| c.fcu.as_ref().is_some_and(|f| f.state.head_block_hash == last_hash))
    })
    .await;
    let numbers: HashMap<B256, u64> = rig.chain().iter().map(|b| (b.hash, b.number)).collect();
    let fcus: Vec<Fcu> = timeline::fcus(el, skip, &numbers);
    let served = rig.source.take_served();
    let m = timeline::match_heads(&heads, &served, &fcus);
    t.block_p50.push(Summary::of(&m.latencies).map(|s| s.p50));
    t.latencies.extend(m.latencies);
    t.unserved += m.unserved;
    t.unreached += m.unreached;
    t.coalesced += m.coalesced;
    t.polls += rig.source.status_requests() - polls0;
    t.time += elapsed;
    t.heads.extend(heads);
    t.fcus.extend(fcus);
    t.served.extend(served);
    Ok(())
}

/// Prints one mode's figures; returns its summary.
fn report(label: &str, t: &Tally, o: &Options) -> Option<Summary> {
    let summary = Summary::of(&t.latencies);
    println!("== {label}");
    match &summary {
        Some(s) => println!("  serving poll -> EL FCU: {s}"),
        None => println!("  no head reached the EL"),
    }
    let p50s: Vec<String> = t.block_p50.iter().map(|d| d.map_or("-".into(), ms)).collect();
    println!("  p50 of each block (ms): {}", p50s.join(" "));
    let secs = t.time.as_secs_f64().max(1e-9);
    println!(
        "  heads {}, never served {}, served but never reached {}, reached via a later head {}; FCUs {} ({} VALID); polls {} in {:.1} s ({:.0}/s)",
        t.heads.len(),
        t.unserved,
        t.unreached,
        t.coalesced,
        t.fcus.len(),
        t.fcus.iter().filter(|f| f.valid).count(),
        t.polls,
        secs,
        t.polls as f64 / secs
    );
    println!(
        "  not included: the wait for the serving poll, on average interval/2 = {} ms (the head changes at a random point of the poll cycle)",
        ms(o.poll_interval / 2)
    );
    summary
}

/// The validator's L1 batch time and targets (early copies among them) between two pages.
fn print_validator(page0: &str, page1: &str) {
    let d = |n: &str| metric_sum(page1, n) - metric_sum(page0, n);
    let (sum, count) = (
        d("lightcl_validator_l1_request_duration_seconds_sum"),
        d("lightcl_validator_l1_request_duration_seconds_count"),
    );
    if count > 0.0 {
        println!(
            "  validator L1 batch (anvil): {count:.0} requests, mean {:.3} ms",
            1000.0 * sum / count
        );
    }
    let targets = |page: &str| {
        page.lines()
            .filter(|l| l.starts_with("lightcl_validator_statuses_total{verdict=\"target\""))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum::<f64>()
    };
    println!(
        "  validator: {:.0} targets, {:.0} of them from early copies of the statuses",
        targets(page1) - targets(page0),
        d("lightcl_validator_early_targets_total")
    );
}

/// Stage times of the pipeline's measured heads, from the probe's sightings.
fn print_stages(t: &Tally, (statuses, targets): (Seen, Seen)) {
    let span = |from: &HashMap<B256, Instant>, to: &HashMap<B256, Instant>| {
        let d: Vec<Duration> = t
            .heads
            .iter()
            .filter_map(|(h, _)| Some(to.get(h)?.saturating_duration_since(*from.get(h)?)))
            .collect();
        Summary::of(&d)
    };
    let mut first_fcu: HashMap<B256, Instant> = HashMap::new();
    for f in &t.fcus {
        first_fcu.entry(f.head).or_insert(f.at);
    }
    for (name, s) in [
        ("source served -> status on the bus (poller)", span(&t.served, &statuses)),
        ("status on the bus -> target on the bus (validator)", span(&statuses, &targets)),
        ("target on the bus -> EL FCU (engine-driver)", span(&targets, &first_fcu)),
    ] {
        if let Some(s) = s {
            println!("  stage {name}: {s}");
        }
    }
}

/// When each head was first seen, by hash.
type Seen = HashMap<B256, Instant>;

/// A core-NATS subscriber recording when each status and target (by unsafe head) is seen.
struct BusWatch {
    cancel: CancellationToken,
    seen: Arc<std::sync::Mutex<(Seen, Seen)>>,
}

impl BusWatch {
    async fn start(url: &str) -> Result<Self, BenchError> {
        use futures::StreamExt;
        use lightcl_bus::subjects;
        use prost::Message;
        let client = async_nats::connect(url).await.ctx("NATS")?;
        let mut statuses =
            client.subscribe(subjects::status_filter(CHAIN_ID)).await.ctx("subscribe")?;
        let mut targets = client.subscribe(subjects::target(CHAIN_ID)).await.ctx("subscribe")?;
        client.flush().await.ctx("flush")?;
        let seen = Arc::new(std::sync::Mutex::new((HashMap::new(), HashMap::new())));
        let cancel = CancellationToken::new();
        let (c, s) = (cancel.clone(), seen.clone());
        tokio::spawn(async move {
            let _client = client;
            loop {
                tokio::select! {
                    () = c.cancelled() => return,
                    Some(m) = statuses.next() => {
                        let at = Instant::now();
                        if let Ok(raw) = lightcl_proto::v1::RawStatus::decode(m.payload.as_ref())
                            && let Ok(st) = raw.core_status()
                        {
                            let mut g = s.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                            g.0.entry(st.unsafe_l2.hash).or_insert(at);
                        }
                    }
                    Some(m) = targets.next() => {
                        let at = Instant::now();
                        if let Ok(t) = lightcl_proto::v1::Target::decode(m.payload.as_ref())
                            && let Ok(t) = t.to_core()
                        {
                            let mut g = s.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                            g.1.entry(t.unsafe_l2.hash).or_insert(at);
                        }
                    }
                }
            }
        });
        Ok(Self { cancel, seen })
    }

    fn stop(self) -> (Seen, Seen) {
        self.cancel.cancel();
        std::mem::take(&mut *self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

/// The bus-less baseline: the poller's source client and publish decision, the validator's
/// rules with its real L1 batch reader, and the engine-driver's planner with its real
/// HTTP+JWT engine client, in one task, one status at a time; it polls only while `active`.
async fn in_process(
    source_url: String,
    l1_url: String,
    el_url: String,
    secret: alloy_rpc_types_engine::JwtSecret,
    interval: Duration,
    mut active: tokio::sync::watch::Receiver<bool>,
    cancel: CancellationToken,
) -> Result<(), BenchError> {
    let parse = |u: &str| u.parse::<lightcl_rpc::Endpoint>().ctx("url");
    let source = lightcl_poller::source::Source::new(parse(&source_url)?, Duration::from_secs(2))
        .ctx("source client")?;
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = lightcl_validator::metrics::Metrics::new(&mut registry);
    let mut l1 =
        L1Reader::new(parse(&l1_url)?, Duration::from_secs(2), metrics).ctx("L1 reader")?;
    let el =
        EngineClient::new(parse(&el_url)?, secret, Duration::from_secs(8), Duration::from_secs(2))
            .map_err(|e| failed("engine client", e))?;
    let mut publication = Publication::new(Duration::from_secs(10));
    let mut validator = Validator::new(ValidatorConfig { chain_id: CHAIN_ID, quorum: 1 }, None);
    let mut planner = Planner::new(PlannerConfig::default());
    let epoch = Instant::now();
    let now = || u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
    let mut retry_at: Option<u64> = None;
    let start = planner.start(now());
    execute(&mut planner, &el, start, &mut retry_at, &now).await;
    let mut next = tokio::time::Instant::now();
    loop {
        let on = *active.borrow_and_update();
        tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            Ok(()) = active.changed() => {
                next = tokio::time::Instant::now();
                continue;
            }
            () = tokio::time::sleep_until(next), if on => {}
        }
        let started = Instant::now();
        if let Some(at) = retry_at
            && now() >= at
        {
            retry_at = None;
            let actions = planner.on_timer(now());
            execute(&mut planner, &el, actions, &mut retry_at, &now).await;
        }
        let Ok(status) = source.sync_status().await else {
            next = tokio::time::Instant::now() + interval;
            continue;
        };
        let content = lightcl_bus::status_content_hash(&status);
        let wall_ms = wall_now_ms();
        if let PollDecision::Publish { slot, .. } = publication.decide(&content, wall_ms) {
            publication.stored(content, slot);
            let obs = Observation { chain_id: CHAIN_ID, source_id: "bench".into(), status };
            if let Ok(plan) = validator.plan(&obs)
                && let Ok(answers) = l1.fetch(&plan).await
                && let Verdict::Accept(a) = validator.decide(&obs, &answers)
            {
                validator.commit(a.target);
                let actions = planner.on_target(a.target, now());
                execute(&mut planner, &el, actions, &mut retry_at, &now).await;
            }
        }
        next = tokio::time::Instant::now() + next_delay(interval, started.elapsed(), None);
    }
}

fn wall_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Performs the planner's actions (and the ones they lead to) like the engine-driver does.
async fn execute(
    planner: &mut Planner,
    el: &EngineClient,
    actions: Vec<Action>,
    retry_at: &mut Option<u64>,
    now: &impl Fn() -> u64,
) {
    let mut queue: std::collections::VecDeque<Action> = actions.into();
    while let Some(a) = queue.pop_front() {
        let more = match a {
            Action::SendFcu(fc) => {
                let (outcome, _) = el.forkchoice_updated(&fc).await;
                planner.on_fcu_answer(outcome, now())
            }
            Action::ReadElHeads => {
                let h = el.heads().await.map_err(|e| e.to_string());
                planner.on_el_heads(h, now())
            }
            Action::ReadElBlock { number } => {
                let b = el.block_at(number).await;
                planner.on_el_block(number, b, now())
            }
            Action::ScheduleRetry { after_ms } => {
                *retry_at = Some(now().saturating_add(after_ms));
                Vec::new()
            }
            Action::PublishEngineState | Action::Alert(_) => Vec::new(),
        };
        queue.extend(more);
    }
}
