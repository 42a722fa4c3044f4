//! # lightcl-tests
//!
//! End-to-end scenarios on the real service binaries (`lightcl-poller`, `lightcl-validator`,
//! `lightcl-engine-driver`) as child processes, with a real nats-server and a real anvil L1,
//! all started by [`lightcl_devnet::Devnet`].
//!
//! A scenario is an **action list**: each [`Action`] either changes the world (pause the source,
//! reorg L1, kill a service, ...) or waits for a condition **with a deadline** (never a sleep as
//! synchronisation). [`run`] executes the list, prints each step, and on failure reports the
//! step, the devnet's view and the tails of the service logs. After the last action it always
//! checks the invariants over every mock EL's full call log ([`Devnet::check_invariants`]).
//!
//! The service binaries are built once per test process by [`ensure_binaries`]
//! (`cargo build -p ...`), unless `LIGHTCL_BIN_DIR` points at them or they are newer than every
//! workspace source (then whatever build made them is used: another feature set, e.g. the one
//! `cargo nextest run --workspace` or `cargo build --workspace --bins` resolves, would
//! otherwise make cargo rebuild them here, inside a test's time budget).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use alloy_primitives::B256;
use lightcl_core::SyncStatus;
use lightcl_devnet::sim::{Lie, not_ready_status};
use lightcl_devnet::{Devnet, DevnetConfig, DevnetError, Service};
use lightcl_harness::wait;
use tokio::time::Instant;

/// The service binaries the scenarios start.
const SERVICE_BINS: [&str; 3] = ["lightcl-poller", "lightcl-validator", "lightcl-engine-driver"];

/// Their packages, and the workspace libraries they are built from (besides `proto/`).
const SERVICE_DIRS: [&str; 3] = ["services/poller", "services/validator", "services/engine-driver"];
const LIB_DIRS: [&str; 5] =
    ["crates/core", "crates/bus", "crates/runtime", "crates/telemetry", "crates/rpc"];

/// Newest modification time of the files under `path` (skipping `target` directories).
fn newest_mtime(path: &Path) -> Option<SystemTime> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_dir() {
        return meta.modified().ok();
    }
    std::fs::read_dir(path)
        .ok()?
        .flatten()
        .filter(|e| e.file_name() != "target")
        .filter_map(|e| newest_mtime(&e.path()))
        .max()
}

/// True when every service binary in `dir` is newer than every source it is built from (their
/// `src/` and manifests, the libraries they use, `proto/`, the workspace manifest and lock).
fn binaries_fresh(dir: &Path, root: &Path) -> bool {
    let built = SERVICE_BINS
        .iter()
        .map(|b| std::fs::metadata(dir.join(b)).and_then(|m| m.modified()).ok())
        .collect::<Option<Vec<_>>>()
        .and_then(|v| v.into_iter().min());
    let mut inputs: Vec<PathBuf> =
        ["Cargo.toml", "Cargo.lock", "proto"].iter().map(|p| root.join(p)).collect();
    for krate in SERVICE_DIRS.iter().chain(&LIB_DIRS) {
        inputs.push(root.join(krate).join("src"));
        inputs.push(root.join(krate).join("Cargo.toml"));
    }
    let sources = inputs.iter().filter_map(|p| newest_mtime(p)).max();
    matches!((built, sources), (Some(b), Some(s)) if b > s)
}

/// Builds the three service binaries (once per process, unless fresh) and returns their
/// directory.
pub fn ensure_binaries() -> Result<PathBuf, String> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(d) = std::env::var_os("LIGHTCL_BIN_DIR").filter(|d| !d.is_empty()) {
            return Ok(PathBuf::from(d));
        }
        let dir = lightcl_devnet::procs::bin_dir();
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        if binaries_fresh(&dir, &root) {
            return Ok(dir);
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = std::process::Command::new(cargo);
        cmd.current_dir(&root).args([
            "build",
            "--locked",
            "-q",
            "-p",
            "lightcl-poller",
            "-p",
            "lightcl-validator",
            "-p",
            "lightcl-engine-driver",
        ]);
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let out = cmd.output().map_err(|e| format!("cannot run cargo build: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "cargo build of the services failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(dir)
    })
    .clone()
}

/// The devnet settings the scenarios use: short block time and poll interval, a prefilled
/// source chain (so finalized is above genesis from the start), 1 EL.
pub fn fast_config() -> DevnetConfig {
    DevnetConfig {
        els: 1,
        block_time: Duration::from_millis(300),
        l2_per_l1: 3,
        poll_interval: Duration::from_millis(150),
        download_delay: Duration::from_millis(40),
        rederive_delay: Duration::from_millis(1200),
        prefill: 48,
        rust_log: "info".into(),
        ready_timeout: Duration::from_secs(20),
        ..DevnetConfig::default()
    }
}

/// One step of a scenario.
#[derive(Debug, Clone)]
pub enum Action {
    /// Wait until every EL's head, safe and finalized are on the source's chain and at least
    /// at the source's heads as they were when this action started.
    ElsReachSource(Duration),
    /// Wait until every EL's head, safe and finalized equal the source's exactly (use while the
    /// simulation is paused).
    ElsAtSource(Duration),
    /// Wait until every EL's head advanced by this many blocks (on the source's chain).
    ElsAdvance(u64, Duration),
    /// Stop L1 mining and L2 production.
    Pause,
    /// Resume them.
    Resume,
    /// Wait until the simulation has produced this many more blocks.
    WaitBlocks(u64, Duration),
    /// Wait until the source has answered this many more `optimism_syncStatus` calls.
    WaitPolls(u64, Duration),
    /// L1 reorg under the source's safe head's origin; the source re-derives after a delay.
    L1Reorg,
    /// L2 reorg of the newest N unsafe blocks at the source (same heights, new hashes).
    L2Reorg(u64),
    /// The source lies (forged safe head with a non-canonical L1 origin) or stops lying.
    Lying(bool),
    /// Remember the current rejection and target counts and every EL's heads under a name.
    Mark(&'static str),
    /// Wait until at least N rejections arrived since the mark (any reason if None).
    ExpectRejections {
        /// The mark.
        since: &'static str,
        /// How many.
        at_least: usize,
        /// Required reason (e.g. `REJECTION_REASON_L1_MISMATCH`), if any.
        reason: Option<&'static str>,
        /// Deadline.
        timeout: Duration,
    },
    /// Assert every rejection since the mark has one of these reasons.
    RejectionsOnlyOf {
        /// The mark.
        since: &'static str,
        /// Allowed reasons.
        reasons: &'static [&'static str],
    },
    /// Assert no target was published since the mark.
    NoTargetsSince(&'static str),
    /// Assert every EL's head, safe and finalized are still those it had at the mark.
    ElsUntouchedSince(&'static str),
    /// Wait until every EL's head, safe and finalized equal the newest target's.
    ElsAtLatestTarget(Duration),
    /// EL `i` answers SYNCING to every forkchoice update (true) or behaves normally (false).
    ElSyncing(usize, bool),
    /// Remember the source's current status under a name.
    Snapshot(&'static str),
    /// The source serves a remembered status (a replay) until [`Action::ServeLive`].
    ServeSnapshot(&'static str),
    /// The source serves its live status with `current_l1` unset (a restarting node).
    ServeNotReady,
    /// Back to the live status.
    ServeLive,
    /// Source down (connection refused).
    StopSource,
    /// Source up again.
    StartSource,
    /// Source `i` serves its live status with this lie, renewed every block (None: the truth
    /// again); see [`Lie`].
    SourceLie(usize, Option<Lie>),
    /// Source `i` keeps answering with its status frozen (true) or follows the chain again
    /// (false).
    StallSource(usize, bool),
    /// Source `i` down (connection refused).
    StopSourceAt(usize),
    /// Source `i` up again.
    StartSourceAt(usize),
    /// Wait until source `i` has answered this many more `optimism_syncStatus` calls.
    WaitSourcePolls(usize, u64, Duration),
    /// Assert every forkchoice update every EL received names only blocks of the source's
    /// canonical chain (head, safe and finalized; zero hashes aside), and no target on the
    /// bus carries a block a lying source served ([`only_canonical`]; for scenarios without
    /// reorgs).
    OnlyCanonicalForkchoice,
    /// Mock EL down.
    StopEl(usize),
    /// Mock EL up again.
    StartEl(usize),
    /// `kill -9` a service.
    Kill9(Service),
    /// Start it again and wait for `/ready`.
    Restart(Service),
    /// Assert the service process is still running.
    Alive(Service),
    /// Restart nats-server (same port and store), down for this long.
    RestartNats(Duration),
    /// Wait until every service answers `/ready`.
    AllReady(Duration),
    /// Wait until the service's `/ready` answers 200 (true) or anything else (false).
    WaitReady(Service, bool, Duration),
    /// Wait until the newest target on the bus carries the source's current unsafe head.
    LatestTargetIsSource(Duration),
    /// Assert targets' positions (epoch, revision) strictly increase — a later epoch at any
    /// revision, or a higher revision in the same epoch — and their finalized never decreases.
    TargetsMonotonic,
    /// Assert no EL's safe or finalized number ever went down in any FCU it accepted (VALID),
    /// since the mark (no L1 reorg in between).
    NoLabelRegression,
    /// An arbitrary check.
    Check(&'static str, fn(&Devnet) -> Result<(), String>),
    /// An arbitrary wait.
    WaitUntil(&'static str, Duration, fn(&Devnet) -> bool),
}

/// What [`Action::Mark`] remembers.
struct MarkState {
    rejections: usize,
    targets: usize,
    /// Per EL: head, safe, finalized hashes.
    els: Vec<[B256; 3]>,
}

/// Scenario state kept between actions.
#[derive(Default)]
struct Memory {
    marks: HashMap<&'static str, MarkState>,
    snapshots: HashMap<&'static str, SyncStatus>,
}

/// Starts a devnet with `cfg`, runs `actions` and the final invariant checks, shuts down.
pub async fn scenario(name: &str, cfg: DevnetConfig, actions: Vec<Action>) -> Result<(), String> {
    let started = Instant::now();
    let bin_dir = ensure_binaries()?;
    let cfg = DevnetConfig { bin_dir: Some(bin_dir), ..cfg };
    let mut net = Devnet::start(cfg).await.map_err(|e| format!("[{name}] devnet start: {e}"))?;
    eprintln!("[{name}] devnet up in {:?} ({})", started.elapsed(), net.dir().display());
    let result = run(name, &mut net, actions).await;
    let result = result.and_then(|()| {
        net.check_invariants().map_err(|v| {
            format!(
                "[{name}] invariant violations:\n  {}",
                v.into_iter().take(20).collect::<Vec<_>>().join("\n  ")
            )
        })
    });
    let result = match result {
        Ok(()) => Ok(()),
        Err(e) => {
            let mut msg = e;
            for s in net.service_list() {
                msg.push_str(&format!("\n---- {s} log tail ----\n{}", net.log_tail(s, 12)));
            }
            Err(msg)
        }
    };
    net.shutdown().await;
    eprintln!("[{name}] finished in {:?}", started.elapsed());
    result
}

/// Runs the actions in order against a running devnet.
pub async fn run(name: &str, net: &mut Devnet, actions: Vec<Action>) -> Result<(), String> {
    let mut mem = Memory::default();
    for (i, a) in actions.into_iter().enumerate() {
        let t = Instant::now();
        let desc = format!("{a:?}");
        let desc = desc.split(" fn(").next().unwrap_or(&desc).to_owned();
        exec(net, &mut mem, a).await.map_err(|e| {
            format!(
                "[{name}] step {i} {desc} failed after {:?}: {e}\nview: {}",
                t.elapsed(),
                net.view()
            )
        })?;
        eprintln!(
            "[{name}] step {i} ok in {:>6.2}s: {desc} | {}",
            t.elapsed().as_secs_f64(),
            net.view()
        );
    }
    Ok(())
}

fn err(e: DevnetError) -> String {
    e.to_string()
}

async fn exec(net: &mut Devnet, mem: &mut Memory, a: Action) -> Result<(), String> {
    match a {
        Action::ElsReachSource(t) => {
            let st = net.source_status();
            let (h, s, f) = (st.unsafe_l2.number, st.safe_l2.number, st.finalized_l2.number);
            net.wait_for(&format!("ELs at ≥ {h}/{s}/{f} on the source chain"), t, |n| {
                (0..n.el_count()).all(|i| n.el_reached(i, h, s, f))
            })
            .await
            .map_err(err)
        }
        Action::ElsAtSource(t) => net
            .wait_for("ELs exactly at the source's heads", t, Devnet::all_at_source)
            .await
            .map_err(err),
        Action::ElsAdvance(by, t) => {
            let min = (0..net.el_count()).map(|i| net.el(i).head().number).min().unwrap_or(0);
            let goal = min + by;
            net.wait_for(&format!("every EL head ≥ {goal}"), t, |n| {
                (0..n.el_count()).all(|i| n.el_reached(i, goal, 0, 0))
            })
            .await
            .map_err(err)
        }
        Action::Pause => {
            net.set_paused(true);
            Ok(())
        }
        Action::Resume => {
            net.set_paused(false);
            Ok(())
        }
        Action::WaitBlocks(k, t) => {
            let goal = net.ticks() + k;
            net.wait_for(&format!("{k} more source blocks"), t, |n| n.ticks() >= goal)
                .await
                .map_err(err)
        }
        Action::WaitPolls(k, t) => {
            let goal = net.source_requests() + k;
            net.wait_for(&format!("{k} more polls"), t, |n| n.source_requests() >= goal)
                .await
                .map_err(err)
        }
        Action::L1Reorg => {
            net.inject_l1_reorg().await.map(|d| eprintln!("    L1 reorg depth {d}")).map_err(err)
        }
        Action::L2Reorg(d) => {
            let new = net.inject_l2_reorg(d);
            if new.is_empty() { Err("nothing to reorg above the safe head".into()) } else { Ok(()) }
        }
        Action::Lying(on) => {
            net.set_lying(on);
            Ok(())
        }
        Action::Mark(m) => {
            let els = (0..net.el_count()).map(|i| el_heads(net, i)).collect();
            let state =
                MarkState { rejections: net.rejections().len(), targets: net.targets().len(), els };
            mem.marks.insert(m, state);
            Ok(())
        }
        Action::ExpectRejections { since, at_least, reason, timeout } => {
            let from = mark(mem, since)?.rejections;
            net.wait_for(
                &format!("{at_least} rejection(s) {reason:?} since {since}"),
                timeout,
                |n| {
                    n.rejections()[from.min(n.rejections().len())..]
                        .iter()
                        .filter(|r| reason.is_none_or(|x| r.reason == x))
                        .count()
                        >= at_least
                },
            )
            .await
            .map_err(err)
        }
        Action::RejectionsOnlyOf { since, reasons } => {
            let from = mark(mem, since)?.rejections;
            let rs = net.rejections();
            match rs
                .get(from..)
                .unwrap_or_default()
                .iter()
                .find(|r| !reasons.contains(&r.reason.as_str()))
            {
                Some(r) => Err(format!(
                    "rejection since {since} with reason {} ({}), expected one of {reasons:?}",
                    r.reason, r.message
                )),
                None => Ok(()),
            }
        }
        Action::ElsUntouchedSince(m) => {
            let before = &mark(mem, m)?.els;
            for (i, then) in before.iter().enumerate() {
                let now = el_heads(net, i);
                if now != *then {
                    return Err(format!("el-{i} heads changed since {m}: {then:?} → {now:?}"));
                }
            }
            Ok(())
        }
        Action::ElsAtLatestTarget(t) => net
            .wait_for("every EL at the newest target's heads", t, |n| {
                let Some(x) = n.targets().last().copied() else { return false };
                let want = [x.unsafe_l2.hash, x.safe_l2.hash, x.finalized_l2.hash];
                (0..n.el_count()).all(|i| el_heads(n, i) == want)
            })
            .await
            .map_err(err),
        Action::ElSyncing(i, on) => {
            net.set_el_syncing(i, on);
            Ok(())
        }
        Action::NoTargetsSince(m) => {
            let from = mark(mem, m)?.targets;
            let targets = net.targets();
            if targets.len() > from {
                return Err(format!(
                    "{} target(s) published since {m}: {:?}",
                    targets.len() - from,
                    &targets[from..]
                ));
            }
            Ok(())
        }
        Action::Snapshot(name) => {
            mem.snapshots.insert(name, net.source_status());
            Ok(())
        }
        Action::ServeSnapshot(name) => {
            let st =
                mem.snapshots.get(name).cloned().ok_or_else(|| format!("no snapshot {name}"))?;
            net.set_override(Some(st));
            Ok(())
        }
        Action::ServeNotReady => {
            net.set_override(Some(not_ready_status(net.source_status())));
            Ok(())
        }
        Action::ServeLive => {
            net.set_override(None);
            Ok(())
        }
        Action::StopSource => {
            net.stop_source().await;
            Ok(())
        }
        Action::StartSource => net.start_source().await.map_err(err),
        Action::SourceLie(i, lie) => {
            net.set_source_lie(i, lie);
            Ok(())
        }
        Action::StallSource(i, on) => {
            net.set_source_stalled(i, on);
            Ok(())
        }
        Action::StopSourceAt(i) => {
            net.stop_source_at(i).await;
            Ok(())
        }
        Action::StartSourceAt(i) => net.start_source_at(i).await.map_err(err),
        Action::WaitSourcePolls(i, k, t) => {
            let goal = net.source_requests_at(i) + k;
            net.wait_for(&format!("{k} more polls of source {i}"), t, |n| {
                n.source_requests_at(i) >= goal
            })
            .await
            .map_err(err)
        }
        Action::OnlyCanonicalForkchoice => only_canonical(net),
        Action::StopEl(i) => {
            net.stop_el(i).await;
            Ok(())
        }
        Action::StartEl(i) => net.start_el(i).await.map_err(err),
        Action::Kill9(s) => {
            net.kill9(s).await;
            Ok(())
        }
        Action::Restart(s) => net.restart(s).await.map_err(err),
        Action::Alive(s) => {
            if net.is_running(s) {
                Ok(())
            } else {
                Err(format!("{s} is not running"))
            }
        }
        Action::WaitReady(s, want, t) => readiness_is(net, s, want, Instant::now() + t)
            .await
            .map_err(|()| format!("{s} readiness is not {want} after {t:?}")),
        Action::RestartNats(d) => net.restart_nats(d).await.map_err(err),
        Action::AllReady(t) => {
            let deadline = Instant::now() + t;
            for s in net.service_list() {
                readiness_is(net, s, true, deadline)
                    .await
                    .map_err(|()| format!("{s} not ready after {t:?}"))?;
            }
            Ok(())
        }
        Action::LatestTargetIsSource(t) => net
            .wait_for("the newest target carries the source's unsafe head", t, |n| {
                let st = n.source_status();
                n.targets().last().is_some_and(|x| x.unsafe_l2.hash == st.unsafe_l2.hash)
            })
            .await
            .map_err(err),
        Action::TargetsMonotonic => lightcl_devnet::checks::targets_monotonic(&net.targets()),
        Action::NoLabelRegression => {
            for i in 0..net.el_count() {
                label_regression(net, i)?;
            }
            Ok(())
        }
        Action::Check(what, f) => f(net).map_err(|e| format!("{what}: {e}")),
        Action::WaitUntil(what, t, f) => net.wait_for(what, t, f).await.map_err(err),
    }
}

fn mark<'a>(mem: &'a Memory, name: &str) -> Result<&'a MarkState, String> {
    mem.marks.get(name).ok_or_else(|| format!("no mark {name}"))
}

/// EL `i`'s head, safe and finalized hashes.
fn el_heads(net: &Devnet, i: usize) -> [B256; 3] {
    let el = net.el(i);
    [el.head().hash, el.safe().hash, el.finalized().hash]
}

/// Polls `/ready` of `s` (every 50 ms) until it is `want`; `Err` at the deadline.
async fn readiness_is(net: &Devnet, s: Service, want: bool, deadline: Instant) -> Result<(), ()> {
    let every = Duration::from_millis(50);
    wait::until_async(deadline, every, || async { net.is_ready(s).await == want })
        .await
        .map_err(drop)
}

/// Every forkchoice update of every EL names only blocks of the source's current canonical
/// chain (head, safe and finalized; zero hashes aside), whatever the EL answered, and no target
/// seen on the bus carries a block a lying source served. For scenarios without reorgs (a
/// reorged-away block is not canonical either).
pub fn only_canonical(net: &Devnet) -> Result<(), String> {
    let canonical = |h: B256| {
        net.block_number(h).is_some_and(|n| net.canonical(n).is_some_and(|b| b.hash == h))
    };
    let what = |h: B256| match net.forged_by(h) {
        Some((s, lie)) => format!("a block source {s} served as a lie ({lie})"),
        None => "not a canonical block".to_owned(),
    };
    for i in 0..net.el_count() {
        for (n, f) in net.el(i).fcus().iter().enumerate() {
            let st = &f.state;
            for (label, h) in [
                ("head", st.head_block_hash),
                ("safe", st.safe_block_hash),
                ("finalized", st.finalized_block_hash),
            ] {
                if h != B256::ZERO && !canonical(h) {
                    return Err(format!("el-{i} FCU {n}: {label} {h} is {}", what(h)));
                }
            }
        }
    }
    for t in net.targets() {
        for (label, b) in
            [("unsafe", t.unsafe_l2), ("safe", t.safe_l2), ("finalized", t.finalized_l2)]
        {
            if net.forged_by(b.hash).is_some() || !canonical(b.hash) {
                return Err(format!(
                    "target {} {label} #{} {} is {}",
                    t.position(),
                    b.number,
                    b.hash,
                    what(b.hash)
                ));
            }
        }
    }
    Ok(())
}

/// Safe and finalized numbers of VALID FCUs never go down on EL `i`.
fn label_regression(net: &Devnet, i: usize) -> Result<(), String> {
    use lightcl_harness::mock_el::FcuReply;
    let el = net.el(i);
    let (mut safe, mut fin) = (0u64, 0u64);
    for (n, f) in el.fcus().iter().enumerate() {
        if f.reply != FcuReply::Valid {
            continue;
        }
        let num = |h| net.block_number(h);
        if let Some(s) = num(f.state.safe_block_hash) {
            if s < safe {
                return Err(format!("el-{i} FCU {n}: safe went back {safe} → {s}"));
            }
            safe = s;
        }
        if let Some(x) = num(f.state.finalized_block_hash) {
            if x < fin {
                return Err(format!("el-{i} FCU {n}: finalized went back {fin} → {x}"));
            }
            fin = x;
        }
    }
    Ok(())
}

/// Shuts the devnet down; on failure panics with the error, the devnet's view and the
/// services' log tails.
pub async fn finish(net: Devnet, result: Result<(), String>) {
    let tails: Vec<String> = net
        .service_list()
        .into_iter()
        .map(|s| format!("---- {s} log tail ----\n{}", net.log_tail(s, 15)))
        .collect();
    let view = net.view().to_string();
    net.shutdown().await;
    if let Err(e) = result {
        panic!("{e}\nview: {view}\n{}", tails.join("\n"));
    }
}
