//! Observability end to end (issue 8), on the real service binaries:
//!
//! - one trace from poll to forkchoice update: an in-process OTLP/gRPC receiver collects the
//!   spans the three services export, and for one safe-head change the poller's `poller.poll`,
//!   the validator's `validator.status` (with its L1 `jsonrpc.batch` as a child) and the
//!   engine-driver's `engine_driver.target` → `engine_driver.fcu` share one trace id, with
//!   parent links, `service.name`s and searchable attributes; a lying source's rejection is
//!   found by its reason, under the poll that fetched it;
//! - every series `deploy/dashboards/metrics.txt` documents is on its service's `/metrics`,
//!   with the documented type, help text and labels, and the ones that follow the chain move
//!   (and agree with each other and with the source);
//! - the dashboard (`lightcl.json`) and the alert rules (`alerts.yaml`) parse, and every
//!   `lightcl_*` metric they use is documented and exported by a running service.
//!
//! `alerts.yaml` is read with a small parser for the block-style YAML subset the deploy files
//! use (no YAML crate is a dependency); anything outside that subset is an error, so a file it
//! accepts is valid YAML with the structure asserted here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use lightcl_devnet::{Devnet, DevnetConfig, SeenTarget, Service};
use lightcl_harness::otlp::{OtlpReceiver, ReceivedSpan};
use lightcl_harness::wait;
use lightcl_tests::{ensure_binaries, fast_config, finish};

const SOURCE_ID: &str = "devnet-source";

fn repo_file(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo_file(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

/// Starts a devnet on freshly built binaries.
async fn start(cfg: DevnetConfig) -> Devnet {
    let bin_dir = ensure_binaries().unwrap_or_else(|e| panic!("{e}"));
    Devnet::start(DevnetConfig { bin_dir: Some(bin_dir), ..cfg })
        .await
        .unwrap_or_else(|e| panic!("devnet start: {e}"))
}

// ---- 1. one trace from poll to forkchoice update ---------------------------------------------

/// The spans of one safe-head change, found by trace id (links are asserted afterwards).
#[derive(Debug)]
struct Chain {
    target: SeenTarget,
    poll: ReceivedSpan,
    status: ReceivedSpan,
    batch: ReceivedSpan,
    driver_target: ReceivedSpan,
    fcu: ReceivedSpan,
}

/// `#<number> <hash>`, how the engine-driver's spans render a block.
fn block_id(b: &lightcl_core::L2BlockRef) -> String {
    format!("#{} {}", b.number, b.hash)
}

/// The spans of trace `trace` called `name`.
fn in_trace<'a>(
    spans: &'a [ReceivedSpan],
    trace: &'a str,
    name: &'a str,
) -> impl Iterator<Item = &'a ReceivedSpan> + 'a {
    spans.iter().filter(move |s| s.trace_id == trace && s.name == name)
}

/// For the newest target that changed the safe head and whose whole trace has arrived: its
/// spans. Matching is by trace id only, so broken parent links fail the assertions (with a
/// message), not this search.
fn find_chain(spans: &[ReceivedSpan], targets: &[SeenTarget]) -> Option<Chain> {
    targets.windows(2).rev().filter(|w| w[1].safe_l2.number != w[0].safe_l2.number).find_map(|w| {
        let t = w[1];
        let rev = t.revision.to_string();
        let status = spans.iter().find(|s| {
            s.name == "validator.status"
                && s.attr("verdict") == Some("target")
                && s.attr("revision") == Some(rev.as_str())
        })?;
        let trace = status.trace_id.as_str();
        let safe = block_id(&t.safe_l2);
        Some(Chain {
            target: t,
            poll: in_trace(spans, trace, "poller.poll").next()?.clone(),
            status: status.clone(),
            batch: in_trace(spans, trace, "jsonrpc.batch")
                .find(|s| s.service == "validator")?
                .clone(),
            driver_target: in_trace(spans, trace, "engine_driver.target")
                .find(|s| s.attr("revision") == Some(rev.as_str()))?
                .clone(),
            fcu: in_trace(spans, trace, "engine_driver.fcu")
                .find(|s| {
                    s.attr("answer") == Some("valid") && s.attr("safe") == Some(safe.as_str())
                })?
                .clone(),
        })
    })
}

/// What arrived, for a failure message: span counts by service and name.
fn summary(spans: &[ReceivedSpan]) -> String {
    let mut n: BTreeMap<(String, String), usize> = BTreeMap::new();
    for s in spans {
        *n.entry((s.service.clone(), s.name.clone())).or_default() += 1;
    }
    n.iter().map(|((svc, name), c)| format!("{svc}/{name}: {c}")).collect::<Vec<_>>().join(", ")
}

fn check(cond: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if cond { Ok(()) } else { Err(what()) }
}

fn attr_is(span: &ReceivedSpan, key: &str, want: &str) -> Result<(), String> {
    check(span.attr(key) == Some(want), || {
        format!(
            "{}/{}: attribute {key} is {:?}, want {want:?} (all: {:?})",
            span.service,
            span.name,
            span.attr(key),
            span.attributes
        )
    })
}

fn child_of(child: &ReceivedSpan, parent: &ReceivedSpan) -> Result<(), String> {
    check(child.trace_id == parent.trace_id && child.parent_span_id == parent.span_id, || {
        format!(
            "{}/{} (trace {}, parent {:?}) is not a child of {}/{} (trace {}, span {})",
            child.service,
            child.name,
            child.trace_id,
            child.parent_span_id,
            parent.service,
            parent.name,
            parent.trace_id,
            parent.span_id
        )
    })
}

fn assert_chain(c: &Chain, chain_id: u64) -> Result<(), String> {
    let t = &c.target;
    let chain = chain_id.to_string();
    // One trace id, the poll at its root, each link to the right parent.
    for s in [&c.status, &c.batch, &c.driver_target, &c.fcu] {
        check(s.trace_id == c.poll.trace_id, || format!("{} not in the poll's trace", s.name))?;
    }
    check(c.poll.is_root(), || format!("the poll span has a parent: {:?}", c.poll))?;
    child_of(&c.status, &c.poll)?;
    child_of(&c.batch, &c.status)?;
    child_of(&c.driver_target, &c.status)?;
    child_of(&c.fcu, &c.driver_target)?;
    // Each from its own service.
    for (s, svc) in [
        (&c.poll, "poller"),
        (&c.status, "validator"),
        (&c.batch, "validator"),
        (&c.driver_target, "engine-driver"),
        (&c.fcu, "engine-driver"),
    ] {
        check(s.service == svc, || {
            format!("{} has service.name {:?}, want {svc}", s.name, s.service)
        })?;
    }
    // Searchable attributes: chain, source, L2 numbers, revision, FCU answer.
    let (u, s, f) = (
        t.unsafe_l2.number.to_string(),
        t.safe_l2.number.to_string(),
        t.finalized_l2.number.to_string(),
    );
    let rev = t.revision.to_string();
    attr_is(&c.poll, "chain_id", &chain)?;
    attr_is(&c.poll, "source_id", SOURCE_ID)?;
    attr_is(&c.poll, "safe_l2", &s)?;
    check(c.poll.attr("poll_seq").is_some_and(|x| x.parse::<u64>().is_ok()), || {
        format!("poll span without a numeric poll_seq: {:?}", c.poll.attributes)
    })?;
    attr_is(&c.status, "chain_id", &chain)?;
    attr_is(&c.status, "source_id", SOURCE_ID)?;
    attr_is(&c.status, "poll_seq", c.poll.attr("poll_seq").unwrap_or_default())?;
    attr_is(&c.status, "unsafe_l2", &u)?;
    attr_is(&c.status, "safe_l2", &s)?;
    attr_is(&c.status, "finalized_l2", &f)?;
    attr_is(&c.status, "revision", &rev)?;
    attr_is(&c.status, "verdict", "target")?;
    // The status the validator accepted is the one this poll observed.
    for k in ["unsafe_l2", "finalized_l2"] {
        attr_is(&c.poll, k, c.status.attr(k).unwrap_or_default())?;
    }
    check(c.status.kind == "consumer", || format!("validator.status kind {}", c.status.kind))?;
    attr_is(&c.batch, "rpc.method", "eth_getBlockByNumber")?;
    check(c.batch.kind == "client", || format!("jsonrpc.batch kind {}", c.batch.kind))?;
    check(c.batch.attr("rpc.batch_size").and_then(|n| n.parse::<u64>().ok()) >= Some(1), || {
        format!("jsonrpc.batch size: {:?}", c.batch.attributes)
    })?;
    attr_is(&c.driver_target, "chain_id", &chain)?;
    attr_is(&c.driver_target, "revision", &rev)?;
    attr_is(&c.driver_target, "safe_l2", &block_id(&t.safe_l2))?;
    attr_is(&c.driver_target, "node_id", "el-0")?;
    attr_is(&c.fcu, "chain_id", &chain)?;
    attr_is(&c.fcu, "node_id", "el-0")?;
    attr_is(&c.fcu, "answer", "valid")?;
    attr_is(&c.fcu, "safe", &block_id(&t.safe_l2))?;
    attr_is(&c.fcu, "finalized", &block_id(&t.finalized_l2))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_from_poll_to_forkchoice_update() {
    let rx = OtlpReceiver::start().await.expect("OTLP receiver");
    let cfg = DevnetConfig {
        extra_env: vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), rx.endpoint()),
            ("OTEL_BSP_SCHEDULE_DELAY".into(), "200".into()),
        ],
        ..fast_config()
    };
    let net = start(cfg).await;
    let chain_id = net.config().chain_id;
    let every = Duration::from_millis(100);
    let found = wait::until_async(Duration::from_secs(30), every, || {
        std::future::ready(find_chain(&rx.spans(), &net.targets()))
    })
    .await;
    let spans = rx.spans();
    let result = match found {
        Ok(c) => {
            eprintln!(
                "trace {} for target r{} (safe #{}): {} spans in all",
                c.poll.trace_id,
                c.target.revision,
                c.target.safe_l2.number,
                spans.len()
            );
            for s in [&c.poll, &c.status, &c.batch, &c.driver_target, &c.fcu] {
                eprintln!(
                    "  {}/{} span {} parent {:?} {:?}",
                    s.service, s.name, s.span_id, s.parent_span_id, s.attributes
                );
            }
            assert_chain(&c, chain_id)
        }
        Err(_) => Err(format!(
            "no safe-head change with a complete trace (poll → status + L1 batch → target → \
             VALID FCU) within 30 s; {} targets seen, {} export requests, spans: {}",
            net.targets().len(),
            rx.requests(),
            summary(&spans)
        )),
    };
    let result = match result {
        Ok(()) => rejection_is_searchable(&net, &rx).await,
        e => e,
    };
    finish(net, result).await;
}

/// A lying source's status is rejected in a `validator.status` span that carries the reason
/// and continues the poll's trace.
async fn rejection_is_searchable(net: &Devnet, rx: &OtlpReceiver) -> Result<(), String> {
    let before = net.rejections().len();
    net.set_lying(true);
    net.wait_for("a rejection of the lying source", Duration::from_secs(15), |n| {
        n.rejections().len() > before
    })
    .await
    .map_err(|e| e.to_string())?;
    net.set_lying(false);
    let seen = net.rejections()[before].reason.clone();
    let reason = seen.strip_prefix("REJECTION_REASON_").unwrap_or(&seen).to_ascii_lowercase();
    let rejected_under_poll = |spans: &[ReceivedSpan]| {
        let found = spans.iter().find(|s| {
            s.name == "validator.status"
                && s.attr("verdict") == Some("rejected")
                && s.attr("reason") == Some(reason.as_str())
        });
        // The poller exports on its own schedule: wait for the parent too.
        let poll = found.and_then(|st| spans.iter().find(|p| p.span_id == st.parent_span_id));
        found.cloned().zip(poll.cloned())
    };
    let every = Duration::from_millis(100);
    let found = wait::until_async(Duration::from_secs(10), every, || {
        std::future::ready(rejected_under_poll(&rx.spans()))
    })
    .await;
    let Ok((status, poll)) = found else {
        let spans = rx.spans();
        let found = spans.iter().find(|s| {
            s.name == "validator.status"
                && s.attr("verdict") == Some("rejected")
                && s.attr("reason") == Some(reason.as_str())
        });
        return Err(format!(
            "no validator.status span with verdict=rejected reason={reason} (bus saw {seen}) \
             under a poll span within 10 s: {found:?}; spans: {}",
            summary(&spans)
        ));
    };
    check(poll.name == "poller.poll", || format!("rejection's parent is {}", poll.name))?;
    child_of(&status, &poll)?;
    attr_is(&status, "source_id", SOURCE_ID)?;
    attr_is(&status, "safe_l2", poll.attr("safe_l2").unwrap_or_default())?;
    Ok(())
}

// ---- 2. /metrics: documented series exist and move --------------------------------------------

/// One line of metrics.txt.
#[derive(Debug, Clone)]
struct Documented {
    name: String,
    kind: String,
    /// Label name → allowed values (`None`: not a closed set).
    labels: BTreeMap<String, Option<BTreeSet<String>>>,
}

/// Parses deploy/dashboards/metrics.txt (`name type labels`, `#` comments).
fn documented() -> Vec<Documented> {
    let mut out = Vec::new();
    for line in read("deploy/dashboards/metrics.txt").lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, r) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let r = r.trim_start();
        let (kind, rest) = r.split_once(char::is_whitespace).unwrap_or((r, ""));
        let (name, kind, rest) = (name.to_owned(), kind.to_owned(), rest.trim());
        assert!(
            ["counter", "gauge", "histogram"].contains(&kind.as_str()),
            "metrics.txt: {name}: unknown type {kind:?}"
        );
        out.push(Documented { name, kind, labels: parse_labels(rest) });
    }
    assert!(!out.is_empty(), "metrics.txt lists no metric");
    out
}

/// `-` or `a (x|y), b (empty unless ...: p|q)` → {a: {x,y}, b: {"", p, q}}.
fn parse_labels(spec: &str) -> BTreeMap<String, Option<BTreeSet<String>>> {
    let mut out = BTreeMap::new();
    if spec.starts_with('-') || spec.is_empty() {
        return out;
    }
    let mut rest = spec;
    while let Some(open) = rest.find('(') {
        let name = rest[..open].trim().trim_start_matches(',').trim().to_owned();
        let close = rest[open..].find(')').map_or(rest.len(), |c| open + c);
        let group = &rest[open + 1..close];
        let (prefix, list) = group.rsplit_once(':').unwrap_or(("", group));
        let mut values: BTreeSet<String> =
            list.split('|').map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()).collect();
        if prefix.contains("empty") {
            values.insert(String::new());
        }
        let closed =
            values.iter().all(|v| v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        out.insert(name, closed.then_some(values));
        rest = rest.get(close + 1..).unwrap_or_default();
    }
    out
}

/// One sample of a Prometheus text page.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed `/metrics` page.
#[derive(Debug, Default)]
struct Page {
    types: BTreeMap<String, String>,
    help: BTreeMap<String, String>,
    samples: Vec<Sample>,
}

impl Page {
    fn parse(text: &str) -> Result<Self, String> {
        let mut p = Self::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (n, t) = rest.split_once(' ').ok_or_else(|| format!("bad TYPE: {line}"))?;
                p.types.insert(n.to_owned(), t.trim().to_owned());
            } else if let Some(rest) = line.strip_prefix("# HELP ") {
                let (n, h) = rest.split_once(' ').unwrap_or((rest, ""));
                p.help.insert(n.to_owned(), h.trim().to_owned());
            } else if line.starts_with('#') || line.trim().is_empty() {
            } else {
                p.samples.push(parse_sample(line).ok_or_else(|| format!("bad sample: {line}"))?);
            }
        }
        Ok(p)
    }

    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.name == name
                    && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
    }

    fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.name == name)
    }
}

fn parse_sample(line: &str) -> Option<Sample> {
    let (head, value) = line.rsplit_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let (name, labels) = match head.split_once('{') {
        None => (head.to_owned(), BTreeMap::new()),
        Some((n, l)) => {
            let l = l.strip_suffix('}')?;
            let mut map = BTreeMap::new();
            // Label values here never contain `",` (our values are snake_case words).
            for pair in l.split("\",").filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once("=\"")?;
                map.insert(k.trim().to_owned(), v.trim_end_matches('"').to_owned());
            }
            (n.to_owned(), map)
        }
    };
    Some(Sample { name, labels, value })
}

/// The service that exports `name` (by its `lightcl_<service>_` prefix).
fn owner(name: &str) -> Service {
    if name.starts_with("lightcl_poller_") {
        Service::Poller
    } else if name.starts_with("lightcl_validator_") {
        Service::Validator
    } else if name.starts_with("lightcl_engine_driver_") {
        Service::Driver(0)
    } else {
        panic!("{name}: not a lightcl_<service>_ name")
    }
}

async fn scrape(net: &Devnet, s: Service) -> Result<Page, String> {
    let text = net.metrics(s).await.ok_or_else(|| format!("{s}: /metrics does not answer 200"))?;
    Page::parse(&text).map_err(|e| format!("{s}: {e}"))
}

/// Scrapes in pipeline order from the end (driver, validator, poller): values that only grow
/// then satisfy `later stage ≤ earlier stage` across the pages.
async fn scrape_all(net: &Devnet) -> Result<BTreeMap<&'static str, Page>, String> {
    let mut out = BTreeMap::new();
    out.insert("engine-driver", scrape(net, Service::Driver(0)).await?);
    out.insert("validator", scrape(net, Service::Validator).await?);
    out.insert("poller", scrape(net, Service::Poller).await?);
    Ok(out)
}

fn page_of<'a>(pages: &'a BTreeMap<&'static str, Page>, name: &str) -> &'a Page {
    let key = match owner(name) {
        Service::Poller | Service::SourcePoller(_) => "poller",
        Service::Validator | Service::ValidatorReplica(_) => "validator",
        Service::Driver(_) => "engine-driver",
    };
    &pages[key]
}

/// The documented metric exists with its type, help text and labels.
fn exists(d: &Documented, page: &Page) -> Result<(), String> {
    let family = match d.kind.as_str() {
        "counter" => d
            .name
            .strip_suffix("_total")
            .ok_or_else(|| format!("metrics.txt: counter {} lacks _total", d.name))?,
        _ => d.name.as_str(),
    };
    check(page.types.get(family).map(String::as_str) == Some(d.kind.as_str()), || {
        format!("{}: TYPE {:?}, documented {}", d.name, page.types.get(family), d.kind)
    })?;
    check(page.help.get(family).is_some_and(|h| !h.is_empty()), || {
        format!("{}: no help text", d.name)
    })?;
    let sample_names: Vec<String> = match d.kind.as_str() {
        "histogram" => {
            ["_bucket", "_sum", "_count"].iter().map(|s| format!("{family}{s}")).collect()
        }
        _ => vec![d.name.clone()],
    };
    for n in &sample_names {
        check(page.named(n).next().is_some(), || format!("{}: no sample {n}", d.name))?;
    }
    for s in page.named(&d.name) {
        let keys: BTreeSet<&String> = s.labels.keys().collect();
        let want: BTreeSet<&String> = d.labels.keys().collect();
        check(keys == want, || format!("{}: labels {keys:?}, documented {want:?}", d.name))?;
        for (k, allowed) in &d.labels {
            if let Some(allowed) = allowed {
                let v = &s.labels[k];
                check(allowed.contains(v), || {
                    format!("{}: {k}={v:?} is not documented ({allowed:?})", d.name)
                })?;
            }
        }
    }
    Ok(())
}

/// Series that follow the chain: (name, labels). Each must grow while the devnet runs.
const MOVING: &[(&str, &[(&str, &str)])] = &[
    ("lightcl_poller_polls_total", &[("result", "ok")]),
    ("lightcl_poller_poll_duration_seconds_count", &[]),
    ("lightcl_poller_observed_unsafe", &[]),
    ("lightcl_poller_observed_safe", &[]),
    ("lightcl_poller_observed_finalized", &[]),
    ("lightcl_poller_publishes_total", &[("result", "ok")]),
    ("lightcl_validator_statuses_total", &[("verdict", "target")]),
    ("lightcl_validator_last_target_unsafe", &[]),
    ("lightcl_validator_last_target_safe", &[]),
    ("lightcl_validator_last_target_finalized", &[]),
    ("lightcl_validator_l1_requests_total", &[("outcome", "ok")]),
    ("lightcl_validator_l1_request_duration_seconds_count", &[]),
    ("lightcl_engine_driver_fcu_total", &[("answer", "valid")]),
    ("lightcl_engine_driver_fcu_duration_seconds_count", &[]),
    ("lightcl_engine_driver_applied_head", &[]),
    ("lightcl_engine_driver_applied_safe", &[]),
    ("lightcl_engine_driver_applied_finalized", &[]),
    ("lightcl_engine_driver_e2e_lag_seconds_count", &[]),
];

fn value(pages: &BTreeMap<&'static str, Page>, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    page_of(pages, name).get(name, labels)
}

/// Heads agree along the pipeline: EL-applied ≤ target ≤ observed ≤ source.
fn heads_agree(
    pages: &BTreeMap<&'static str, Page>,
    source: (u64, u64, u64),
) -> Result<(), String> {
    for (stage, (applied, target, observed, src)) in [
        ("unsafe", ("applied_head", "last_target_unsafe", "observed_unsafe", source.0)),
        ("safe", ("applied_safe", "last_target_safe", "observed_safe", source.1)),
        (
            "finalized",
            ("applied_finalized", "last_target_finalized", "observed_finalized", source.2),
        ),
    ] {
        let get = |n: String| value(pages, &n, &[]).ok_or_else(|| format!("no sample {n}"));
        let a = get(format!("lightcl_engine_driver_{applied}"))?;
        let t = get(format!("lightcl_validator_{target}"))?;
        let o = get(format!("lightcl_poller_{observed}"))?;
        check(a <= t && t <= o && o <= src as f64, || {
            format!("{stage}: applied {a} ≤ target {t} ≤ observed {o} ≤ source {src} does not hold")
        })?;
    }
    Ok(())
}

async fn metrics_body(net: &Devnet) -> Result<(), String> {
    let docs = documented();
    // Wait for the first VALID FCU, so every stage has produced its first samples.
    net.wait_for("a VALID FCU at the EL", Duration::from_secs(20), |n| {
        n.el(0).fcus().iter().any(|f| f.reply == lightcl_harness::mock_el::FcuReply::Valid)
    })
    .await
    .map_err(|e| e.to_string())?;
    let first = scrape_all(net).await?;
    for d in &docs {
        exists(d, page_of(&first, &d.name))?;
    }
    // The dashboard and alerts use only metrics a running service exports.
    for m in dashboard_metrics().into_iter().chain(alert_metrics()) {
        let base = base_name(&m, &docs);
        let d = docs.iter().find(|d| d.name == base).ok_or_else(|| format!("{m} undocumented"))?;
        let page = page_of(&first, &d.name);
        check(page.named(&m).next().is_some(), || {
            format!("{m} (used by a panel or alert) is not exported by {}", owner(&m))
        })?;
    }
    // The moving series move; the heads agree along the pipeline meanwhile.
    // Done: Ok(the first hard failure, or Ok); not yet: Err(the series that did not move).
    let moved = wait::until_async(Duration::from_secs(20), Duration::from_millis(300), || async {
        let now = match scrape_all(net).await {
            Ok(now) => now,
            Err(e) => return Ok(Err(e)),
        };
        // Read last: it only grows, so it bounds what the services saw before.
        let source = net.source_status();
        let heads = (source.unsafe_l2.number, source.safe_l2.number, source.finalized_l2.number);
        if let Err(e) = heads_agree(&now, heads) {
            return Ok(Err(e));
        }
        let still: Vec<String> = MOVING
            .iter()
            .filter(|(n, l)| match (value(&first, n, l), value(&now, n, l)) {
                (Some(a), Some(b)) => b <= a,
                _ => true,
            })
            .map(|(n, l)| format!("{n}{l:?} {:?} → {:?}", value(&first, n, l), value(&now, n, l)))
            .collect();
        if still.is_empty() { Ok(Ok(())) } else { Err(still.join("; ")) }
    })
    .await;
    match moved {
        Ok(checked) => checked?,
        Err(t) => {
            let still = t.last_error.unwrap_or_default();
            return Err(format!("series did not move within 20 s: {still}"));
        }
    }
    let last = scrape_all(net).await?;
    for (n, want) in [
        ("lightcl_engine_driver_sync_phase", 2.0),
        ("lightcl_poller_nats_reconnects_total", 0.0),
        ("lightcl_validator_nats_reconnects_total", 0.0),
        ("lightcl_engine_driver_nats_reconnects_total", 0.0),
    ] {
        let got = value(&last, n, &[]);
        check(got == Some(want), || format!("{n} is {got:?}, want {want}"))?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documented_metrics_exist_move_and_cover_the_dashboards() {
    let net = start(fast_config()).await;
    let result = metrics_body(&net).await;
    finish(net, result).await;
}

// ---- 3. dashboard and alert rules ------------------------------------------------------------

/// Every `lightcl_*` identifier in `text` (a regex-free scan).
fn metric_names(text: &str) -> BTreeSet<String> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("lightcl_") {
        let before = rest[..at].chars().next_back();
        let tail = &rest[at..];
        let end = tail.find(|c: char| !ident(c)).unwrap_or(tail.len());
        if !before.is_some_and(ident) {
            out.insert(tail[..end].to_owned());
        }
        rest = &tail[end.max(1)..];
    }
    out
}

/// A histogram's `_bucket`/`_sum`/`_count` series map to the documented histogram.
fn base_name(name: &str, docs: &[Documented]) -> String {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(b) = name.strip_suffix(suffix)
            && docs.iter().any(|d| d.name == b && d.kind == "histogram")
        {
            return b.to_owned();
        }
    }
    name.to_owned()
}

fn dashboard() -> serde_json::Value {
    serde_json::from_str(&read("deploy/dashboards/lightcl.json"))
        .unwrap_or_else(|e| panic!("lightcl.json is not valid JSON: {e}"))
}

/// Every query string of the dashboard: panel targets' `expr`, variables' queries.
fn dashboard_queries(d: &serde_json::Value) -> Vec<(String, String)> {
    fn walk(v: &serde_json::Value, path: &str, out: &mut Vec<(String, String)>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m {
                    let p = format!("{path}.{k}");
                    match (k.as_str(), x) {
                        ("expr" | "query" | "definition", serde_json::Value::String(s)) => {
                            out.push((p, s.clone()));
                        }
                        _ => walk(x, &p, out),
                    }
                }
            }
            serde_json::Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    walk(x, &format!("{path}[{i}]"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(d, "", &mut out);
    out
}

fn dashboard_metrics() -> BTreeSet<String> {
    dashboard_queries(&dashboard()).iter().flat_map(|(_, q)| metric_names(q)).collect()
}

fn alerts() -> Yaml {
    yaml::parse(&read("deploy/dashboards/alerts.yaml"))
        .unwrap_or_else(|e| panic!("alerts.yaml: {e}"))
}

/// Every `lightcl_*` name in the rules' expressions and annotations.
fn alert_metrics() -> BTreeSet<String> {
    let doc = alerts();
    let mut out = BTreeSet::new();
    for rule in rules(&doc) {
        for key in ["expr", "annotations"] {
            if let Some(v) = rule.get(key) {
                for s in v.strings() {
                    out.extend(metric_names(s));
                }
            }
        }
    }
    out
}

fn rules(doc: &Yaml) -> Vec<&Yaml> {
    doc.path(&["spec", "groups"])
        .map(Yaml::items)
        .unwrap_or_default()
        .iter()
        .flat_map(|g| g.get("rules").map(Yaml::items).unwrap_or_default())
        .collect()
}

#[test]
fn dashboard_and_alerts_parse_and_use_documented_metrics() {
    let docs = documented();
    let documented_names: BTreeSet<&str> = docs.iter().map(|d| d.name.as_str()).collect();

    // Dashboard: valid JSON, panels with queries, unique ids.
    let d = dashboard();
    let panels = d["panels"].as_array().expect("dashboard has panels");
    let mut ids = BTreeSet::new();
    let mut with_queries = 0;
    for p in panels {
        let id = p["id"].as_u64().unwrap_or_else(|| panic!("panel without id: {}", p["title"]));
        assert!(ids.insert(id), "duplicate panel id {id}");
        if let Some(targets) = p["targets"].as_array() {
            for t in targets {
                let e = t["expr"].as_str().unwrap_or_default();
                assert!(!e.trim().is_empty(), "panel {} has a target without expr", p["title"]);
            }
            with_queries += usize::from(!targets.is_empty());
        }
    }
    assert!(with_queries >= 10, "only {with_queries} panels query anything");
    let used = dashboard_metrics();
    // The panels: heads per stage, lag, poll errors, rejections, FCU answers, NATS.
    for m in [
        "lightcl_poller_observed_unsafe",
        "lightcl_validator_last_target_safe",
        "lightcl_engine_driver_applied_finalized",
        "lightcl_engine_driver_e2e_lag_seconds_bucket",
        "lightcl_poller_poll_errors_total",
        "lightcl_validator_statuses_total",
        "lightcl_engine_driver_fcu_total",
        "lightcl_engine_driver_nats_reconnects_total",
    ] {
        assert!(used.contains(m), "the dashboard does not show {m}");
    }
    for m in &used {
        let b = base_name(m, &docs);
        assert!(documented_names.contains(b.as_str()), "dashboard uses {m}, not in metrics.txt");
    }

    // Alerts: a PrometheusRule whose rules are complete, covering the four alerts.
    let doc = alerts();
    assert_eq!(doc.path(&["apiVersion"]).and_then(Yaml::str), Some("monitoring.coreos.com/v1"));
    assert_eq!(doc.path(&["kind"]).and_then(Yaml::str), Some("PrometheusRule"));
    let rules = rules(&doc);
    assert!(!rules.is_empty(), "no alert rules");
    let mut names = BTreeSet::new();
    for r in &rules {
        let name = r.get("alert").and_then(Yaml::str).expect("rule without alert name");
        assert!(names.insert(name), "duplicate alert {name}");
        let expr = r.get("expr").and_then(Yaml::str).unwrap_or_default();
        assert!(!metric_names(expr).is_empty(), "{name}: expr uses no lightcl metric: {expr:?}");
        let sev = r.path(&["labels", "severity"]).and_then(Yaml::str);
        assert!(matches!(sev, Some("critical" | "warning")), "{name}: severity {sev:?}");
        assert!(
            r.path(&["annotations", "summary"]).and_then(Yaml::str).is_some_and(|s| !s.is_empty()),
            "{name}: no summary"
        );
    }
    for a in [
        "LightclSourceStalled",
        "LightclValidatorRejectingEverything",
        "LightclDriverStuckSyncing",
        "LightclFinalizedNotAdvancing",
    ] {
        assert!(names.contains(a), "missing alert {a} (have {names:?})");
    }
    for m in alert_metrics() {
        let b = base_name(&m, &docs);
        assert!(documented_names.contains(b.as_str()), "alerts use {m}, not in metrics.txt");
    }

    // The kustomization ships both files.
    let k = yaml::parse(&read("deploy/dashboards/kustomization.yaml"))
        .unwrap_or_else(|e| panic!("kustomization.yaml: {e}"));
    let resources: Vec<&str> = k.get("resources").map(Yaml::strings).unwrap_or_default();
    assert!(resources.contains(&"alerts.yaml"), "kustomization resources: {resources:?}");
    let files: Vec<&str> = k.get("configMapGenerator").map(Yaml::strings).unwrap_or_default();
    assert!(files.contains(&"lightcl.json"), "kustomization configMapGenerator: {files:?}");

    // The scanner and the YAML reader themselves.
    assert_eq!(
        metric_names("rate(lightcl_a_total{x=\"y\"}[5m]) / xlightcl_b + lightcl_c_bucket"),
        BTreeSet::from(["lightcl_a_total".to_owned(), "lightcl_c_bucket".to_owned()])
    );
    assert!(yaml::parse("a: 1\na: 2\n").is_err(), "duplicate keys");
    assert!(yaml::parse("a:\n\t- b\n").is_err(), "tabs");
    assert!(yaml::parse("a:\n  - b\n - c\n").is_err(), "bad indentation");
    assert!(yaml::parse("a: \"open\n").is_err(), "unterminated quote");
    let y = yaml::parse("k:\n  - x: |\n      one\n      two\n    y: 'q'\n  - z # c\n").unwrap();
    let items = y.get("k").map(Yaml::items).unwrap();
    assert_eq!(items[0].get("x").and_then(Yaml::str), Some("one\ntwo\n"));
    assert_eq!(items[0].get("y").and_then(Yaml::str), Some("q"));
    assert_eq!(items[1].str(), Some("z"));
}

use yaml::Yaml;

/// A reader for the block-style YAML subset of the deploy files: mappings, sequences, plain,
/// quoted and block (`|`, `>`, with `-`/`+` chomping) scalars, comments. Flow collections other
/// than `{}`/`[]`, anchors, aliases, tags and multi-document streams are rejected.
mod yaml {
    /// A parsed node.
    #[derive(Debug, Clone, PartialEq)]
    pub enum Yaml {
        /// A scalar (also `null`, numbers, booleans: kept as text).
        Str(String),
        /// A sequence.
        Seq(Vec<Self>),
        /// A mapping in file order (keys unique).
        Map(Vec<(String, Self)>),
    }

    impl Yaml {
        /// The value of `key` in a mapping.
        pub fn get(&self, key: &str) -> Option<&Self> {
            match self {
                Self::Map(m) => m.iter().find(|(k, _)| k == key).map(|(_, v)| v),
                _ => None,
            }
        }

        /// Follows `keys` through nested mappings.
        pub fn path(&self, keys: &[&str]) -> Option<&Self> {
            keys.iter().try_fold(self, |n, k| n.get(k))
        }

        /// A sequence's items (empty for anything else).
        pub fn items(&self) -> &[Self] {
            match self {
                Self::Seq(v) => v,
                _ => &[],
            }
        }

        /// A scalar's text.
        pub fn str(&self) -> Option<&str> {
            match self {
                Self::Str(s) => Some(s),
                _ => None,
            }
        }

        /// Every scalar below this node.
        pub fn strings(&self) -> Vec<&str> {
            match self {
                Self::Str(s) => vec![s.as_str()],
                Self::Seq(v) => v.iter().flat_map(Self::strings).collect(),
                Self::Map(m) => m.iter().flat_map(|(_, v)| v.strings()).collect(),
            }
        }
    }

    struct Line {
        no: usize,
        indent: usize,
        text: String,
    }

    /// Parses one document.
    pub fn parse(src: &str) -> Result<Yaml, String> {
        let mut lines = Vec::new();
        for (i, raw) in src.lines().enumerate() {
            let no = i + 1;
            let body = raw.trim_start_matches(' ');
            if body.starts_with('\t') {
                return Err(format!("line {no}: tab in indentation"));
            }
            if body == "---" || body == "..." || body.starts_with('%') {
                return Err(format!("line {no}: document markers/directives are not supported"));
            }
            lines.push(Line { no, indent: raw.len() - body.len(), text: raw.to_owned() });
        }
        let mut p = Parser { lines, pos: 0 };
        p.skip_blank();
        if p.pos >= p.lines.len() {
            return Ok(Yaml::Str(String::new()));
        }
        let indent = p.lines[p.pos].indent;
        if indent != 0 {
            return Err(format!("line {}: document does not start at column 0", p.lines[p.pos].no));
        }
        let doc = p.block(0)?;
        p.skip_blank();
        if let Some(l) = p.lines.get(p.pos) {
            return Err(format!("line {}: bad indentation", l.no));
        }
        Ok(doc)
    }

    struct Parser {
        lines: Vec<Line>,
        pos: usize,
    }

    fn is_blank(text: &str) -> bool {
        let t = text.trim();
        t.is_empty() || t.starts_with('#')
    }

    impl Parser {
        fn skip_blank(&mut self) {
            while self.lines.get(self.pos).is_some_and(|l| is_blank(&l.text)) {
                self.pos += 1;
            }
        }

        /// The next content line, if it is at exactly `indent`.
        fn at(&mut self, indent: usize) -> Option<(usize, String)> {
            self.skip_blank();
            let l = self.lines.get(self.pos)?;
            (l.indent == indent).then(|| (l.no, l.text[indent..].to_owned()))
        }

        fn next_indent(&mut self) -> Option<usize> {
            self.skip_blank();
            self.lines.get(self.pos).map(|l| l.indent)
        }

        fn block(&mut self, indent: usize) -> Result<Yaml, String> {
            let Some((_, text)) = self.at(indent) else {
                return Ok(Yaml::Str(String::new()));
            };
            if text == "-" || text.starts_with("- ") { self.seq(indent) } else { self.map(indent) }
        }

        fn seq(&mut self, indent: usize) -> Result<Yaml, String> {
            let mut items = Vec::new();
            while let Some((no, text)) = self.at(indent) {
                let Some(rest) = text.strip_prefix('-') else { break };
                if !(rest.is_empty() || rest.starts_with(' ')) {
                    break;
                }
                let content = rest.trim_start();
                if is_blank(content) {
                    self.pos += 1;
                    items.push(self.nested(indent, no)?);
                } else {
                    // `- key: v` continues as a mapping at the item's column.
                    let col = indent + 1 + (rest.len() - content.len());
                    let l = &mut self.lines[self.pos];
                    l.text = format!("{}{}", " ".repeat(col), content);
                    l.indent = col;
                    if key_split(content, no)?.is_some() || content.starts_with("- ") {
                        items.push(self.block(col)?);
                    } else {
                        self.pos += 1;
                        items.push(self.scalar_value(content, col, no)?);
                    }
                }
            }
            Ok(Yaml::Seq(items))
        }

        fn map(&mut self, indent: usize) -> Result<Yaml, String> {
            let mut out: Vec<(String, Yaml)> = Vec::new();
            while let Some((no, text)) = self.at(indent) {
                if text.starts_with("- ") || text == "-" {
                    break;
                }
                let (key, rest) =
                    key_split(&text, no)?.ok_or_else(|| format!("line {no}: expected `key:`"))?;
                if out.iter().any(|(k, _)| *k == key) {
                    return Err(format!("line {no}: duplicate key {key:?}"));
                }
                self.pos += 1;
                let value = if is_blank(&rest) {
                    match self.next_indent() {
                        Some(i) if i > indent => self.nested(indent, no)?,
                        Some(i)
                            if i == indent
                                && self.at(i).is_some_and(|(_, t)| t.starts_with("- ")) =>
                        {
                            self.seq(indent)?
                        }
                        _ => Yaml::Str(String::new()),
                    }
                } else {
                    self.scalar_value(&rest, indent, no)?
                };
                out.push((key, value));
            }
            Ok(Yaml::Map(out))
        }

        /// A block more indented than `parent`.
        fn nested(&mut self, parent: usize, no: usize) -> Result<Yaml, String> {
            match self.next_indent() {
                Some(i) if i > parent => {
                    let v = self.block(i)?;
                    match self.next_indent() {
                        Some(j) if j > parent && j != i => {
                            Err(format!("line {}: bad indentation", self.lines[self.pos].no))
                        }
                        _ => Ok(v),
                    }
                }
                _ => Err(format!("line {no}: empty item")),
            }
        }

        /// The value after `key:` or `- ` (the line itself is consumed).
        fn scalar_value(&mut self, rest: &str, indent: usize, no: usize) -> Result<Yaml, String> {
            let rest = rest.trim();
            let first = rest.chars().next().unwrap_or(' ');
            match first {
                '|' | '>' => self.block_scalar(rest, indent, no),
                '"' | '\'' => quoted(rest, no).map(Yaml::Str),
                '&' | '*' | '!' | '@' | '`' => Err(format!(
                    "line {no}: anchors, aliases, tags and reserved indicators are not supported"
                )),
                '{' | '[' => match strip_comment(rest) {
                    "{}" => Ok(Yaml::Map(Vec::new())),
                    "[]" => Ok(Yaml::Seq(Vec::new())),
                    _ => Err(format!("line {no}: flow collections are not supported")),
                },
                _ => {
                    let v = strip_comment(rest);
                    if v.contains(": ") || v.ends_with(':') {
                        return Err(format!("line {no}: `: ` inside a plain scalar"));
                    }
                    // A plain scalar may continue on more-indented lines (folded with spaces).
                    let mut s = v.to_owned();
                    while let Some(l) = self.lines.get(self.pos) {
                        if is_blank(&l.text) || l.indent <= indent {
                            break;
                        }
                        let more = strip_comment(l.text.trim());
                        if more.contains(": ") || more.ends_with(':') {
                            return Err(format!("line {}: bad indentation", l.no));
                        }
                        s.push(' ');
                        s.push_str(more);
                        self.pos += 1;
                    }
                    Ok(Yaml::Str(s))
                }
            }
        }

        fn block_scalar(&mut self, header: &str, indent: usize, no: usize) -> Result<Yaml, String> {
            let h = strip_comment(header);
            let (style, chomp) = (h.as_bytes()[0], &h[1..]);
            if !matches!(chomp, "" | "-" | "+") {
                return Err(format!("line {no}: unsupported block scalar header {h:?}"));
            }
            let mut body: Vec<String> = Vec::new();
            let mut col = None;
            while let Some(l) = self.lines.get(self.pos) {
                if l.text.trim().is_empty() {
                    body.push(String::new());
                    self.pos += 1;
                    continue;
                }
                if l.indent <= indent {
                    break;
                }
                let c = *col.get_or_insert(l.indent);
                if l.indent < c {
                    return Err(format!("line {}: block scalar dedented", l.no));
                }
                body.push(l.text[c..].to_owned());
                self.pos += 1;
            }
            let trailing = body.iter().rev().take_while(|l| l.is_empty()).count();
            let kept = body.len() - trailing;
            let mut text = if style == b'|' {
                body[..kept].join("\n")
            } else {
                let mut t = String::new();
                for (i, l) in body[..kept].iter().enumerate() {
                    if i > 0 {
                        t.push(if l.is_empty() || body[i - 1].is_empty() { '\n' } else { ' ' });
                    }
                    t.push_str(l);
                }
                t
            };
            match chomp {
                "-" => {}
                "+" => text.push_str(&"\n".repeat(trailing + 1)),
                _ if kept > 0 => text.push('\n'),
                _ => {}
            }
            Ok(Yaml::Str(text))
        }
    }

    /// `key: rest` / `key:` → (key, rest); None when the line is not a mapping entry.
    fn key_split(text: &str, no: usize) -> Result<Option<(String, String)>, String> {
        let t = text.trim_end();
        if t.starts_with('"') || t.starts_with('\'') {
            let q = t.as_bytes()[0] as char;
            let end = t[1..]
                .find(q)
                .map(|e| e + 1)
                .ok_or_else(|| format!("line {no}: unterminated key"))?;
            let after = &t[end + 1..];
            return Ok(after
                .strip_prefix(':')
                .filter(|r| r.is_empty() || r.starts_with(' '))
                .map(|r| (t[1..end].to_owned(), r.trim().to_owned())));
        }
        let split = t
            .find(": ")
            .map(|i| (i, i + 2))
            .or_else(|| t.ends_with(':').then(|| (t.len() - 1, t.len())));
        Ok(split.and_then(|(k, v)| {
            let key = &t[..k];
            (!key.contains(" #") && !key.starts_with('#'))
                .then(|| (key.trim().to_owned(), t[v..].to_owned()))
        }))
    }

    fn strip_comment(s: &str) -> &str {
        match s.find(" #") {
            Some(i) => s[..i].trim_end(),
            None => s.trim_end(),
        }
    }

    fn quoted(s: &str, no: usize) -> Result<String, String> {
        let q = s.chars().next().unwrap_or('"');
        let mut out = String::new();
        let mut chars = s[1..].char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' if q == '"' => match chars.next() {
                    Some((_, 'n')) => out.push('\n'),
                    Some((_, 't')) => out.push('\t'),
                    Some((_, e @ ('"' | '\\' | '/'))) => out.push(e),
                    other => return Err(format!("line {no}: unsupported escape {other:?}")),
                },
                '\'' if q == '\'' && s[1 + i + 1..].starts_with('\'') => {
                    out.push('\'');
                    chars.next();
                }
                c if c == q => {
                    let after = strip_comment(&s[1 + i + 1..]);
                    if !after.trim().is_empty() {
                        return Err(format!("line {no}: text after a quoted scalar: {after:?}"));
                    }
                    return Ok(out);
                }
                c => out.push(c),
            }
        }
        Err(format!("line {no}: unterminated quoted scalar"))
    }
}
