//! Figure 1: internal latency, source poll → mock EL forkchoice update, through the real
//! poller, validator and engine-driver processes and NATS; then the same core logic in one
//! task with no bus (the baseline).

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
    /// Head changes measured per mode.
    #[arg(long, default_value_t = 1000)]
    pub heads: usize,
    /// Time between head changes at the source.
    #[arg(long = "head-every", default_value = "25ms", value_parser = humantime::parse_duration)]
    pub head_every: Duration,
    /// Poll interval of the poller (and of the baseline).
    #[arg(long = "poll-interval", default_value = "10ms", value_parser = humantime::parse_duration)]
    pub poll_interval: Duration,
    /// Warm-up head changes (not measured).
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

/// One mode's result.
#[derive(Debug)]
pub struct Outcome {
    /// The latency summary.
    pub summary: Option<Summary>,
}

/// Runs the benchmark and prints its figures.
pub async fn run(rig_opts: RigOptions, o: &Options) -> Result<(), BenchError> {
    let mut rig = Rig::start(RigOptions { els: 1, ..rig_opts }).await?;
    println!(
        "latency: {} head changes per mode, a new head every {:?}, poll interval {:?}, validator early copies {}",
        o.heads,
        o.head_every,
        o.poll_interval,
        if o.early_copies { "on" } else { "off" }
    );
    let mut pipeline = None;
    if !o.skip_pipeline {
        let anvil = rig.anvil_url().to_owned();
        let early = format!("--status.early-copies={}", o.early_copies);
        rig.spawn_validator_with(&anvil, &[early.as_str()])?;
        rig.spawn_poller(o.poll_interval)?;
        rig.spawn_drivers()?;
        rig.wait_ready(Duration::from_secs(60)).await?;
        let el = rig.els[0].clone();
        let nats = rig.nats_url();
        let page0 = rig.metrics("validator").await?;
        let label = if o.stages {
            "pipeline (3 processes + NATS), with the stage probe"
        } else {
            "pipeline (3 processes + NATS)"
        };
        let probe = o.stages.then_some(nats.as_str());
        let out = measure(&mut rig, &el, o, label, probe).await?;
        let page1 = rig.metrics("validator").await?;
        let d = |n: &str| metric_sum(&page1, n) - metric_sum(&page0, n);
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
            targets(&page1) - targets(&page0),
            d("lightcl_validator_early_targets_total")
        );
        for name in ["poller", "validator", "engine-driver-0"] {
            rig.stop_service(name).await;
        }
        pipeline = out.summary;
    }
    let mut baseline = None;
    if !o.skip_baseline {
        // A fresh EL at genesis that knows the whole chain so far.
        let secret = alloy_rpc_types_engine::JwtSecret::random();
        let mut c = MockElConfig::new(secret);
        c.chain_id = CHAIN_ID;
        c.download_delay = Duration::ZERO;
        c.genesis = rig.genesis();
        let el = Arc::new(MockEl::start(c).await.ctx("baseline EL")?);
        el.add_network_blocks(rig.chain());
        rig.els.push(el.clone());
        let cancel = CancellationToken::new();
        let task = tokio::spawn(in_process(
            rig.source.url(),
            rig.anvil_url().to_owned(),
            el.url(),
            secret,
            o.poll_interval,
            cancel.clone(),
        ));
        let out = measure(&mut rig, &el, o, "in-process baseline (no bus)", None).await;
        cancel.cancel();
        let inner = task.await.ctx("baseline task")?;
        inner?;
        baseline = out?.summary;
    }
    if let (Some(p), Some(b)) = (pipeline, baseline) {
        let r = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
        println!(
            "ratio pipeline/baseline: p50 {:.2}x  p99 {:.2}x  mean {:.2}x",
            r(p.p50, b.p50),
            r(p.p99, b.p99),
            r(p.mean, b.mean)
        );
        let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
        println!(
            "goal p99 <= 5 ms: {}; goal ratio <= 1.5x: p50 {}, p99 {}",
            verdict(p.p99 <= Duration::from_millis(5)),
            verdict(r(p.p50, b.p50) <= 1.5),
            verdict(r(p.p99, b.p99) <= 1.5)
        );
    }
    rig.shutdown().await;
    Ok(())
}

/// Moves the head `warmup + heads` times and matches the measured heads with `el`'s updates.
async fn measure(
    rig: &mut Rig,
    el: &MockEl,
    o: &Options,
    label: &str,
    nats: Option<&str>,
) -> Result<Outcome, BenchError> {
    // Pipeline stages as seen by a core-NATS subscriber (statuses and targets by unsafe head).
    let bus_seen = match nats {
        Some(url) => Some(BusWatch::start(url).await?),
        None => None,
    };
    // Warm-up: connections open, consumers bound, the EL following.
    let mut tick = tokio::time::interval(o.head_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = rig.status().unsafe_l2;
    for _ in 0..o.warmup {
        tick.tick().await;
        last = rig.advance().await?;
    }
    let want = last.hash;
    wait_for("the EL to follow the warm-up head", Duration::from_secs(30), || async {
        el.calls().iter().any(|c| c.fcu.as_ref().is_some_and(|f| f.state.head_block_hash == want))
    })
    .await?;
    let skip = el.calls().len();
    rig.source.take_served();
    let polls0 = rig.source.status_requests();
    let t0 = Instant::now();
    let mut heads: Vec<(B256, u64)> = Vec::with_capacity(o.heads);
    for _ in 0..o.heads {
        tick.tick().await;
        let b = rig.advance().await?;
        heads.push((b.hash, b.number));
    }
    let elapsed = t0.elapsed();
    let (last_hash, last_number) = heads.last().copied().unwrap_or_default();
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
    let stages = bus_seen.map(|w| w.stop());
    let summary = Summary::of(&m.latencies);
    let polls = rig.source.status_requests() - polls0;
    println!("== {label}");
    match &summary {
        Some(s) => println!("  serving poll -> EL FCU: {s}"),
        None => println!("  no head reached the EL"),
    }
    println!(
        "  heads {} (last #{last_number}), never served {}, served but never reached {}, reached via a later head {}; FCUs {} ({} VALID); polls {} in {:.1} s ({:.0}/s)",
        heads.len(),
        m.unserved,
        m.unreached,
        m.coalesced,
        fcus.len(),
        fcus.iter().filter(|f| f.valid).count(),
        polls,
        elapsed.as_secs_f64(),
        polls as f64 / elapsed.as_secs_f64()
    );
    if let Some((statuses, targets)) = stages {
        let span = |from: &HashMap<B256, Instant>, to: &HashMap<B256, Instant>| {
            let d: Vec<Duration> = heads
                .iter()
                .filter_map(|(h, _)| Some(to.get(h)?.saturating_duration_since(*from.get(h)?)))
                .collect();
            Summary::of(&d)
        };
        let first_fcu: HashMap<B256, Instant> = {
            let mut m = HashMap::new();
            for f in &fcus {
                m.entry(f.head).or_insert(f.at);
            }
            m
        };
        for (name, s) in [
            ("source served -> status on the bus (poller)", span(&served, &statuses)),
            ("status on the bus -> target on the bus (validator)", span(&statuses, &targets)),
            ("target on the bus -> EL FCU (engine-driver)", span(&targets, &first_fcu)),
        ] {
            if let Some(s) = s {
                println!("  stage {name}: {s}");
            }
        }
    }
    println!(
        "  not included: the wait for the serving poll, on average interval/2 = {} ms (the head changes at a random point of the poll cycle)",
        ms(o.poll_interval / 2)
    );
    Ok(Outcome { summary })
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
/// HTTP+JWT engine client, in one task, one status at a time.
async fn in_process(
    source_url: String,
    l1_url: String,
    el_url: String,
    secret: alloy_rpc_types_engine::JwtSecret,
    interval: Duration,
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
        tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            () = tokio::time::sleep_until(next) => {}
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
