//! The human table for a [`Report`]: one section per kind of service, then the fleet.

use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use crate::report::{Block, DriverView, Entry, ErrorView, Report};

/// Longest error text shown in a table cell.
const MAX_ERROR: usize = 120;
/// Rejections listed per validator.
const MAX_REJECTIONS: usize = 5;

struct Table {
    headers: &'static [&'static str],
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(headers: &'static [&'static str]) -> Self {
        Self { headers, rows: Vec::new() }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn render(&self, out: &mut String) {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.len()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(c.chars().count());
                }
            }
        }
        let line = |cells: &mut dyn Iterator<Item = &str>, out: &mut String| {
            let mut s = String::from("  ");
            for (i, c) in cells.enumerate() {
                let w = widths.get(i).copied().unwrap_or(0);
                let pad = w.saturating_sub(c.chars().count());
                s.push_str(c);
                s.extend(std::iter::repeat_n(' ', pad + 2));
            }
            out.push_str(s.trim_end());
            out.push('\n');
        };
        line(&mut self.headers.iter().copied(), out);
        for r in &self.rows {
            line(&mut r.iter().map(String::as_str), out);
        }
    }
}

/// `1234 ab12cd` (number and the first 3 bytes of the hash), `-` when unset.
pub fn block(b: Option<&Block>) -> String {
    match b {
        None => "-".into(),
        Some(b) => {
            let h = b.hash.trim_start_matches("0x");
            format!("{} {}", b.number, h.get(..6).unwrap_or(h))
        }
    }
}

/// `3s ago` from Unix milliseconds, `-` for 0 (never).
pub fn age(at_ms: u64, now_ms: u64) -> String {
    if at_ms == 0 {
        return "-".into();
    }
    if at_ms > now_ms {
        return "now".into();
    }
    let d = Duration::from_millis(now_ms - at_ms);
    let secs = d.as_secs();
    if secs < 1 {
        format!("{}ms ago", d.as_millis())
    } else if secs < 120 {
        format!("{secs}s ago")
    } else if secs < 7200 {
        format!("{}m ago", secs / 60)
    } else {
        format!("{}h ago", secs / 3600)
    }
}

fn truncate(s: &str) -> String {
    let one_line = s.replace(['\n', '\r'], " ");
    if one_line.chars().count() <= MAX_ERROR {
        one_line
    } else {
        let mut t: String = one_line.chars().take(MAX_ERROR - 3).collect();
        t.push_str("...");
        t
    }
}

fn opt_err(e: Option<&String>) -> String {
    e.map_or_else(|| "-".to_owned(), |s| truncate(s))
}

fn label<T>(e: &Entry<T>) -> String {
    match &e.name {
        Some(n) => format!("{n} ({})", e.endpoint),
        None => e.endpoint.clone(),
    }
}

fn error_state(e: &ErrorView) -> String {
    match e.kind.as_str() {
        "unreachable" | "timeout" => "DOWN".into(),
        "unauthenticated" => "UNAUTHENTICATED".into(),
        "wrong_service" => "WRONG-SERVICE".into(),
        "pending" => "...".into(),
        _ => "ERROR".into(),
    }
}

fn run_state(paused: bool, ready: bool) -> String {
    match (paused, ready) {
        (true, _) => "paused".into(),
        (false, true) => "running".into(),
        (false, false) => "not-ready".into(),
    }
}

/// A driver's STATE: paused, `standby (holder X)` while another driver holds its EL's lease,
/// else running or not-ready.
fn driver_state(d: &DriverView) -> String {
    match d.standby_behind() {
        Some(holder) if !d.paused => format!("standby (holder {holder})"),
        _ => run_state(d.paused, d.ready),
    }
}

fn yes_no(b: bool) -> String {
    if b { "ok".into() } else { "DOWN".into() }
}

fn failed_row<T>(e: &Entry<T>, err: &ErrorView, width: usize) -> Vec<String> {
    let mut row = vec![label(e), error_state(err)];
    row.resize(width - 1, "-".into());
    row.push(truncate(&err.message));
    row
}

fn time_of(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// Render the report as tables.
pub fn render(r: &Report) -> String {
    let now = r.generated_at_ms;
    let mut out = String::new();
    let _ = writeln!(out, "lightcl pipeline at {}", time_of(now));

    if !r.pollers.is_empty() {
        const H: &[&str] = &[
            "POLLER",
            "STATE",
            "SOURCE",
            "UNSAFE",
            "SAFE",
            "FINALIZED",
            "CURRENT_L1",
            "POLLS OK/FAIL",
            "PUBLISHED",
            "LAST OK",
            "LAST ERROR",
        ];
        let mut t = Table::new(H);
        for e in &r.pollers {
            match (&e.status, &e.error) {
                (Some(s), _) => {
                    let heads = s.last_status.clone().unwrap_or_default();
                    t.row(vec![
                        label(e),
                        run_state(s.paused, s.ready),
                        format!("{} {}", s.source_id, s.source_url).trim().to_owned(),
                        block(heads.unsafe_l2.as_ref()),
                        block(heads.safe_l2.as_ref()),
                        block(heads.finalized_l2.as_ref()),
                        block(heads.current_l1.as_ref()),
                        format!("{}/{}", s.polls_ok, s.polls_failed),
                        s.published.to_string(),
                        age(s.last_success_ms, now),
                        opt_err(s.last_error.as_ref()),
                    ]);
                }
                (None, Some(err)) => t.row(failed_row(e, err, H.len())),
                (None, None) => {}
            }
        }
        out.push('\n');
        t.render(&mut out);
    }

    if !r.validators.is_empty() {
        const H: &[&str] = &[
            "VALIDATOR",
            "STATE",
            "REVISION",
            "UNSAFE",
            "SAFE",
            "FINALIZED",
            "CURRENT_L1",
            "ACCEPTED",
            "REJECTED",
            "L1",
            "LAST ERROR",
        ];
        let mut t = Table::new(H);
        let mut rejections = Vec::new();
        let mut sources = Vec::new();
        for e in &r.validators {
            match (&e.status, &e.error) {
                (Some(s), _) => {
                    let (rev, heads) = s.last_target.as_ref().map_or_else(
                        || (String::from("-"), Default::default()),
                        |t| (t.revision.to_string(), t.heads.clone()),
                    );
                    t.row(vec![
                        label(e),
                        run_state(s.paused, s.ready),
                        rev,
                        block(heads.unsafe_l2.as_ref()),
                        block(heads.safe_l2.as_ref()),
                        block(heads.finalized_l2.as_ref()),
                        block(heads.current_l1.as_ref()),
                        s.accepted.to_string(),
                        s.rejected.to_string(),
                        yes_no(s.l1_reachable),
                        opt_err(s.last_error.as_ref()),
                    ]);
                    for src in &s.sources {
                        sources.push(format!(
                            "  {} {}{}: head #{} lag {} seen {} rejected-in-row {}",
                            label(e),
                            src.source_id,
                            if src.chosen { " (chosen)" } else { "" },
                            src.head,
                            src.lag_blocks,
                            age(src.last_seen_ms, now),
                            src.rejections_in_row,
                        ));
                    }
                    for rej in s.recent_rejections.iter().rev().take(MAX_REJECTIONS) {
                        let at = if rej.ref_name.is_some() || rej.number > 0 {
                            format!(" [{} #{}]", rej.ref_name.as_deref().unwrap_or("-"), rej.number)
                        } else {
                            String::new()
                        };
                        rejections.push(format!(
                            "  {} {} {}/{}: {}{at}: {}",
                            age(rej.rejected_at_ms, now),
                            label(e),
                            rej.source_id,
                            rej.poll_seq,
                            rej.reason,
                            truncate(&rej.message),
                        ));
                    }
                }
                (None, Some(err)) => t.row(failed_row(e, err, H.len())),
                (None, None) => {}
            }
        }
        out.push('\n');
        t.render(&mut out);
        if !sources.is_empty() {
            out.push_str("  sources:\n");
            for line in sources {
                out.push_str("  ");
                out.push_str(&line);
                out.push('\n');
            }
        }
        if !rejections.is_empty() {
            out.push_str("  recent rejections (newest first):\n");
            for line in rejections {
                out.push_str("  ");
                out.push_str(&line);
                out.push('\n');
            }
        }
    }

    if !r.drivers.is_empty() {
        const H: &[&str] = &[
            "DRIVER",
            "NODE",
            "STATE",
            "PHASE",
            "EL HEAD",
            "EL SAFE",
            "EL FINALIZED",
            "TARGET HEAD",
            "LAG",
            "LAST FCU",
            "EL",
            "LAST ERROR",
        ];
        let mut t = Table::new(H);
        for e in &r.drivers {
            match (&e.status, &e.error) {
                (Some(s), _) => {
                    let st = s.state.as_ref();
                    t.row(vec![
                        label(e),
                        st.map_or_else(|| "-".into(), |s| s.node_id.clone()),
                        driver_state(s),
                        st.map_or_else(|| "-".into(), |s| s.phase.clone()),
                        block(st.and_then(|s| s.head.as_ref())),
                        block(st.and_then(|s| s.safe.as_ref())),
                        block(st.and_then(|s| s.finalized.as_ref())),
                        block(st.and_then(|s| s.target_head.as_ref())),
                        s.lag_blocks.to_string(),
                        st.map_or_else(|| "-".into(), |s| s.last_answer.clone()),
                        yes_no(s.el_reachable),
                        opt_err(st.and_then(|s| s.last_error.as_ref())),
                    ]);
                }
                (None, Some(err)) => t.row(failed_row(e, err, H.len())),
                (None, None) => {}
            }
        }
        out.push('\n');
        t.render(&mut out);
    }

    if let Some(f) = &r.fleet {
        let chain = f.chain_id.map(|c| format!(", chain {c}")).unwrap_or_default();
        let _ = writeln!(out, "\nFLEET (KV {} at {}{chain})", f.bucket, f.nats_url);
        if let Some(err) = &f.error {
            let _ = writeln!(out, "  ERROR: {}", truncate(&err.message));
        } else if f.nodes.is_empty() {
            out.push_str("  no engine states yet\n");
        } else {
            const H: &[&str] = &[
                "KEY",
                "PHASE",
                "EL HEAD",
                "EL SAFE",
                "EL FINALIZED",
                "REV APPLIED/SEEN",
                "LAST FCU",
                "UPDATED",
                "LAST ERROR",
            ];
            let mut t = Table::new(H);
            for n in &f.nodes {
                match &n.state {
                    Some(s) => t.row(vec![
                        n.key.clone(),
                        s.phase.clone(),
                        block(s.head.as_ref()),
                        block(s.safe.as_ref()),
                        block(s.finalized.as_ref()),
                        format!("{}/{}", s.applied_revision, s.target_revision),
                        s.last_answer.clone(),
                        age(s.updated_at_ms, now),
                        opt_err(s.last_error.as_ref()),
                    ]),
                    None => {
                        let mut row = vec![n.key.clone()];
                        row.resize(H.len() - 1, "-".into());
                        row.push(opt_err(n.error.as_ref()));
                        t.row(row);
                    }
                }
            }
            t.render(&mut out);
        }
    }

    if r.pollers.is_empty() && r.validators.is_empty() && r.drivers.is_empty() && r.fleet.is_none()
    {
        out.push_str("\nnothing to show\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use lightcl_proto::v1;

    use super::*;
    use crate::Kind;
    use crate::client::CallError;
    use crate::config::Service;
    use crate::report::{FleetNode, FleetView};

    #[test]
    fn ages_and_blocks() {
        assert_eq!(age(0, 10_000), "-");
        assert_eq!(age(9_500, 10_000), "500ms ago");
        assert_eq!(age(7_000, 10_000), "3s ago");
        assert_eq!(age(1, 600_001), "10m ago");
        assert_eq!(age(20_000, 10_000), "now");
        assert_eq!(block(None), "-");
        let b = Block { number: 42, hash: format!("0x{}", "ab".repeat(32)) };
        assert_eq!(block(Some(&b)), "42 ababab");
    }

    #[test]
    fn a_down_service_shows_its_error_and_the_others_still_show() {
        let services = [
            Service { kind: Kind::Driver, name: Some("reth-0".into()), url: "http://a:1".into() },
            Service { kind: Kind::Driver, name: None, url: "http://b:1".into() },
        ];
        let mut r = Report::pending(&services, None);
        let status = v1::EngineDriverStatus {
            state: Some(v1::EngineState {
                node_id: "reth-1".into(),
                phase: v1::SyncPhase::Following as i32,
                head: Some(v1::BlockId { hash: vec![0xcd; 32], number: 77 }),
                last_answer: v1::FcuAnswer::Syncing as i32,
                ..Default::default()
            }),
            lag_blocks: 3,
            ready: true,
            ..Default::default()
        };
        r.drivers[0].set(Err(CallError::Unreachable("connection refused".into())));
        r.drivers[1].set(Ok(DriverView::from(&status)));
        r.fleet = Some(FleetView {
            nats_url: "nats://x".into(),
            bucket: "lightcl-engine".into(),
            chain_id: Some(10),
            nodes: vec![FleetNode {
                key: "10.bad".into(),
                state: None,
                error: Some("undecodable".into()),
            }],
            error: None,
        });
        r.finish(1_000);
        let text = render(&r);
        let lines: Vec<&str> = text.lines().collect();
        let down = lines.iter().find(|l| l.contains("reth-0 (http://a:1)")).unwrap();
        assert!(down.contains("DOWN") && down.contains("connection refused"), "{text}");
        let up = lines.iter().find(|l| l.contains("http://b:1")).unwrap();
        for want in ["reth-1", "running", "following", "77 cdcdcd", "syncing"] {
            assert!(up.contains(want), "{want} missing in {up}");
        }
        assert!(text.contains("FLEET (KV lightcl-engine at nats://x, chain 10)"), "{text}");
        assert!(text.contains("10.bad") && text.contains("undecodable"), "{text}");
        // Columns line up: the header's LAG starts where the row's lag does.
        let header = lines.iter().find(|l| l.contains("DRIVER")).unwrap();
        let col = header.find("LAG").unwrap();
        assert_eq!(&up[col..col + 1], "3", "{header}\n{up}");
    }

    #[test]
    fn a_standby_driver_names_the_lease_holder() {
        let services = [
            Service { kind: Kind::Driver, name: Some("a".into()), url: "http://a:1".into() },
            Service { kind: Kind::Driver, name: Some("b".into()), url: "http://b:1".into() },
        ];
        let mut r = Report::pending(&services, None);
        let state = |node: &str| v1::EngineState { node_id: node.into(), ..Default::default() };
        let holder = v1::EngineDriverStatus {
            state: Some(state("node-a")),
            ready: true,
            lease_held: true,
            lease_holder: "node-a-0a1b2c3d".into(),
            ..Default::default()
        };
        let standby = v1::EngineDriverStatus {
            state: Some(state("node-b")),
            lease_holder: "node-a-0a1b2c3d".into(),
            ..Default::default()
        };
        r.drivers[0].set(Ok(DriverView::from(&holder)));
        r.drivers[1].set(Ok(DriverView::from(&standby)));
        r.finish(1_000);
        let text = render(&r);
        let row = |name: &str| text.lines().find(|l| l.contains(name)).unwrap().to_owned();
        assert!(row("a (http://a:1)").contains("running"), "{text}");
        assert!(row("b (http://b:1)").contains("standby (holder node-a-0a1b2c3d)"), "{text}");
        // Paused wins.
        let paused = v1::EngineDriverStatus { paused: true, ..standby };
        r.drivers[1].set(Ok(DriverView::from(&paused)));
        assert!(render(&r).lines().any(|l| l.contains("b (http://b:1)") && l.contains("paused")));
    }
}
