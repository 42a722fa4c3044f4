//! The commands: `status`, `watch`, `pause`, `resume`, `resync`. Each returns the process
//! exit code (see [`crate::exit_code`]); output goes to `out`, diagnostics to `err`.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use futures::StreamExt;
use futures::future::join_all;
use futures::stream::BoxStream;
use lightcl_proto::v1;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cli::{Cli, Command, GlobalArgs, Kind, Output, TargetArgs, ViewArgs, WatchArgs};
use crate::client::{CallError, Connector};
use crate::config::{ConfigError, Setup};
use crate::exit_code;
use crate::fleet::{self, FleetUpdate};
use crate::render::render;
use crate::report::{DriverView, ErrorView, FleetNode, PollerView, Report, ValidatorView};

/// Run a parsed command line. `cancel` stops `watch` (wire it to Ctrl-C).
pub async fn run(
    cli: Cli,
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
    cancel: CancellationToken,
) -> i32 {
    let result = match &cli.command {
        Command::Status(view) => status(&cli.global, view, out, err).await,
        Command::Watch(args) => watch(&cli.global, args, out, err, cancel).await,
        Command::Pause(p) => {
            mutate(&cli.global, Action::Pause(p.reason.clone()), &p.target, out, err).await
        }
        Command::Resume(t) => mutate(&cli.global, Action::Resume, t, out, err).await,
        Command::Resync(r) => {
            let t = TargetArgs { args: vec![r.target.clone()] };
            mutate(&cli.global, Action::Resync, &t, out, err).await
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(err, "{}", usage_line(&e));
            exit_code::USAGE
        }
    }
}

/// `error: <flag>: <reason>` on one line.
pub fn usage_line(e: &ConfigError) -> String {
    format!("error: {e}").replace(['\n', '\r'], " ")
}

fn now_ms() -> u64 {
    lightcl_runtime::now_ms()
}

fn setup_for_view(
    global: &GlobalArgs,
    view: &ViewArgs,
) -> Result<(Setup, Connector, fleet::NatsAuth), ConfigError> {
    let setup = Setup::resolve(global, Some(view))?;
    if setup.services.is_empty() && setup.nats_url.is_none() {
        return Err(ConfigError::Flag {
            flag: "--poller/--validator/--driver/--nats.url",
            reason: "nothing to show: give service addresses, --nats.url, or --config".into(),
        });
    }
    let conn = Connector::from_setup(&setup)?;
    let nats = fleet::NatsAuth::from_args(&setup.nats_auth)?;
    Ok((setup, conn, nats))
}

async fn ask_poller(conn: &Connector, url: &str) -> Result<PollerView, CallError> {
    let mut c = conn.poller(url).await?;
    let s = conn.unary(Kind::Poller, c.get_status(v1::GetStatusRequest {})).await?;
    Ok(PollerView::from(&s))
}

async fn ask_validator(conn: &Connector, url: &str) -> Result<ValidatorView, CallError> {
    let mut c = conn.validator(url).await?;
    let s = conn.unary(Kind::Validator, c.get_status(v1::GetStatusRequest {})).await?;
    Ok(ValidatorView::from(&s))
}

async fn ask_driver(conn: &Connector, url: &str) -> Result<DriverView, CallError> {
    let mut c = conn.driver(url).await?;
    let s = conn.unary(Kind::Driver, c.get_status(v1::GetStatusRequest {})).await?;
    Ok(DriverView::from(&s))
}

/// Ask every service and the KV bucket once, concurrently.
pub async fn collect(setup: &Setup, conn: &Connector, nats: &fleet::NatsAuth) -> Report {
    let mut report = Report::pending(&setup.services, None);
    let urls = |k: Kind| -> Vec<String> {
        setup.services.iter().filter(|s| s.kind == k).map(|s| s.url.clone()).collect()
    };
    let (pollers, validators, drivers) =
        (urls(Kind::Poller), urls(Kind::Validator), urls(Kind::Driver));
    let fleet = async {
        match &setup.nats_url {
            Some(url) => Some(fleet::read(url, nats, setup.chain_id, setup.timeout).await),
            None => None,
        }
    };
    let (p, v, d, f) = tokio::join!(
        join_all(pollers.iter().map(|u| ask_poller(conn, u))),
        join_all(validators.iter().map(|u| ask_validator(conn, u))),
        join_all(drivers.iter().map(|u| ask_driver(conn, u))),
        fleet,
    );
    for (e, r) in report.pollers.iter_mut().zip(p) {
        e.set(r);
    }
    for (e, r) in report.validators.iter_mut().zip(v) {
        e.set(r);
    }
    for (e, r) in report.drivers.iter_mut().zip(d) {
        e.set(r);
    }
    report.fleet = f;
    report.finish(now_ms());
    report
}

async fn status(
    global: &GlobalArgs,
    view: &ViewArgs,
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
) -> Result<i32, ConfigError> {
    let (setup, conn, nats) = setup_for_view(global, view)?;
    let report = collect(&setup, &conn, &nats).await;
    print_report(&report, global.output, false, out);
    for line in report.errors() {
        let _ = writeln!(err, "error: {line}");
    }
    Ok(report.exit_code)
}

fn print_report(report: &Report, output: Output, redraw: bool, out: &mut (dyn Write + Send)) {
    match output {
        Output::Json if redraw => {
            let _ = writeln!(out, "{}", serde_json::to_string(report).unwrap_or_default());
        }
        Output::Json => {
            let _ = writeln!(out, "{}", serde_json::to_string_pretty(report).unwrap_or_default());
        }
        Output::Text => {
            if redraw {
                // Clear the screen and home the cursor.
                let _ = write!(out, "\x1b[H\x1b[2J");
            }
            let _ = write!(out, "{}", render(report));
        }
    }
    let _ = out.flush();
}

/// A service's status in watch mode.
#[derive(Debug)]
enum ServiceView {
    Poller(Box<PollerView>),
    Validator(Box<ValidatorView>),
    Driver(Box<DriverView>),
}

#[derive(Debug)]
enum Update {
    Service { kind: Kind, index: usize, result: Result<ServiceView, CallError> },
    FleetSnapshot(crate::report::FleetView),
    Fleet(FleetUpdate),
}

const RETRY_MIN: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(5);

async fn open_watch(
    conn: &Connector,
    kind: Kind,
    url: &str,
) -> Result<BoxStream<'static, Result<ServiceView, tonic::Status>>, CallError> {
    let req = v1::WatchStatusRequest {};
    Ok(match kind {
        Kind::Poller => {
            let mut c = conn.poller(url).await?;
            let s = conn.unary(kind, c.watch_status(req)).await?;
            s.map(|r| r.map(|m| ServiceView::Poller(Box::new(PollerView::from(&m))))).boxed()
        }
        Kind::Validator => {
            let mut c = conn.validator(url).await?;
            let s = conn.unary(kind, c.watch_status(req)).await?;
            s.map(|r| r.map(|m| ServiceView::Validator(Box::new(ValidatorView::from(&m))))).boxed()
        }
        Kind::Driver => {
            let mut c = conn.driver(url).await?;
            let s = conn.unary(kind, c.watch_status(req)).await?;
            s.map(|r| r.map(|m| ServiceView::Driver(Box::new(DriverView::from(&m))))).boxed()
        }
    })
}

/// Follow one service's WatchStatus stream, reconnecting with backoff.
async fn watch_service(
    conn: Connector,
    kind: Kind,
    index: usize,
    url: String,
    tx: mpsc::Sender<Update>,
    cancel: CancellationToken,
) {
    let mut delay = RETRY_MIN;
    loop {
        let error = match open_watch(&conn, kind, &url).await {
            Err(e) => e,
            Ok(mut stream) => loop {
                let next = tokio::select! {
                    () = cancel.cancelled() => return,
                    n = stream.next() => n,
                };
                match next {
                    Some(Ok(view)) => {
                        delay = RETRY_MIN;
                        if tx.send(Update::Service { kind, index, result: Ok(view) }).await.is_err()
                        {
                            return;
                        }
                    }
                    Some(Err(s)) => break CallError::from_status(&s, kind.grpc_service()),
                    None => {
                        break CallError::Unreachable(
                            "status stream ended (service shutting down?)".into(),
                        );
                    }
                }
            },
        };
        if tx.send(Update::Service { kind, index, result: Err(error) }).await.is_err() {
            return;
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(RETRY_MAX);
    }
}

/// Follow the KV bucket: a snapshot, then a watch, again after failures.
async fn watch_fleet(
    url: String,
    auth: fleet::NatsAuth,
    chain_id: Option<u64>,
    timeout: Duration,
    tx: mpsc::Sender<Update>,
    cancel: CancellationToken,
) {
    let mut delay = RETRY_MIN;
    loop {
        let snapshot = tokio::select! {
            () = cancel.cancelled() => return,
            s = fleet::read(&url, &auth, chain_id, timeout) => s,
        };
        let ok = snapshot.error.is_none();
        if tx.send(Update::FleetSnapshot(snapshot)).await.is_err() {
            return;
        }
        if ok {
            match fleet::watch(&url, &auth, chain_id, timeout).await {
                Ok(mut stream) => loop {
                    let next = tokio::select! {
                        () = cancel.cancelled() => return,
                        n = stream.next() => n,
                    };
                    match next {
                        // No bucket yet: look again later (the snapshot said so already).
                        Some(FleetUpdate::NoBucket) => break,
                        Some(u) => {
                            let failed = matches!(u, FleetUpdate::Failed(_));
                            if !failed {
                                delay = RETRY_MIN;
                            }
                            if tx.send(Update::Fleet(u)).await.is_err() {
                                return;
                            }
                            if failed {
                                break;
                            }
                        }
                        None => {
                            let e = fleet::FleetError::WatchEnded;
                            if tx.send(Update::Fleet(FleetUpdate::Failed(e))).await.is_err() {
                                return;
                            }
                            break;
                        }
                    }
                },
                Err(e) => {
                    if tx.send(Update::Fleet(FleetUpdate::Failed(e))).await.is_err() {
                        return;
                    }
                }
            }
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(RETRY_MAX);
    }
}

fn apply(report: &mut Report, nodes: &mut BTreeMap<String, FleetNode>, u: Update) {
    match u {
        Update::Service { kind, index, result } => match (kind, result) {
            (Kind::Poller, r) => {
                if let Some(e) = report.pollers.get_mut(index) {
                    e.set(r.and_then(|v| match v {
                        ServiceView::Poller(p) => Ok(*p),
                        _ => Err(CallError::WrongService(kind.grpc_service())),
                    }));
                }
            }
            (Kind::Validator, r) => {
                if let Some(e) = report.validators.get_mut(index) {
                    e.set(r.and_then(|v| match v {
                        ServiceView::Validator(p) => Ok(*p),
                        _ => Err(CallError::WrongService(kind.grpc_service())),
                    }));
                }
            }
            (Kind::Driver, r) => {
                if let Some(e) = report.drivers.get_mut(index) {
                    e.set(r.and_then(|v| match v {
                        ServiceView::Driver(p) => Ok(*p),
                        _ => Err(CallError::WrongService(kind.grpc_service())),
                    }));
                }
            }
        },
        Update::FleetSnapshot(view) => {
            nodes.clear();
            nodes.extend(view.nodes.iter().map(|n| (n.key.clone(), n.clone())));
            report.fleet = Some(view);
        }
        Update::Fleet(u) => {
            let Some(f) = report.fleet.as_mut() else { return };
            match u {
                FleetUpdate::Put(n) => {
                    f.error = None;
                    nodes.insert(n.key.clone(), *n);
                }
                FleetUpdate::Removed(k) => {
                    nodes.remove(&k);
                }
                FleetUpdate::Failed(e) => f.error = Some(e.view()),
                FleetUpdate::NoBucket => nodes.clear(),
            }
            f.nodes = nodes.values().cloned().collect();
        }
    }
}

async fn watch(
    global: &GlobalArgs,
    args: &WatchArgs,
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
    cancel: CancellationToken,
) -> Result<i32, ConfigError> {
    let (setup, conn, nats) = setup_for_view(global, &args.view)?;
    let tasks = cancel.child_token();
    let (tx, mut rx) = mpsc::channel(64);
    let mut counters: BTreeMap<Kind, usize> = BTreeMap::new();
    let mut handles = Vec::new();
    for s in &setup.services {
        let index = counters.entry(s.kind).or_default();
        handles.push(tokio::spawn(watch_service(
            conn.clone(),
            s.kind,
            *index,
            s.url.clone(),
            tx.clone(),
            tasks.clone(),
        )));
        *index += 1;
    }
    let fleet = setup.nats_url.as_ref().map(|u| fleet::empty(u, setup.chain_id));
    if let Some(url) = &setup.nats_url {
        handles.push(tokio::spawn(watch_fleet(
            url.clone(),
            nats.clone(),
            setup.chain_id,
            setup.timeout,
            tx.clone(),
            tasks.clone(),
        )));
    }
    drop(tx);

    let mut report = Report::pending(&setup.services, fleet);
    let mut nodes = BTreeMap::new();
    // Services (and the fleet) that have answered or failed at least once.
    let expected = setup.services.len() + usize::from(setup.nats_url.is_some());
    let mut heard = std::collections::HashSet::new();
    // First draw once everyone was heard from, or after the timeout at the latest.
    let first_draw = Instant::now() + setup.timeout * 2;
    let mut dirty = true;
    let mut printed: u64 = 0;
    let mut next_draw = first_draw;
    let redraw = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut reported_errors = std::collections::HashSet::new();
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            u = rx.recv() => {
                let Some(u) = u else { break };
                heard.insert(match &u {
                    Update::Service { kind, index, .. } => format!("{kind}{index}"),
                    Update::FleetSnapshot(_) | Update::Fleet(_) => "fleet".into(),
                });
                apply(&mut report, &mut nodes, u);
                dirty = true;
                if printed == 0 && heard.len() >= expected {
                    next_draw = Instant::now();
                }
            }
            () = tokio::time::sleep_until(next_draw), if dirty => {
                report.finish(now_ms());
                print_report(&report, global.output, redraw || global.output == Output::Json, out);
                for line in report.errors() {
                    // Each distinct problem once on stderr; the table shows the current state.
                    if reported_errors.insert(line.clone()) {
                        let _ = writeln!(err, "error: {line}");
                    }
                }
                printed += 1;
                dirty = false;
                next_draw = Instant::now() + args.redraw_interval;
                if args.updates.is_some_and(|n| printed >= n) {
                    break;
                }
            }
        }
    }
    tasks.cancel();
    for h in handles {
        let _ = h.await;
    }
    report.finish(now_ms());
    Ok(report.exit_code)
}

/// A mutating call.
#[derive(Debug, Clone)]
enum Action {
    Pause(String),
    Resume,
    Resync,
}

impl Action {
    fn name(&self) -> &'static str {
        match self {
            Self::Pause(_) => "pause",
            Self::Resume => "resume",
            Self::Resync => "resync",
        }
    }
}

/// The JSON answer of pause/resume/resync.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct MutationReport {
    /// `poller`, `validator` or `driver`.
    pub kind: Option<String>,
    /// The address called.
    pub endpoint: String,
    /// `pause`, `resume` or `resync`.
    pub action: String,
    /// Paused after the call (pause/resume).
    pub paused: Option<bool>,
    /// The driver's status after a resync.
    pub status: Option<DriverView>,
    /// Why it failed, if it did.
    pub error: Option<ErrorView>,
    /// The exit code.
    pub exit_code: i32,
}

async fn call(
    conn: &Connector,
    kind: Kind,
    url: &str,
    action: &Action,
) -> Result<MutationOk, CallError> {
    let paused = |s: v1::PauseState| MutationOk::Paused(s.paused);
    match (kind, action) {
        (Kind::Poller, Action::Pause(reason)) => {
            let mut c = conn.poller(url).await?;
            conn.unary(kind, c.pause(v1::PauseRequest { reason: reason.clone() })).await.map(paused)
        }
        (Kind::Poller, Action::Resume) => {
            let mut c = conn.poller(url).await?;
            conn.unary(kind, c.resume(v1::ResumeRequest {})).await.map(paused)
        }
        (Kind::Validator, Action::Pause(reason)) => {
            let mut c = conn.validator(url).await?;
            conn.unary(kind, c.pause(v1::PauseRequest { reason: reason.clone() })).await.map(paused)
        }
        (Kind::Validator, Action::Resume) => {
            let mut c = conn.validator(url).await?;
            conn.unary(kind, c.resume(v1::ResumeRequest {})).await.map(paused)
        }
        (Kind::Driver, Action::Pause(reason)) => {
            let mut c = conn.driver(url).await?;
            conn.unary(kind, c.pause(v1::PauseRequest { reason: reason.clone() })).await.map(paused)
        }
        (Kind::Driver, Action::Resume) => {
            let mut c = conn.driver(url).await?;
            conn.unary(kind, c.resume(v1::ResumeRequest {})).await.map(paused)
        }
        (Kind::Driver, Action::Resync) => {
            let mut c = conn.driver(url).await?;
            let s = conn.unary(kind, c.resync(v1::ResyncRequest {})).await?;
            Ok(MutationOk::Resynced(Box::new(DriverView::from(&s))))
        }
        (_, Action::Resync) => Err(CallError::WrongService(Kind::Driver.grpc_service())),
    }
}

enum MutationOk {
    Paused(bool),
    Resynced(Box<DriverView>),
}

async fn mutate(
    global: &GlobalArgs,
    action: Action,
    target: &TargetArgs,
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
) -> Result<i32, ConfigError> {
    let setup = Setup::resolve(global, None)?;
    let (kind, name) = match target.args.as_slice() {
        [name] => (None, name.as_str()),
        [kind, name] => {
            let k = Kind::parse(kind).ok_or_else(|| ConfigError::Flag {
                flag: "[KIND]",
                reason: format!("unknown kind {kind:?} (expected poller, validator or driver)"),
            })?;
            (Some(k), name.as_str())
        }
        _ => {
            return Err(ConfigError::Flag {
                flag: "[KIND] TARGET",
                reason: "expected one target".into(),
            });
        }
    };
    let (mut kind, url) = setup.target(kind, name)?;
    if matches!(action, Action::Resync) {
        match kind {
            None => kind = Some(Kind::Driver),
            Some(Kind::Driver) => {}
            Some(k) => {
                return Err(ConfigError::Flag {
                    flag: "<TARGET>",
                    reason: format!("{name:?} is a {k}; resync applies to engine-drivers only"),
                });
            }
        }
    }
    let conn = Connector::from_setup(&setup)?;
    let result = match kind {
        Some(k) => call(&conn, k, &url, &action).await.map(|ok| (k, ok)),
        None => match conn.detect_kind(&url).await {
            Ok(k) => {
                kind = Some(k);
                call(&conn, k, &url, &action).await.map(|ok| (k, ok))
            }
            Err(e) => Err(e),
        },
    };
    let who = match kind {
        Some(k) => format!("{k} {url}"),
        None => url.clone(),
    };
    let mut report = MutationReport {
        kind: kind.map(|k| k.as_str().to_owned()),
        endpoint: url.clone(),
        action: action.name().to_owned(),
        paused: None,
        status: None,
        error: None,
        exit_code: exit_code::OK,
    };
    match result {
        Ok((_, MutationOk::Paused(p))) => report.paused = Some(p),
        Ok((_, MutationOk::Resynced(s))) => report.status = Some(*s),
        Err(e) => {
            report.exit_code = e.exit_code();
            let hint = if matches!(e, CallError::Unauthenticated(_)) && !conn.has_token() {
                " (no --token-file was given)"
            } else {
                ""
            };
            let _ = writeln!(err, "error: {} {who}: {e}{hint}", action.name());
            report.error = Some(ErrorView::from(&e));
        }
    }
    match global.output {
        Output::Json => {
            let _ = writeln!(out, "{}", serde_json::to_string_pretty(&report).unwrap_or_default());
        }
        Output::Text => {
            if let Some(p) = report.paused {
                let state = if p { "paused" } else { "running" };
                let _ = writeln!(out, "{who}: {state}");
            }
            if let Some(s) = &report.status {
                let mut r = Report::pending(
                    &[crate::config::Service { kind: Kind::Driver, name: None, url: url.clone() }],
                    None,
                );
                if let Some(e) = r.drivers.first_mut() {
                    e.set(Ok(s.clone()));
                }
                r.finish(now_ms());
                let _ = writeln!(out, "{who}: resync done");
                let _ = write!(out, "{}", render(&r));
            }
        }
    }
    let _ = out.flush();
    Ok(report.exit_code)
}
