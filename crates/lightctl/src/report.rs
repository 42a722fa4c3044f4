//! The pipeline report: what `status` prints and `--output json` serialises.
//!
//! Field names are a contract for scripts: snake_case, only ever added. Blocks are
//! `{"number": n, "hash": "0x…"}` or `null` when unset (all-zero hash and number 0, or absent).
//! Enums are lower snake_case words without their proto prefix (`l1_mismatch`, `following`,
//! `valid`; `unspecified` when unset). Times are Unix milliseconds (0 = never).

use lightcl_proto::v1;
use serde::{Deserialize, Serialize};

use crate::cli::Kind;
use crate::client::CallError;
use crate::exit_code;

/// A block: number and hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    /// Block number.
    pub number: u64,
    /// 0x-prefixed hex hash (as received, whatever its length).
    pub hash: String,
}

impl Block {
    fn new(hash: &[u8], number: u64) -> Option<Self> {
        if number == 0 && hash.iter().all(|b| *b == 0) {
            return None;
        }
        Some(Self { number, hash: format!("0x{}", hex::encode(hash)) })
    }

    /// From a proto `BlockId`.
    pub fn from_id(b: Option<&v1::BlockId>) -> Option<Self> {
        b.and_then(|b| Self::new(&b.hash, b.number))
    }

    /// From a proto `L1BlockRef`.
    pub fn from_l1(b: Option<&v1::L1BlockRef>) -> Option<Self> {
        b.and_then(|b| Self::new(&b.hash, b.number))
    }

    /// From a proto `L2BlockRef`.
    pub fn from_l2(b: Option<&v1::L2BlockRef>) -> Option<Self> {
        b.and_then(|b| Self::new(&b.hash, b.number))
    }
}

/// Lower-case the proto enum name and strip its prefix: `REJECTION_REASON_L1_MISMATCH` →
/// `l1_mismatch`.
fn enum_word(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix).unwrap_or(name).to_ascii_lowercase()
}

fn rejection_reason(v: i32) -> String {
    v1::RejectionReason::try_from(v)
        .map(|r| enum_word(r.as_str_name(), "REJECTION_REASON_"))
        .unwrap_or_else(|_| format!("unknown_{v}"))
}

fn sync_phase(v: i32) -> String {
    v1::SyncPhase::try_from(v)
        .map(|r| enum_word(r.as_str_name(), "SYNC_PHASE_"))
        .unwrap_or_else(|_| format!("unknown_{v}"))
}

fn fcu_answer(v: i32) -> String {
    v1::FcuAnswer::try_from(v)
        .map(|r| enum_word(r.as_str_name(), "FCU_ANSWER_"))
        .unwrap_or_else(|_| format!("unknown_{v}"))
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

fn hex_or_none(b: &[u8]) -> Option<String> {
    (!b.is_empty()).then(|| format!("0x{}", hex::encode(b)))
}

/// A source's heads (from a `SyncStatus`) or a target's heads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heads {
    /// `unsafe_l2`.
    pub unsafe_l2: Option<Block>,
    /// `safe_l2`.
    pub safe_l2: Option<Block>,
    /// `local_safe_l2`.
    pub local_safe_l2: Option<Block>,
    /// `finalized_l2`.
    pub finalized_l2: Option<Block>,
    /// `current_l1`.
    pub current_l1: Option<Block>,
}

impl Heads {
    /// From a proto `SyncStatus`.
    pub fn from_status(s: &v1::SyncStatus) -> Self {
        Self {
            unsafe_l2: Block::from_l2(s.unsafe_l2.as_ref()),
            safe_l2: Block::from_l2(s.safe_l2.as_ref()),
            local_safe_l2: Block::from_l2(s.local_safe_l2.as_ref()),
            finalized_l2: Block::from_l2(s.finalized_l2.as_ref()),
            current_l1: Block::from_l1(s.current_l1.as_ref()),
        }
    }
}

/// What a poller reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollerView {
    /// Chain id.
    pub chain_id: u64,
    /// Source id.
    pub source_id: String,
    /// Source URL.
    pub source_url: String,
    /// Paused by an operator.
    pub paused: bool,
    /// Ready (serving).
    pub ready: bool,
    /// Connected to NATS.
    pub nats_connected: bool,
    /// Heads of the last status polled (null before the first).
    pub last_status: Option<Heads>,
    /// Time of the last poll.
    pub last_poll_ms: u64,
    /// Time of the last successful poll.
    pub last_success_ms: u64,
    /// Successful polls.
    pub polls_ok: u64,
    /// Failed polls.
    pub polls_failed: u64,
    /// Statuses published.
    pub published: u64,
    /// Last error, if any.
    pub last_error: Option<String>,
}

impl From<&v1::PollerStatus> for PollerView {
    fn from(s: &v1::PollerStatus) -> Self {
        Self {
            chain_id: s.chain_id,
            source_id: s.source_id.clone(),
            source_url: s.source_url.clone(),
            paused: s.paused,
            ready: s.ready,
            nats_connected: s.nats_connected,
            last_status: s.last_status.as_ref().map(Heads::from_status),
            last_poll_ms: s.last_poll_ms,
            last_success_ms: s.last_success_ms,
            polls_ok: s.polls_ok,
            polls_failed: s.polls_failed,
            published: s.published,
            last_error: non_empty(&s.last_error),
        }
    }
}

/// A validated target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetView {
    /// Chain id.
    pub chain_id: u64,
    /// Revision (strictly increasing).
    pub revision: u64,
    /// The target's heads.
    #[serde(flatten)]
    pub heads: Heads,
    /// Sources whose status produced it.
    pub source_ids: Vec<String>,
    /// When the poller observed the status.
    pub observed_at_ms: u64,
    /// When it was validated.
    pub validated_at_ms: u64,
}

impl From<&v1::Target> for TargetView {
    fn from(t: &v1::Target) -> Self {
        Self {
            chain_id: t.chain_id,
            revision: t.revision,
            heads: Heads {
                unsafe_l2: Block::from_l2(t.unsafe_l2.as_ref()),
                safe_l2: Block::from_l2(t.safe_l2.as_ref()),
                local_safe_l2: Block::from_l2(t.local_safe_l2.as_ref()),
                finalized_l2: Block::from_l2(t.finalized_l2.as_ref()),
                current_l1: Block::from_l1(t.current_l1.as_ref()),
            },
            source_ids: t.source_ids.clone(),
            observed_at_ms: t.observed_at_ms,
            validated_at_ms: t.validated_at_ms,
        }
    }
}

/// A rejected status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectionView {
    /// Source id.
    pub source_id: String,
    /// The poller's sequence number.
    pub poll_seq: u64,
    /// Machine-readable reason, e.g. `l1_mismatch`.
    pub reason: String,
    /// Human explanation.
    pub message: String,
    /// The ref it is about, e.g. `safe_l2.l1origin`.
    pub ref_name: Option<String>,
    /// The block number it is about (0 when not applicable).
    pub number: u64,
    /// Expected hash, if any.
    pub expected_hash: Option<String>,
    /// Actual hash, if any.
    pub actual_hash: Option<String>,
    /// When.
    pub rejected_at_ms: u64,
}

impl From<&v1::Rejection> for RejectionView {
    fn from(r: &v1::Rejection) -> Self {
        Self {
            source_id: r.source_id.clone(),
            poll_seq: r.poll_seq,
            reason: rejection_reason(r.reason),
            message: r.message.clone(),
            ref_name: non_empty(&r.ref_name),
            number: r.number,
            expected_hash: hex_or_none(&r.expected_hash),
            actual_hash: hex_or_none(&r.actual_hash),
            rejected_at_ms: r.rejected_at_ms,
        }
    }
}

/// What a validator reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidatorView {
    /// Chain id.
    pub chain_id: u64,
    /// Paused by an operator.
    pub paused: bool,
    /// Ready.
    pub ready: bool,
    /// Connected to NATS.
    pub nats_connected: bool,
    /// Our L1 RPC answers.
    pub l1_reachable: bool,
    /// Last published target.
    pub last_target: Option<TargetView>,
    /// Recent rejections, as the validator lists them.
    pub recent_rejections: Vec<RejectionView>,
    /// Statuses accepted.
    pub accepted: u64,
    /// Statuses rejected.
    pub rejected: u64,
    /// Last error, if any.
    pub last_error: Option<String>,
    /// Every source in the validator's vote window, most advanced first.
    #[serde(default)]
    pub sources: Vec<SourceView>,
}

/// One source as a validator sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceView {
    /// Source id.
    pub source_id: String,
    /// Newest unsafe head number.
    pub head: u64,
    /// Blocks behind the most advanced source.
    pub lag_blocks: u64,
    /// When its newest status was stored (Unix ms).
    pub last_seen_ms: u64,
    /// Statuses rejected in a row.
    pub rejections_in_row: u32,
    /// Followed (failover) or counted (quorum).
    pub chosen: bool,
}

impl From<&v1::SourceHealth> for SourceView {
    fn from(h: &v1::SourceHealth) -> Self {
        Self {
            source_id: h.source_id.clone(),
            head: h.head,
            lag_blocks: h.lag_blocks,
            last_seen_ms: h.last_seen_ms,
            rejections_in_row: h.rejections_in_row,
            chosen: h.chosen,
        }
    }
}

impl From<&v1::ValidatorStatus> for ValidatorView {
    fn from(s: &v1::ValidatorStatus) -> Self {
        Self {
            chain_id: s.chain_id,
            paused: s.paused,
            ready: s.ready,
            nats_connected: s.nats_connected,
            l1_reachable: s.l1_reachable,
            last_target: s.last_target.as_ref().map(TargetView::from),
            recent_rejections: s.recent_rejections.iter().map(RejectionView::from).collect(),
            accepted: s.accepted,
            rejected: s.rejected,
            last_error: non_empty(&s.last_error),
            sources: s.sources.iter().map(SourceView::from).collect(),
        }
    }
}

/// What one engine-driver applied (the `lightcl-engine` KV value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineView {
    /// Chain id.
    pub chain_id: u64,
    /// Node id.
    pub node_id: String,
    /// `initial_sync` or `following`.
    pub phase: String,
    /// EL head accepted with VALID.
    pub head: Option<Block>,
    /// EL safe accepted with VALID.
    pub safe: Option<Block>,
    /// EL finalized accepted with VALID.
    pub finalized: Option<Block>,
    /// The head the driver is pushing.
    pub target_head: Option<Block>,
    /// Newest target revision seen.
    pub target_revision: u64,
    /// Revision of the last VALID forkchoice.
    pub applied_revision: u64,
    /// The EL's last forkchoice answer: `valid`, `syncing`, `invalid`,
    /// `invalid_forkchoice_state`, `error`.
    pub last_answer: String,
    /// Last error, if any.
    pub last_error: Option<String>,
    /// The target's current_l1 once the applied safe head reached it.
    pub current_l1: Option<Block>,
    /// When the driver last wrote this state.
    pub updated_at_ms: u64,
}

impl From<&v1::EngineState> for EngineView {
    fn from(s: &v1::EngineState) -> Self {
        Self {
            chain_id: s.chain_id,
            node_id: s.node_id.clone(),
            phase: sync_phase(s.phase),
            head: Block::from_id(s.head.as_ref()),
            safe: Block::from_id(s.safe.as_ref()),
            finalized: Block::from_id(s.finalized.as_ref()),
            target_head: Block::from_id(s.target_head.as_ref()),
            target_revision: s.target_revision,
            applied_revision: s.applied_revision,
            last_answer: fcu_answer(s.last_answer),
            last_error: non_empty(&s.last_error),
            current_l1: Block::from_l1(s.current_l1.as_ref()),
            updated_at_ms: s.updated_at_ms,
        }
    }
}

/// What an engine-driver reports over gRPC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriverView {
    /// Its engine state (null if it has none yet).
    pub state: Option<EngineView>,
    /// Paused by an operator.
    pub paused: bool,
    /// Ready.
    pub ready: bool,
    /// Connected to NATS.
    pub nats_connected: bool,
    /// The EL answers.
    pub el_reachable: bool,
    /// Target head number minus applied head number.
    pub lag_blocks: u64,
    /// Newest target it has.
    pub last_target: Option<TargetView>,
    /// It holds its EL's single-writer lease (may send forkchoice updates); false: standby.
    pub lease_held: bool,
    /// The lease holder's instance id as the driver last saw it (null: none seen, or a driver
    /// without leases).
    pub lease_holder: Option<String>,
    /// The lease's KV key (null from a driver without leases).
    pub lease_key: Option<String>,
}

impl DriverView {
    /// Standby: another driver holds this driver's EL lease (its instance id), `None` otherwise
    /// (holding, no holder seen, or its own lease lapsed).
    pub fn standby_behind(&self) -> Option<&str> {
        let holder = self.lease_holder.as_deref()?;
        // An instance id is `<node id>-<8 hex digits>`.
        let own = self.state.as_ref().is_some_and(|s| {
            holder.strip_prefix(s.node_id.as_str()).and_then(|r| r.strip_prefix('-')).is_some_and(
                |suffix| suffix.len() == 8 && suffix.chars().all(|c| c.is_ascii_hexdigit()),
            )
        });
        (!self.lease_held && !own).then_some(holder)
    }
}

impl From<&v1::EngineDriverStatus> for DriverView {
    fn from(s: &v1::EngineDriverStatus) -> Self {
        Self {
            state: s.state.as_ref().map(EngineView::from),
            paused: s.paused,
            ready: s.ready,
            nats_connected: s.nats_connected,
            el_reachable: s.el_reachable,
            lag_blocks: s.lag_blocks,
            last_target: s.last_target.as_ref().map(TargetView::from),
            lease_held: s.lease_held,
            lease_holder: non_empty(&s.lease_holder),
            lease_key: non_empty(&s.lease_key),
        }
    }
}

/// An error as reported in JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorView {
    /// `unreachable`, `timeout`, `unauthenticated`, `wrong_service`, `failed` (services);
    /// `nats` (fleet).
    pub kind: String,
    /// Human explanation.
    pub message: String,
}

impl From<&CallError> for ErrorView {
    fn from(e: &CallError) -> Self {
        Self { kind: e.kind().to_owned(), message: e.to_string() }
    }
}

/// One service's row: its status or its error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry<T> {
    /// The address as given.
    pub endpoint: String,
    /// Its name in the config file, if any.
    pub name: Option<String>,
    /// Its status, when it answered.
    pub status: Option<T>,
    /// Why it did not, otherwise.
    pub error: Option<ErrorView>,
    /// The exit code this entry contributes (0 when it answered).
    #[serde(skip)]
    pub code: i32,
}

impl<T> Entry<T> {
    /// A row for `endpoint` waiting for its first answer.
    pub fn pending(endpoint: &str, name: Option<String>) -> Self {
        Self {
            endpoint: lightcl_rpc::redact_url(endpoint),
            name,
            status: None,
            error: Some(ErrorView { kind: "pending".into(), message: "no answer yet".into() }),
            code: exit_code::PARTIAL,
        }
    }

    /// Record an answer or a failure.
    pub fn set(&mut self, result: Result<T, CallError>) {
        match result {
            Ok(s) => {
                self.status = Some(s);
                self.error = None;
                self.code = exit_code::OK;
            }
            Err(e) => {
                // Keep the last known status out of the report: a row is either live or failed.
                self.status = None;
                self.code = e.exit_code();
                self.error = Some(ErrorView::from(&e));
            }
        }
    }
}

/// One fleet entry (a key of the `lightcl-engine` bucket).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetNode {
    /// The KV key, `<chain_id>.<node_id>`.
    pub key: String,
    /// The decoded state.
    pub state: Option<EngineView>,
    /// Why the value could not be decoded, if it could not.
    pub error: Option<String>,
}

/// The fleet section, from the `lightcl-engine` KV bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetView {
    /// The NATS URL asked.
    pub nats_url: String,
    /// The bucket read.
    pub bucket: String,
    /// The chain filter, if any.
    pub chain_id: Option<u64>,
    /// Entries, sorted by key.
    pub nodes: Vec<FleetNode>,
    /// Why the bucket could not be read, if it could not.
    pub error: Option<ErrorView>,
}

impl FleetView {
    /// The exit code this section contributes.
    pub fn code(&self) -> i32 {
        if self.error.is_some() { exit_code::PARTIAL } else { exit_code::OK }
    }
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// When it was put together.
    pub generated_at_ms: u64,
    /// The exit code `lightctl` returns for it (see [`crate::exit_code`]).
    pub exit_code: i32,
    /// Pollers.
    pub pollers: Vec<Entry<PollerView>>,
    /// Validators.
    pub validators: Vec<Entry<ValidatorView>>,
    /// Engine-drivers.
    pub drivers: Vec<Entry<DriverView>>,
    /// The fleet's engine states (null when no NATS URL was given).
    pub fleet: Option<FleetView>,
}

impl Report {
    /// An empty report with a row per service, all pending.
    pub fn pending(services: &[crate::config::Service], fleet: Option<FleetView>) -> Self {
        let mut r = Self {
            generated_at_ms: 0,
            exit_code: exit_code::OK,
            pollers: Vec::new(),
            validators: Vec::new(),
            drivers: Vec::new(),
            fleet,
        };
        for s in services {
            match s.kind {
                Kind::Poller => r.pollers.push(Entry::pending(&s.url, s.name.clone())),
                Kind::Validator => r.validators.push(Entry::pending(&s.url, s.name.clone())),
                Kind::Driver => r.drivers.push(Entry::pending(&s.url, s.name.clone())),
            }
        }
        r
    }

    /// Recompute `exit_code` and stamp the time.
    pub fn finish(&mut self, now_ms: u64) {
        self.generated_at_ms = now_ms;
        let codes = self
            .pollers
            .iter()
            .map(|e| e.code)
            .chain(self.validators.iter().map(|e| e.code))
            .chain(self.drivers.iter().map(|e| e.code))
            .chain(self.fleet.iter().map(FleetView::code));
        self.exit_code = exit_code::combine(codes);
    }

    /// Every error, as `(what, message)` lines for stderr.
    pub fn errors(&self) -> Vec<String> {
        fn rows<T>(kind: Kind, v: &[Entry<T>], out: &mut Vec<String>) {
            for e in v {
                if let Some(err) = &e.error {
                    out.push(format!("{kind} {}: {}", e.endpoint, err.message));
                }
            }
        }
        let mut out = Vec::new();
        rows(Kind::Poller, &self.pollers, &mut out);
        rows(Kind::Validator, &self.validators, &mut out);
        rows(Kind::Driver, &self.drivers, &mut out);
        if let Some(f) = &self.fleet
            && let Some(err) = &f.error
        {
            out.push(format!("fleet (KV {} at {}): {}", f.bucket, f.nats_url, err.message));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64, byte: u8) -> v1::BlockId {
        v1::BlockId { hash: vec![byte; 32], number: n }
    }

    #[test]
    fn unset_blocks_are_null() {
        assert_eq!(Block::from_id(Some(&id(0, 0))), None);
        assert_eq!(Block::from_id(Some(&v1::BlockId::default())), None);
        assert_eq!(Block::from_id(None), None);
        let b = Block::from_id(Some(&id(7, 0xab))).unwrap();
        assert_eq!(b.number, 7);
        assert_eq!(b.hash, format!("0x{}", "ab".repeat(32)));
        // Genesis with a real hash is set.
        assert!(Block::from_id(Some(&id(0, 1))).is_some());
    }

    #[test]
    fn enums_are_stable_words() {
        assert_eq!(rejection_reason(v1::RejectionReason::L1Mismatch as i32), "l1_mismatch");
        assert_eq!(rejection_reason(0), "unspecified");
        assert_eq!(rejection_reason(999), "unknown_999");
        assert_eq!(sync_phase(v1::SyncPhase::InitialSync as i32), "initial_sync");
        assert_eq!(
            fcu_answer(v1::FcuAnswer::InvalidForkchoiceState as i32),
            "invalid_forkchoice_state"
        );
    }

    #[test]
    fn json_field_names_are_the_contract() {
        let s = v1::EngineDriverStatus {
            state: Some(v1::EngineState {
                chain_id: 10,
                node_id: "n".into(),
                phase: v1::SyncPhase::Following as i32,
                head: Some(id(5, 1)),
                last_answer: v1::FcuAnswer::Valid as i32,
                ..Default::default()
            }),
            lag_blocks: 2,
            ..Default::default()
        };
        let v = serde_json::to_value(DriverView::from(&s)).unwrap();
        assert_eq!(v["state"]["phase"], "following");
        assert_eq!(v["state"]["head"]["number"], 5);
        assert_eq!(v["state"]["last_answer"], "valid");
        assert_eq!(v["state"]["safe"], serde_json::Value::Null);
        assert_eq!(v["lag_blocks"], 2);
        assert_eq!(v["lease_held"], false);
        assert_eq!(v["lease_holder"], serde_json::Value::Null);

        let standby = v1::EngineDriverStatus {
            state: Some(v1::EngineState { node_id: "n".into(), ..Default::default() }),
            lease_holder: "m-0a1b2c3d".into(),
            lease_key: "lease.10.00ff".into(),
            ..Default::default()
        };
        let d = DriverView::from(&standby);
        assert_eq!(d.standby_behind(), Some("m-0a1b2c3d"));
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(v["lease_holder"], "m-0a1b2c3d");
        assert_eq!(v["lease_key"], "lease.10.00ff");
        // Its own lapsed lease (NATS unreachable) or holding: no standby.
        let own = v1::EngineDriverStatus { lease_holder: "n-0a1b2c3d".into(), ..standby.clone() };
        assert_eq!(DriverView::from(&own).standby_behind(), None);
        let held = v1::EngineDriverStatus { lease_held: true, ..own };
        assert_eq!(DriverView::from(&held).standby_behind(), None);
        // Node `n` is not the instance of node `n-1`.
        let other = v1::EngineDriverStatus { lease_holder: "n-1-0a1b2c3d".into(), ..standby };
        assert_eq!(DriverView::from(&other).standby_behind(), Some("n-1-0a1b2c3d"));

        let t = v1::Target {
            revision: 3,
            safe_l2: Some(v1::L2BlockRef { hash: vec![2; 32], number: 9, ..Default::default() }),
            ..Default::default()
        };
        let v = serde_json::to_value(TargetView::from(&t)).unwrap();
        assert_eq!(v["revision"], 3);
        assert_eq!(v["safe_l2"]["number"], 9, "heads are flattened into the target");
    }

    #[test]
    fn exit_code_follows_the_worst_row() {
        let services = [
            crate::config::Service { kind: Kind::Poller, name: None, url: "a".into() },
            crate::config::Service { kind: Kind::Driver, name: None, url: "b".into() },
        ];
        let mut r = Report::pending(&services, None);
        r.finish(1);
        assert_eq!(r.exit_code, exit_code::PARTIAL, "pending rows are not ok");
        r.pollers[0].set(Ok(PollerView::from(&v1::PollerStatus::default())));
        r.drivers[0].set(Ok(DriverView::from(&v1::EngineDriverStatus::default())));
        r.finish(2);
        assert_eq!(r.exit_code, exit_code::OK);
        r.drivers[0].set(Err(CallError::Unauthenticated("invalid bearer token".into())));
        r.pollers[0].set(Err(CallError::Unreachable("connection refused".into())));
        r.finish(3);
        assert_eq!(r.exit_code, exit_code::UNAUTHENTICATED);
        assert_eq!(r.errors().len(), 2);
        assert!(r.errors()[0].starts_with("poller a: unreachable"), "{:?}", r.errors());
    }
}
