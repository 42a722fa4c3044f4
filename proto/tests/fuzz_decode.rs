//! Fuzzes lightcl-proto's decoders: arbitrary bytes (0..4096), byte-edited real messages and
//! generated well-formed messages go through `prost::Message::decode` for every bus message and
//! every control request/reply, then through the conversions into core types; asserts no panic,
//! a decoded message never larger than twice its input, stable re-encoding, conversions that
//! succeed exactly when every present hash is 32 bytes and every required ref is there (keeping
//! every value), and errors naming the offending field — in particular, a hash of 0, 31, 33 or
//! 64 bytes is rejected naming exactly that field.

use std::fmt::Debug;

use lightcl_core::{SyncStatus, Target};
use lightcl_proto::ProtoError;
use lightcl_proto::convert::{block_id, l1_ref, l2_ref, opt_hash_from_bytes, sync_status};
use lightcl_proto::v1;
use proptest::prelude::*;
use proptest::sample::Index;
use prost::Message;

// ---------------------------------------------------------------- oracle

/// Expected conversion failures: (field path, exact reason). A conversion must succeed iff this
/// is empty, and otherwise fail with one of them.
type Faults = Vec<(String, String)>;

fn join(path: &str, name: &str) -> String {
    if path.is_empty() { name.to_owned() } else { format!("{path}.{name}") }
}

fn hash_fault(b: &[u8], path: String, out: &mut Faults) {
    if b.len() != 32 {
        out.push((path, format!("hash must be 32 bytes, got {}", b.len())));
    }
}

fn missing(path: String, out: &mut Faults) {
    out.push((path, "missing (required)".to_owned()));
}

fn l1_faults(m: &Option<v1::L1BlockRef>, path: &str, required: bool, out: &mut Faults) {
    match m {
        None if required => missing(path.to_owned(), out),
        None => {}
        Some(r) => {
            hash_fault(&r.hash, join(path, "hash"), out);
            hash_fault(&r.parent_hash, join(path, "parent_hash"), out);
        }
    }
}

fn l2_faults(m: &Option<v1::L2BlockRef>, path: &str, required: bool, out: &mut Faults) {
    match m {
        None if required => missing(path.to_owned(), out),
        None => {}
        Some(r) => {
            hash_fault(&r.hash, join(path, "hash"), out);
            hash_fault(&r.parent_hash, join(path, "parent_hash"), out);
            let origin = join(path, "l1origin");
            match &r.l1origin {
                None => missing(origin, out),
                Some(o) => hash_fault(&o.hash, join(&origin, "hash"), out),
            }
        }
    }
}

fn status_faults(m: &v1::SyncStatus, prefix: &str) -> Faults {
    let mut out = Faults::new();
    let p = |n: &str| join(prefix, n);
    l1_faults(&m.current_l1, &p("current_l1"), true, &mut out);
    l1_faults(&m.current_l1_finalized, &p("current_l1_finalized"), false, &mut out);
    l1_faults(&m.head_l1, &p("head_l1"), false, &mut out);
    l1_faults(&m.safe_l1, &p("safe_l1"), false, &mut out);
    l1_faults(&m.finalized_l1, &p("finalized_l1"), false, &mut out);
    l2_faults(&m.unsafe_l2, &p("unsafe_l2"), true, &mut out);
    l2_faults(&m.safe_l2, &p("safe_l2"), true, &mut out);
    l2_faults(&m.finalized_l2, &p("finalized_l2"), true, &mut out);
    l2_faults(&m.pending_safe_l2, &p("pending_safe_l2"), false, &mut out);
    l2_faults(&m.cross_unsafe_l2, &p("cross_unsafe_l2"), false, &mut out);
    l2_faults(&m.local_safe_l2, &p("local_safe_l2"), false, &mut out);
    out
}

fn target_faults(m: &v1::Target) -> Faults {
    let mut out = Faults::new();
    l2_faults(&m.unsafe_l2, "unsafe_l2", true, &mut out);
    l2_faults(&m.safe_l2, "safe_l2", true, &mut out);
    l2_faults(&m.local_safe_l2, "local_safe_l2", true, &mut out);
    l2_faults(&m.finalized_l2, "finalized_l2", true, &mut out);
    l1_faults(&m.current_l1, "current_l1", true, &mut out);
    out
}

/// A conversion succeeds iff there is no fault, and otherwise reports one of the faults.
fn check_conv<T: Debug>(r: &Result<T, ProtoError>, faults: &Faults) {
    match r {
        Ok(v) => assert!(faults.is_empty(), "converted to {v:?} despite {faults:?}"),
        Err(e) => {
            assert_eq!(e.to_string(), format!("protobuf field `{}`: {}", e.field, e.reason));
            assert!(
                faults.iter().any(|(f, r)| *f == e.field && *r == e.reason),
                "error `{e}` is not one of the real faults {faults:?}"
            );
        }
    }
}

/// Decodes `bytes` as `M`; when it decodes, the message re-encodes to at most twice the input
/// (what it holds is bounded by what arrived) and decodes back to itself.
fn decode_bounded<M: Message + Default + PartialEq + Debug>(bytes: &[u8]) -> Option<M> {
    let m = M::decode(bytes).ok()?;
    let again = m.encode_to_vec();
    assert!(
        again.len() <= 2 * bytes.len(),
        "{} input bytes decoded into a message of {} bytes: {m:?}",
        bytes.len(),
        again.len()
    );
    assert_eq!(M::decode(again.as_slice()).expect("a re-encoded message decodes"), m);
    Some(m)
}

fn zero_l1() -> v1::L1BlockRef {
    v1::L1BlockRef { hash: vec![0; 32], number: 0, parent_hash: vec![0; 32], timestamp: 0 }
}

fn check_sync_status(m: &v1::SyncStatus, prefix: &str) -> Option<SyncStatus> {
    let r = sync_status(m, prefix);
    check_conv(&r, &status_faults(m, prefix));
    let s = r.ok()?;
    // Every value survives: converting back gives the message, absent L1 refs as unset.
    let mut norm = m.clone();
    for r in [&mut norm.head_l1, &mut norm.safe_l1, &mut norm.finalized_l1] {
        r.get_or_insert_with(zero_l1);
    }
    assert_eq!(v1::SyncStatus::from(&s), norm);
    Some(s)
}

fn check_raw_status(m: &v1::RawStatus) {
    let r = m.core_status();
    let faults = match &m.status {
        None => vec![("status".to_owned(), "missing (required)".to_owned())],
        Some(s) => status_faults(s, "status"),
    };
    check_conv(&r, &faults);
    if let (Ok(s), Some(inner)) = (&r, &m.status) {
        assert_eq!(check_sync_status(inner, "status").as_ref(), Some(s));
    }
}

fn check_target(m: &v1::Target) -> Option<Target> {
    let r = m.to_core();
    check_conv(&r, &target_faults(m));
    let t = r.ok()?;
    let norm = v1::Target {
        evidence: None,
        source_ids: vec![],
        l1_retreat: false,
        observed_at_ms: 0,
        validated_at_ms: 0,
        head_l1: None,
        safe_l1: None,
        finalized_l1: None,
        ..m.clone()
    };
    // The L1 view (optional fields): `head_l1` first; the other two only count when the head
    // converts and is set (an unset head means "no view").
    let mut view_faults = Faults::new();
    l1_faults(&m.head_l1, "head_l1", false, &mut view_faults);
    let head_set = m.head_l1.as_ref().is_some_and(|h| {
        h.hash.len() == 32 && h.parent_hash.len() == 32 && (h.number != 0 || h.hash != [0u8; 32])
    });
    if view_faults.is_empty() && head_set {
        l1_faults(&m.safe_l1, "safe_l1", false, &mut view_faults);
        l1_faults(&m.finalized_l1, "finalized_l1", false, &mut view_faults);
    }
    let view = m.l1_view();
    check_conv(&view, &view_faults);
    assert_eq!(matches!(view, Ok(Some(_))), view_faults.is_empty() && head_set);
    if let Ok(Some(v)) = &view {
        let mut again = v1::Target::default();
        again.set_l1_view(v);
        assert_eq!(again.l1_view().ok().flatten().as_ref(), Some(v), "the view survives");
    }
    assert_eq!(v1::Target::from_core(&t), norm, "every value survives");
    if let Some(ev) = &m.evidence {
        check_evidence(ev);
    }
    Some(t)
}

fn check_block_id(m: &v1::BlockId, path: &str) {
    let r = block_id(m, path);
    let mut faults = Faults::new();
    hash_fault(&m.hash, join(path, "hash"), &mut faults);
    check_conv(&r, &faults);
    if let Ok(b) = r {
        assert_eq!((b.hash.as_slice(), b.number), (m.hash.as_slice(), m.number));
    }
}

fn check_l1_ref(m: &v1::L1BlockRef, path: &str) {
    let r = l1_ref(m, path);
    let mut faults = Faults::new();
    l1_faults(&Some(m.clone()), path, true, &mut faults);
    check_conv(&r, &faults);
    if let Ok(b) = r {
        assert_eq!(v1::L1BlockRef::from(b), *m);
    }
}

fn check_l2_ref(m: &v1::L2BlockRef, path: &str) {
    let r = l2_ref(m, path);
    let mut faults = Faults::new();
    l2_faults(&Some(m.clone()), path, true, &mut faults);
    check_conv(&r, &faults);
    if let Ok(b) = r {
        assert_eq!(v1::L2BlockRef::from(b), *m);
    }
}

fn check_evidence(m: &v1::L1Evidence) {
    for (i, b) in m.checked.iter().enumerate() {
        check_block_id(b, &format!("checked[{i}]"));
    }
    for (name, b) in [("l1_head", &m.l1_head), ("l1_finalized", &m.l1_finalized)] {
        if let Some(b) = b {
            check_block_id(b, name);
        }
    }
}

/// Rejections carry a status and optional hashes: empty means none, 32 bytes a hash, anything
/// else an error naming the field.
fn check_rejection(m: &v1::Rejection) {
    let _ = m.reason();
    if let Some(s) = &m.status {
        check_sync_status(s, "status");
    }
    for (name, h) in [("expected_hash", &m.expected_hash), ("actual_hash", &m.actual_hash)] {
        let r = opt_hash_from_bytes(h, name);
        let mut faults = Faults::new();
        if !h.is_empty() {
            hash_fault(h, name.to_owned(), &mut faults);
        }
        check_conv(&r, &faults);
        if let Ok(got) = r {
            assert_eq!(got.map(|b| b.to_vec()).unwrap_or_default(), *h);
        }
    }
}

fn check_engine_state(m: &v1::EngineState) {
    let _ = (m.phase(), m.last_answer());
    for (name, b) in [
        ("head", &m.head),
        ("safe", &m.safe),
        ("finalized", &m.finalized),
        ("target_head", &m.target_head),
    ] {
        if let Some(b) = b {
            check_block_id(b, name);
        }
    }
    if let Some(r) = &m.current_l1 {
        check_l1_ref(r, "current_l1");
    }
    for (name, r) in
        [("head_l1", &m.head_l1), ("safe_l1", &m.safe_l1), ("finalized_l1", &m.finalized_l1)]
    {
        if let Some(r) = r {
            check_l1_ref(r, name);
        }
    }
    for (name, r) in
        [("head_ref", &m.head_ref), ("safe_ref", &m.safe_ref), ("finalized_ref", &m.finalized_ref)]
    {
        if let Some(r) = r {
            check_l2_ref(r, name);
        }
    }
    let mut faults = Faults::new();
    for (name, r) in
        [("head_ref", &m.head_ref), ("safe_ref", &m.safe_ref), ("finalized_ref", &m.finalized_ref)]
    {
        l2_faults(r, name, false, &mut faults);
    }
    check_conv(&m.applied_refs(), &faults);
}

/// Decodes `bytes` as every bus message and every control request/reply, and converts what
/// decodes.
fn check_all(bytes: &[u8]) {
    if let Some(m) = decode_bounded::<v1::BlockId>(bytes) {
        check_block_id(&m, "");
    }
    if let Some(m) = decode_bounded::<v1::L1BlockRef>(bytes) {
        check_l1_ref(&m, "");
    }
    if let Some(m) = decode_bounded::<v1::L2BlockRef>(bytes) {
        check_l2_ref(&m, "");
    }
    if let Some(m) = decode_bounded::<v1::SyncStatus>(bytes) {
        let via_try_from = SyncStatus::try_from(&m);
        assert_eq!(via_try_from.ok(), check_sync_status(&m, ""));
    }
    if let Some(m) = decode_bounded::<v1::RawStatus>(bytes) {
        check_raw_status(&m);
    }
    if let Some(m) = decode_bounded::<v1::L1Evidence>(bytes) {
        check_evidence(&m);
    }
    if let Some(m) = decode_bounded::<v1::Target>(bytes) {
        check_target(&m);
    }
    if let Some(m) = decode_bounded::<v1::Rejection>(bytes) {
        check_rejection(&m);
    }
    if let Some(m) = decode_bounded::<v1::EngineState>(bytes) {
        check_engine_state(&m);
    }
    // The lease value: no conversion, it must only decode or fail cleanly.
    decode_bounded::<v1::EngineLease>(bytes);
    // Control requests: nothing to convert, they must only decode or fail cleanly.
    decode_bounded::<v1::GetStatusRequest>(bytes);
    decode_bounded::<v1::WatchStatusRequest>(bytes);
    decode_bounded::<v1::PauseRequest>(bytes);
    decode_bounded::<v1::ResumeRequest>(bytes);
    decode_bounded::<v1::ResyncRequest>(bytes);
    // Control replies (what lightctl decodes).
    decode_bounded::<v1::PauseState>(bytes);
    if let Some(m) = decode_bounded::<v1::PollerStatus>(bytes)
        && let Some(s) = &m.last_status
    {
        check_sync_status(s, "last_status");
    }
    if let Some(m) = decode_bounded::<v1::ValidatorStatus>(bytes) {
        m.last_target.as_ref().map(check_target);
        m.recent_rejections.iter().for_each(check_rejection);
    }
    if let Some(m) = decode_bounded::<v1::EngineDriverStatus>(bytes) {
        m.state.as_ref().map(check_engine_state);
        m.last_target.as_ref().map(check_target);
    }
}

// ---------------------------------------------------------------- strategies

/// 32 bytes; when `noisy`, now and then a wrong length (0, 31, 33, 64 or random).
fn hash(noisy: bool) -> BoxedStrategy<Vec<u8>> {
    let good = prop::collection::vec(any::<u8>(), 32);
    if !noisy {
        return good.boxed();
    }
    let len = prop_oneof![Just(0usize), Just(31), Just(33), Just(64), 0usize..100];
    prop_oneof![12 => good, 1 => len.prop_flat_map(|n| prop::collection::vec(any::<u8>(), n))]
        .boxed()
}

/// `Some` always when clean; with probability `p` when noisy.
fn opt<T: Debug + Clone + 'static>(
    s: impl Strategy<Value = T> + 'static,
    noisy: bool,
    p: f64,
) -> BoxedStrategy<Option<T>> {
    if noisy { prop::option::weighted(p, s).boxed() } else { s.prop_map(Some).boxed() }
}

fn block_id_msg(noisy: bool) -> impl Strategy<Value = v1::BlockId> {
    (hash(noisy), any::<u64>()).prop_map(|(hash, number)| v1::BlockId { hash, number })
}

fn l1_msg(noisy: bool) -> impl Strategy<Value = v1::L1BlockRef> {
    (hash(noisy), any::<u64>(), hash(noisy), any::<u64>()).prop_map(
        |(hash, number, parent_hash, timestamp)| v1::L1BlockRef {
            hash,
            number,
            parent_hash,
            timestamp,
        },
    )
}

fn l2_msg(noisy: bool) -> impl Strategy<Value = v1::L2BlockRef> {
    (
        hash(noisy),
        any::<u64>(),
        hash(noisy),
        any::<u64>(),
        opt(block_id_msg(noisy), noisy, 0.9),
        any::<u64>(),
    )
        .prop_map(|(hash, number, parent_hash, timestamp, l1origin, sequence_number)| {
            v1::L2BlockRef { hash, number, parent_hash, timestamp, l1origin, sequence_number }
        })
}

/// A status; required refs always present when clean, optional ones present with p = 0.6.
fn status_msg(noisy: bool) -> impl Strategy<Value = v1::SyncStatus> {
    let req_l1 = || opt(l1_msg(noisy), noisy, 0.95);
    let req_l2 = || opt(l2_msg(noisy), noisy, 0.95);
    let opt_l1 = || prop::option::weighted(0.6, l1_msg(noisy));
    let opt_l2 = || prop::option::weighted(0.6, l2_msg(noisy));
    (
        (req_l1(), opt_l1(), opt_l1(), opt_l1(), opt_l1()),
        (req_l2(), req_l2(), req_l2(), opt_l2(), opt_l2(), opt_l2()),
    )
        .prop_map(|((c, cf, h, s, f), (u, sl2, fl2, ps, cu, ls))| v1::SyncStatus {
            current_l1: c,
            current_l1_finalized: cf,
            head_l1: h,
            safe_l1: s,
            finalized_l1: f,
            unsafe_l2: u,
            safe_l2: sl2,
            finalized_l2: fl2,
            pending_safe_l2: ps,
            cross_unsafe_l2: cu,
            local_safe_l2: ls,
        })
}

fn raw_status_msg(noisy: bool) -> impl Strategy<Value = v1::RawStatus> {
    (any::<u64>(), "\\PC{0,12}", any::<u64>(), any::<u64>(), opt(status_msg(noisy), noisy, 0.95))
        .prop_map(|(chain_id, source_id, observed_at_ms, poll_seq, status)| v1::RawStatus {
            chain_id,
            source_id,
            observed_at_ms,
            poll_seq,
            status,
        })
}

fn evidence_msg(noisy: bool) -> impl Strategy<Value = v1::L1Evidence> {
    (
        prop::collection::vec(block_id_msg(noisy), 0..4),
        prop::option::of(block_id_msg(noisy)),
        prop::option::of(block_id_msg(noisy)),
    )
        .prop_map(|(checked, l1_head, l1_finalized)| v1::L1Evidence {
            checked,
            l1_head,
            l1_finalized,
        })
}

fn target_msg(noisy: bool) -> impl Strategy<Value = v1::Target> {
    let l2 = || opt(l2_msg(noisy), noisy, 0.95);
    (
        (any::<u64>(), any::<u64>(), l2(), l2(), l2(), l2(), opt(l1_msg(noisy), noisy, 0.95)),
        prop::option::of(evidence_msg(noisy)),
        prop::collection::vec("[a-z0-9-]{0,8}", 0..3),
        any::<u64>(),
        any::<u64>(),
        (
            opt(l1_msg(noisy), noisy, 0.7),
            opt(l1_msg(noisy), noisy, 0.7),
            opt(l1_msg(noisy), noisy, 0.7),
        ),
    )
        .prop_map(
            |(
                (chain_id, revision, unsafe_l2, safe_l2, local_safe_l2, finalized_l2, current_l1),
                evidence,
                source_ids,
                observed_at_ms,
                validated_at_ms,
                (head_l1, safe_l1, finalized_l1),
            )| v1::Target {
                head_l1,
                safe_l1,
                finalized_l1,
                chain_id,
                // Any u64, independent enough of the others for a round trip.
                epoch: revision.rotate_left(29) ^ observed_at_ms,
                revision,
                unsafe_l2,
                safe_l2,
                local_safe_l2,
                finalized_l2,
                current_l1,
                evidence,
                l1_retreat: revision % 3 == 0,
                source_ids,
                observed_at_ms,
                validated_at_ms,
            },
        )
}

fn rejection_msg(noisy: bool) -> impl Strategy<Value = v1::Rejection> {
    let opt_hash = || prop_oneof![Just(vec![]), hash(noisy)];
    (
        (any::<u64>(), "\\PC{0,12}", any::<u64>(), prop::option::of(status_msg(noisy))),
        (any::<i32>(), "\\PC{0,24}", "[a-z_.]{0,16}", any::<u64>()),
        (opt_hash(), opt_hash(), any::<u64>()),
    )
        .prop_map(
            |(
                (chain_id, source_id, poll_seq, status),
                (reason, message, ref_name, number),
                (expected_hash, actual_hash, rejected_at_ms),
            )| v1::Rejection {
                chain_id,
                source_id,
                poll_seq,
                status,
                reason,
                message,
                ref_name,
                number,
                expected_hash,
                actual_hash,
                rejected_at_ms,
            },
        )
}

fn engine_state_msg(noisy: bool) -> impl Strategy<Value = v1::EngineState> {
    let id = || prop::option::of(block_id_msg(noisy));
    (
        (any::<u64>(), "\\PC{0,12}", any::<i32>(), id(), id(), id()),
        (any::<u64>(), any::<u64>(), any::<i32>(), "\\PC{0,24}"),
        (prop::option::of(l1_msg(noisy)), any::<u64>(), id(), any::<u64>(), any::<u64>()),
        (
            prop::option::of(l1_msg(noisy)),
            prop::option::of(l1_msg(noisy)),
            prop::option::of(l1_msg(noisy)),
        ),
        (
            prop::option::of(l2_msg(noisy)),
            prop::option::of(l2_msg(noisy)),
            prop::option::of(l2_msg(noisy)),
        ),
    )
        .prop_map(
            |(
                (chain_id, node_id, phase, head, safe, finalized),
                (target_revision, applied_revision, last_answer, last_error),
                (current_l1, updated_at_ms, target_head, target_epoch, applied_epoch),
                (head_l1, safe_l1, finalized_l1),
                (head_ref, safe_ref, finalized_ref),
            )| v1::EngineState {
                head_l1,
                safe_l1,
                finalized_l1,
                head_ref,
                safe_ref,
                finalized_ref,
                chain_id,
                node_id,
                phase,
                head,
                safe,
                finalized,
                target_revision,
                applied_revision,
                last_answer,
                last_error,
                current_l1,
                updated_at_ms,
                target_head,
                target_epoch,
                applied_epoch,
            },
        )
}

/// Any generated bus message or control reply, encoded.
fn encoded_message(noisy: bool) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        status_msg(noisy).prop_map(|m| m.encode_to_vec()),
        raw_status_msg(noisy).prop_map(|m| m.encode_to_vec()),
        target_msg(noisy).prop_map(|m| m.encode_to_vec()),
        rejection_msg(noisy).prop_map(|m| m.encode_to_vec()),
        engine_state_msg(noisy).prop_map(|m| m.encode_to_vec()),
        "\\PC{0,40}".prop_map(|reason| v1::PauseRequest { reason }.encode_to_vec()),
        (prop::option::of(target_msg(noisy)), prop::collection::vec(rejection_msg(noisy), 0..3))
            .prop_map(|(last_target, recent_rejections)| {
                v1::ValidatorStatus { last_target, recent_rejections, ..Default::default() }
                    .encode_to_vec()
            }),
        (prop::option::of(engine_state_msg(noisy)), prop::option::of(target_msg(noisy))).prop_map(
            |(state, last_target)| {
                v1::EngineDriverStatus { state, last_target, ..Default::default() }.encode_to_vec()
            }
        ),
        prop::option::of(status_msg(noisy)).prop_map(|last_status| {
            v1::PollerStatus { last_status, ..Default::default() }.encode_to_vec()
        }),
    ]
}

/// Applies a few byte edits (overwrite, insert, delete, truncate) to `b`.
fn edit_bytes(mut b: Vec<u8>, edits: &[(Index, u8, u8)]) -> Vec<u8> {
    for (at, op, byte) in edits {
        if b.is_empty() {
            break;
        }
        let i = at.index(b.len());
        match op % 4 {
            0 => b[i] = *byte,
            1 => b.insert(i, *byte),
            2 => {
                b.remove(i);
            }
            _ => b.truncate(i),
        }
    }
    b
}

/// The hash fields of the present refs of a status, with their conversion paths.
fn status_slots<'a>(m: &'a mut v1::SyncStatus, prefix: &str) -> Vec<(String, &'a mut Vec<u8>)> {
    let v1::SyncStatus {
        current_l1,
        current_l1_finalized,
        head_l1,
        safe_l1,
        finalized_l1,
        unsafe_l2,
        safe_l2,
        finalized_l2,
        pending_safe_l2,
        cross_unsafe_l2,
        local_safe_l2,
    } = m;
    let mut out = Vec::new();
    for (name, r) in [
        ("current_l1", current_l1),
        ("current_l1_finalized", current_l1_finalized),
        ("head_l1", head_l1),
        ("safe_l1", safe_l1),
        ("finalized_l1", finalized_l1),
    ] {
        l1_slots(r, &join(prefix, name), &mut out);
    }
    for (name, r) in [
        ("unsafe_l2", unsafe_l2),
        ("safe_l2", safe_l2),
        ("finalized_l2", finalized_l2),
        ("pending_safe_l2", pending_safe_l2),
        ("cross_unsafe_l2", cross_unsafe_l2),
        ("local_safe_l2", local_safe_l2),
    ] {
        l2_slots(r, &join(prefix, name), &mut out);
    }
    out
}

fn target_slots(m: &mut v1::Target) -> Vec<(String, &mut Vec<u8>)> {
    let v1::Target { unsafe_l2, safe_l2, local_safe_l2, finalized_l2, current_l1, .. } = m;
    let mut out = Vec::new();
    for (name, r) in [
        ("unsafe_l2", unsafe_l2),
        ("safe_l2", safe_l2),
        ("local_safe_l2", local_safe_l2),
        ("finalized_l2", finalized_l2),
    ] {
        l2_slots(r, name, &mut out);
    }
    l1_slots(current_l1, "current_l1", &mut out);
    out
}

fn l1_slots<'a>(
    r: &'a mut Option<v1::L1BlockRef>,
    path: &str,
    out: &mut Vec<(String, &'a mut Vec<u8>)>,
) {
    if let Some(r) = r.as_mut() {
        out.push((join(path, "hash"), &mut r.hash));
        out.push((join(path, "parent_hash"), &mut r.parent_hash));
    }
}

fn l2_slots<'a>(
    r: &'a mut Option<v1::L2BlockRef>,
    path: &str,
    out: &mut Vec<(String, &'a mut Vec<u8>)>,
) {
    if let Some(r) = r.as_mut() {
        out.push((join(path, "hash"), &mut r.hash));
        out.push((join(path, "parent_hash"), &mut r.parent_hash));
        if let Some(o) = r.l1origin.as_mut() {
            out.push((join(path, "l1origin.hash"), &mut o.hash));
        }
    }
}

/// Sets the `pick`ed slot to `len` bytes of `fill`, returning its path.
fn spoil(mut slots: Vec<(String, &mut Vec<u8>)>, pick: Index, len: usize, fill: u8) -> String {
    let (path, slot) = slots.swap_remove(pick.index(slots.len()));
    *slot = vec![fill; len];
    path
}

/// The message after a trip over the wire.
fn wire<M: Message + Default>(m: &M) -> M {
    M::decode(m.encode_to_vec().as_slice()).expect("an encoded message decodes")
}

fn assert_names(e: &ProtoError, path: &str, len: usize) {
    assert_eq!(e.field, path, "{e}");
    assert_eq!(e.reason, format!("hash must be 32 bytes, got {len}"), "{e}");
    assert_eq!(e.to_string(), format!("protobuf field `{path}`: hash must be 32 bytes, got {len}"));
}

// ---------------------------------------------------------------- properties

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Arbitrary bytes into every message type: never a panic, bounded, consistent.
    #[test]
    fn arbitrary_bytes_decode_cleanly_as_every_message(
        bytes in prop::collection::vec(any::<u8>(), 0..4096),
    ) {
        check_all(&bytes);
    }

    /// Real encoded messages (some with faults) with a few bytes overwritten, inserted,
    /// deleted or cut: near-valid input, decoded as every message type.
    #[test]
    fn byte_edited_messages_decode_cleanly_as_every_message(
        bytes in encoded_message(true),
        edits in prop::collection::vec((any::<Index>(), any::<u8>(), any::<u8>()), 0..4),
    ) {
        check_all(&edit_bytes(bytes, &edits));
    }

    /// Generated messages with random hash lengths and absent refs: after the wire, each
    /// conversion succeeds iff nothing is wrong, else names one of the real faults.
    #[test]
    fn conversions_accept_exactly_the_well_formed(
        s in status_msg(true),
        raw in raw_status_msg(true),
        t in target_msg(true),
        rej in rejection_msg(true),
        es in engine_state_msg(true),
    ) {
        let (s, raw, t, rej, es) = (wire(&s), wire(&raw), wire(&t), wire(&rej), wire(&es));
        let via_try_from = SyncStatus::try_from(&s);
        prop_assert_eq!(via_try_from.is_ok(), status_faults(&s, "").is_empty());
        prop_assert_eq!(via_try_from.ok(), check_sync_status(&s, ""));
        check_raw_status(&raw);
        check_target(&t);
        check_rejection(&rej);
        check_engine_state(&es);
    }

    /// A well-formed status, raw status and target with exactly one hash of 0, 31, 33 or 64
    /// bytes: the conversion fails naming exactly that field and the length it got.
    #[test]
    fn wrong_length_hash_is_rejected_naming_its_field(
        s in status_msg(false),
        raw in raw_status_msg(false),
        t in target_msg(false),
        ids in (block_id_msg(false), l1_msg(false), l2_msg(false)),
        pick in any::<Index>(),
        len in prop::sample::select(vec![0usize, 31, 33, 64]),
        fill in any::<u8>(),
    ) {
        prop_assert!(SyncStatus::try_from(&s).is_ok() && raw.core_status().is_ok());
        prop_assert!(t.to_core().is_ok());

        let mut s = s;
        let path = spoil(status_slots(&mut s, ""), pick, len, fill);
        assert_names(&SyncStatus::try_from(&wire(&s)).unwrap_err(), &path, len);

        let mut raw = raw;
        let path = spoil(status_slots(raw.status.as_mut().unwrap(), "status"), pick, len, fill);
        assert_names(&wire(&raw).core_status().unwrap_err(), &path, len);

        let mut t = t;
        let path = spoil(target_slots(&mut t), pick, len, fill);
        assert_names(&wire(&t).to_core().unwrap_err(), &path, len);

        // The standalone refs as the engine state and evidence carry them.
        let (mut id, l1, l2) = ids;
        id.hash = vec![fill; len];
        assert_names(&block_id(&wire(&id), "head").unwrap_err(), "head.hash", len);
        let (mut l1, mut slots) = (Some(l1), Vec::new());
        l1_slots(&mut l1, "current_l1", &mut slots);
        let path = spoil(slots, pick, len, fill);
        assert_names(&l1_ref(&wire(&l1.unwrap()), "current_l1").unwrap_err(), &path, len);
        let (mut l2, mut slots) = (Some(l2), Vec::new());
        l2_slots(&mut l2, "safe", &mut slots);
        let path = spoil(slots, pick, len, fill);
        assert_names(&l2_ref(&wire(&l2.unwrap()), "safe").unwrap_err(), &path, len);

        // An optional hash: empty means none; any other wrong length is an error.
        let r = opt_hash_from_bytes(&vec![fill; len], "expected_hash");
        if len == 0 {
            prop_assert_eq!(r, Ok(None));
        } else {
            assert_names(&r.unwrap_err(), "expected_hash", len);
        }
    }
}

/// prost's recursion limit stops deeply nested unknown groups with an error, never a stack
/// overflow (the schema itself has no recursive message).
#[test]
fn deeply_nested_groups_are_refused_without_overflow() {
    // Field 15, wire type 3 (start group), 100 000 times.
    let groups = vec![0x7bu8; 100_000];
    check_all(&groups);
    let e = v1::RawStatus::decode(groups.as_slice()).unwrap_err();
    assert!(e.to_string().contains("recursion limit"), "{e}");
}
