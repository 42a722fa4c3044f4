//! Fuzzes lightcl-core's network-edge JSON decoders (`SyncStatus::from_value`/`from_json`/serde,
//! `parse_rpc_block` with its hex quantities, `parse_hash`) with arbitrary JSON, arbitrary bytes
//! and one-field mutations of real `optimism_syncStatus` results; asserts they never panic, that an
//! `Ok` carries exactly what the input said, and that an `Err` names a schema field whose input
//! value really is missing or malformed, with the reason that fits it.

use alloy_primitives::B256;
use lightcl_core::status::{
    ParseError, RpcBlock, SyncStatus, parse_hash, parse_rpc_block, to_quantity,
};
use lightcl_core::{BlockId, L1BlockRef, L2BlockRef};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Map, Value, json};

const L1_REFS: [&str; 5] =
    ["current_l1", "current_l1_finalized", "head_l1", "safe_l1", "finalized_l1"];
const L2_REFS: [&str; 6] =
    ["unsafe_l2", "safe_l2", "finalized_l2", "pending_safe_l2", "cross_unsafe_l2", "local_safe_l2"];
const REQUIRED: [&str; 4] = ["current_l1", "unsafe_l2", "safe_l2", "finalized_l2"];
const REF_KEYS: [&str; 8] =
    ["hash", "number", "parentHash", "timestamp", "l1origin", "sequenceNumber", "hash", "number"];
const NEAR_MISS_KEYS: [&str; 8] =
    ["parent_hash", "Hash", "l1Origin", "sequence_number", "safeL2", "", "result", "0x"];
const FIXTURES: [&str; 3] = ["status_full.json", "status_old_node.json", "status_unset.json"];

// ---------------------------------------------------------------- strategies

/// Object keys: mostly the real field names, some near misses, some random.
fn key() -> impl Strategy<Value = String> {
    let real: Vec<&str> = L1_REFS.iter().chain(&L2_REFS).chain(&REF_KEYS).copied().collect();
    prop_oneof![
        6 => prop::sample::select(real).prop_map(str::to_owned),
        1 => prop::sample::select(NEAR_MISS_KEYS.to_vec()).prop_map(str::to_owned),
        1 => "[a-zA-Z_]{0,12}",
    ]
}

/// A valid hash string: `0x` and 64 hex digits, lower, upper or mixed case. (Cheaper to
/// generate and shrink than a 64-character regex.)
fn hash_string() -> impl Strategy<Value = String> {
    (any::<[u8; 32]>(), any::<u8>()).prop_map(|(b, case)| {
        let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
        let hex = match case % 3 {
            0 => hex,
            1 => hex.to_ascii_uppercase(),
            _ => hex
                .chars()
                .enumerate()
                .map(|(i, c)| if i % 2 == 0 { c.to_ascii_uppercase() } else { c })
                .collect(),
        };
        format!("0x{hex}")
    })
}

/// Strings, many of them hex-looking ("0x" + hex of random length, near misses, no prefix).
fn string() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => hash_string(),
        3 => "0x[0-9a-fA-F]{0,80}",
        2 => "0x[0-9a-f]{1,20}",
        1 => "0x[0-9a-fA-FgGxX+ -]{60,68}",
        1 => "0[xX]0x[0-9a-f]{62,64}",
        1 => "[0-9a-f]{64}",
        1 => "0x[0-9a-f]{62}é",
        1 => "0x[+-][0-9a-f]{1,16}",
        2 => "\\PC{0,24}",
    ]
}

/// JSON numbers: any u64/i64/f64, integral floats, and huge or exponent literals (which
/// serde_json turns into floats or refuses; refused ones become null).
fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => any::<u64>().prop_map(Value::from),
        2 => any::<i64>().prop_map(Value::from),
        1 => prop_oneof![Just(u64::MAX), Just(0u64), Just(1u64 << 53)].prop_map(Value::from),
        1 => any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        1 => (0u64..1 << 53).prop_map(|n| json!(n as f64)),
        1 => "-?[1-9][0-9]{15,40}(\\.[0-9]{1,3})?|[1-9][0-9]{0,3}[eE][+-]?[0-9]{1,3}"
            .prop_map(|s| serde_json::from_str::<Value>(&s).unwrap_or(Value::Null)),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::Bool),
        3 => number(),
        4 => string().prop_map(Value::String),
    ]
}

/// Arbitrary JSON: leaves, arrays, and objects keyed mostly by real field names.
fn json() -> BoxedStrategy<Value> {
    leaf()
        .prop_recursive(4, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::vec((key(), inner), 0..7)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
        .boxed()
}

/// A wrong value inside an otherwise plausible status: mostly a leaf, sometimes a tree
/// (cheaper than `json()` alone, which matters with ~80 values per status).
fn junk() -> BoxedStrategy<Value> {
    prop_oneof![3 => leaf(), 1 => json()].boxed()
}

/// A valid hash, or (when `noisy`) now and then arbitrary JSON.
fn plausible_hash(noisy: bool) -> BoxedStrategy<Value> {
    let valid = hash_string().prop_map(Value::String);
    if noisy { prop_oneof![8 => valid, 1 => junk()].boxed() } else { valid.boxed() }
}

/// A u64, or (when `noisy`) now and then arbitrary JSON.
fn plausible_u64(noisy: bool) -> BoxedStrategy<Value> {
    let valid = any::<u64>().prop_map(Value::from);
    if noisy { prop_oneof![8 => valid, 1 => junk()].boxed() } else { valid.boxed() }
}

/// A ref-shaped object (L2 fields included; L1 parsing ignores them). When `noisy`, each key
/// is dropped with probability ~1/12, each value is sometimes arbitrary JSON, and random keys
/// (real names included) are added; otherwise it is well-formed.
fn ref_object(noisy: bool) -> BoxedStrategy<Value> {
    let drop_below = if noisy { 22 } else { 0 };
    let origin = (plausible_hash(noisy), plausible_u64(noisy), any::<u8>(), any::<u8>()).prop_map(
        move |(h, n, d1, d2)| {
            let mut o = Map::new();
            if d1 >= drop_below {
                o.insert("hash".into(), h);
            }
            if d2 >= drop_below {
                o.insert("number".into(), n);
            }
            Value::Object(o)
        },
    );
    let origin = if noisy { prop_oneof![8 => origin, 1 => junk()].boxed() } else { origin.boxed() };
    let extra = if noisy {
        prop::collection::vec((key(), junk()), 0..2).boxed()
    } else {
        Just(vec![]).boxed()
    };
    (
        (plausible_hash(noisy), plausible_u64(noisy), plausible_hash(noisy), plausible_u64(noisy)),
        (origin, plausible_u64(noisy)),
        prop::collection::vec(any::<u8>(), 6),
        extra,
    )
        .prop_map(move |((h, n, p, t), (o, seq), drops, extra)| {
            let mut m: Map<String, Value> = extra.into_iter().collect();
            let vals = [h, n, p, t, o, seq];
            let keys = ["hash", "number", "parentHash", "timestamp", "l1origin", "sequenceNumber"];
            for ((k, v), d) in keys.into_iter().zip(vals).zip(drops) {
                if d >= drop_below {
                    m.insert(k.into(), v);
                }
            }
            Value::Object(m)
        })
        .boxed()
}

/// A status-shaped object. Clean (half the cases): well-formed refs, optional refs absent
/// with probability ~0.3, a required one absent now and then, unread extra keys. Noisy: refs
/// sometimes arbitrary JSON, keys dropped, junk inside, random keys (real names included).
fn status_like() -> impl Strategy<Value = Value> {
    let with = |noisy: bool| {
        let one = if noisy {
            prop_oneof![10 => ref_object(true), 1 => json()].boxed()
        } else {
            ref_object(false)
        };
        let extra = if noisy {
            prop::collection::vec((key(), junk()), 0..3).boxed()
        } else {
            prop::collection::vec(("x_[a-z]{0,8}", junk()), 0..3).boxed()
        };
        (prop::collection::vec(one, 11), prop::collection::vec(any::<u8>(), 11), extra).prop_map(
            move |(refs, present, extra)| {
                let mut m: Map<String, Value> = extra.into_iter().collect();
                for ((name, r), p) in L1_REFS.iter().chain(&L2_REFS).zip(refs).zip(present) {
                    let absent = match (noisy, REQUIRED.contains(name)) {
                        (true, _) => p < 26,
                        (false, true) => p < 3,
                        (false, false) => p < 77,
                    };
                    if !absent {
                        m.insert((*name).into(), r);
                    }
                }
                Value::Object(m)
            },
        )
    };
    prop_oneof![with(false), with(true)]
}

// ---------------------------------------------------------------- oracles

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str::<Value>(&text).unwrap()["result"].clone()
}

fn is_hash_field(last: &str) -> bool {
    matches!(last, "hash" | "parentHash")
}

fn is_u64_field(last: &str) -> bool {
    matches!(last, "number" | "timestamp" | "sequenceNumber")
}

/// The strict form of a hash: `0x` and exactly 64 hex digits.
fn valid_hash(v: &Value) -> bool {
    v.as_str()
        .and_then(|s| s.strip_prefix("0x"))
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The reason `parse_hash` must give for a value that is not a valid hash.
fn check_hash_reason(x: &Value, e: &ParseError) {
    let r = &e.reason;
    match x.as_str() {
        None => assert!(r.starts_with("expected a hex string, got "), "{e}"),
        Some(s) if !s.starts_with("0x") => assert!(r.ends_with("lacks the 0x prefix"), "{e}"),
        Some(s) if s.len() != 66 => {
            assert!(r.starts_with("hash must be 32 bytes (64 hex digits), got "), "{e}");
        }
        Some(_) => assert!(r.starts_with("invalid hex in "), "{e}"),
    }
}

/// The reason the status parser must give for a value that is not a u64.
fn check_u64_reason(x: &Value, e: &ParseError) {
    let r = &e.reason;
    match x {
        Value::Number(n) if n.as_i64().is_some_and(|i| i < 0) => {
            assert!(r.starts_with("negative number "), "{e}");
        }
        Value::Number(n) if n.as_f64().is_some_and(|f| f >= 18_446_744_073_709_551_616.0) => {
            assert!(r.ends_with("overflows u64"), "{e}");
        }
        Value::Number(_) => assert!(r.starts_with("expected an unsigned integer, got "), "{e}"),
        _ => assert!(r.starts_with("expected an integer, got "), "{e}"),
    }
}

/// The value at a dotted path of `v` (`result` is `v` itself).
fn lookup<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    if path == "result" || path == "block" {
        return Some(v);
    }
    path.split('.').try_fold(v, |cur, seg| cur.as_object()?.get(seg))
}

/// True for `result`, a ref name, or a field of that ref the parser reads.
fn in_status_schema(path: &str) -> bool {
    if path == "result" {
        return true;
    }
    let (top, rest) = path.split_once('.').map_or((path, None), |(t, r)| (t, Some(r)));
    let l1 = L1_REFS.contains(&top);
    let l2 = L2_REFS.contains(&top);
    match rest {
        None => l1 || l2,
        Some("hash" | "number" | "parentHash" | "timestamp") => l1 || l2,
        Some("l1origin" | "sequenceNumber" | "l1origin.hash" | "l1origin.number") => l2,
        Some(_) => false,
    }
}

/// An error must name a field of the schema whose input value is missing, or present and
/// malformed, with the reason matching how it is malformed.
fn check_status_err(v: &Value, e: &ParseError) {
    assert_eq!(e.to_string(), format!("field `{}`: {}", e.field, e.reason));
    assert!(in_status_schema(&e.field), "error names a field outside the schema: {e}");
    let at = lookup(v, &e.field);
    if e.reason == "missing" || e.reason == "missing (required)" {
        assert!(at.is_none_or(Value::is_null), "{e} but the input has {at:?}");
        assert_eq!(
            e.reason == "missing (required)",
            REQUIRED.contains(&e.field.as_str()),
            "only the four required refs are 'missing (required)': {e}"
        );
        return;
    }
    let x = at.unwrap_or_else(|| panic!("{e} names a field the input lacks"));
    assert!(e.field == "result" || !x.is_null(), "{e}: a null field must read as missing");
    let last = e.field.rsplit('.').next().unwrap();
    if is_hash_field(last) {
        assert!(!valid_hash(x), "{e} for the valid hash {x}");
        check_hash_reason(x, e);
    } else if is_u64_field(last) {
        assert!(x.as_u64().is_none(), "{e} for the u64 {x}");
        check_u64_reason(x, e);
    } else {
        assert!(!x.is_object(), "{e} for an object");
        assert!(e.reason.starts_with("expected an object, got "), "{e}");
    }
}

/// `out` (a parsed ref, re-serialized) carries exactly the input's values.
fn assert_ref_matches(name: &str, out: &Value, inp: &Value, l2: bool) {
    let same_hash = |o: &Value, i: &Value| {
        assert_eq!(
            o.as_str().map(str::to_ascii_lowercase),
            i.as_str().map(str::to_ascii_lowercase),
            "{name}"
        );
    };
    let same_u64 = |o: &Value, i: &Value| assert_eq!(o.as_u64(), i.as_u64(), "{name}");
    same_hash(&out["hash"], &inp["hash"]);
    same_hash(&out["parentHash"], &inp["parentHash"]);
    same_u64(&out["number"], &inp["number"]);
    same_u64(&out["timestamp"], &inp["timestamp"]);
    if l2 {
        same_hash(&out["l1origin"]["hash"], &inp["l1origin"]["hash"]);
        same_u64(&out["l1origin"]["number"], &inp["l1origin"]["number"]);
        same_u64(&out["sequenceNumber"], &inp["sequenceNumber"]);
    }
}

/// Runs every status decoder on `v` and checks the invariants; returns the parser's result.
fn check_status(v: &Value) -> Result<SyncStatus, ParseError> {
    let r = SyncStatus::from_value(v);
    match &r {
        Ok(s) => {
            let out = serde_json::to_value(s).unwrap();
            assert_eq!(SyncStatus::from_value(&out).as_ref(), Ok(s), "wire round trip");
            let obj = v.as_object().expect("only an object parses");
            for name in L1_REFS.iter().chain(&L2_REFS) {
                let l2 = L2_REFS.contains(name);
                match obj.get(*name).filter(|x| !x.is_null()) {
                    Some(inp) => assert_ref_matches(name, &out[*name], inp, l2),
                    None => {
                        assert!(!REQUIRED.contains(name), "Ok without the required {name}");
                        if l2 || *name == "current_l1_finalized" {
                            assert!(out.get(*name).is_none(), "absent {name} stays None");
                        } else {
                            let unset: L1BlockRef = serde_json::from_value(out[*name].clone())
                                .expect("serialized L1 ref reads back");
                            assert!(unset == L1BlockRef::default(), "absent {name} is unset");
                        }
                    }
                }
            }
        }
        Err(e) => check_status_err(v, e),
    }
    // The serde entry point and the text entry point agree with `from_value`.
    match (&r, serde_json::from_value::<SyncStatus>(v.clone())) {
        (Ok(a), Ok(b)) => assert_eq!(a, &b),
        (Err(e), Err(se)) => assert!(se.to_string().contains(&e.to_string()), "{se} vs {e}"),
        (a, b) => panic!("from_value {a:?} but serde {b:?}"),
    }
    // (Only the field is compared: serde_json's default float parsing may move a float that
    // went through text by one ulp, which shows in a reason quoting it.)
    match (SyncStatus::from_json(&v.to_string()), &r) {
        (Ok(a), Ok(b)) => assert_eq!(&a, b),
        (Err(a), Err(b)) => assert_eq!(a.field, b.field),
        (a, b) => panic!("from_json {a:?} but from_value {b:?}"),
    }
    // The derived decoders of the ref types read the same network data: no panic.
    let _ = serde_json::from_value::<L1BlockRef>(v.clone());
    let _ = serde_json::from_value::<L2BlockRef>(v.clone());
    let _ = serde_json::from_value::<BlockId>(v.clone());
    r
}

/// The strict form of a quantity: `0x` and 1 to 16 hex digits.
fn valid_quantity(v: &Value) -> bool {
    v.as_str()
        .and_then(|s| s.strip_prefix("0x"))
        .is_some_and(|h| (1..=16).contains(&h.len()) && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn check_quantity_reason(x: &Value, e: &ParseError) {
    let r = &e.reason;
    match x.as_str() {
        None => assert!(r.starts_with("expected a hex quantity, got "), "{e}"),
        Some(s) if !s.starts_with("0x") => assert!(r.ends_with("lacks the 0x prefix"), "{e}"),
        Some(s) if s.len() == 2 || s.len() > 18 => {
            assert!(r.ends_with("is empty or over 64 bits"), "{e}");
        }
        Some(_) => assert!(r.starts_with("invalid hex quantity "), "{e}"),
    }
}

/// Runs `parse_rpc_block` on `v` and checks the invariants; the answer read off the wire into
/// an `RpcBlock` (only the read fields kept) parses to exactly the same result.
fn check_block(v: &Value) -> Result<Option<L1BlockRef>, ParseError> {
    let r = parse_rpc_block(v);
    let text = serde_json::to_string(v).unwrap();
    let wire: RpcBlock = serde_json::from_str(&text).expect("any JSON value is an RpcBlock");
    assert_eq!(wire.parse(), r, "from the wire: {text}");
    match &r {
        Ok(None) => assert!(v.is_null(), "Ok(None) only for null"),
        Ok(Some(b)) => {
            let hash = |k: &str| v[k].as_str().unwrap().parse::<B256>().unwrap();
            let qty = |k: &str| {
                let s = v[k].as_str().unwrap();
                let h = s.strip_prefix("0x").expect("a parsed quantity has 0x");
                assert!((1..=16).contains(&h.len()), "{s}");
                u64::from_str_radix(h, 16).unwrap()
            };
            assert!(valid_hash(&v["hash"]) && valid_hash(&v["parentHash"]));
            assert_eq!((b.hash, b.parent_hash), (hash("hash"), hash("parentHash")));
            assert_eq!((b.number, b.timestamp), (qty("number"), qty("timestamp")));
        }
        Err(e) => {
            assert_eq!(e.to_string(), format!("field `{}`: {}", e.field, e.reason));
            let f = e.field.as_str();
            assert!(matches!(f, "block" | "hash" | "number" | "parentHash" | "timestamp"), "{e}");
            let at = lookup(v, f);
            if e.reason == "missing" {
                assert!(at.is_none_or(Value::is_null), "{e} but the input has {at:?}");
            } else {
                let x = at.unwrap_or_else(|| panic!("{e} names a field the input lacks"));
                if f == "block" {
                    assert!(!x.is_object() && e.reason.starts_with("expected an object, got "));
                } else if is_hash_field(f) {
                    assert!(!valid_hash(x), "{e}");
                    check_hash_reason(x, e);
                } else {
                    assert!(!valid_quantity(x), "{e} for the valid quantity {x}");
                    check_quantity_reason(x, e);
                }
            }
        }
    }
    r
}

/// Every path (ref, ref field, l1origin field) present in a status object.
fn paths(v: &Value) -> Vec<Vec<String>> {
    fn walk(v: &Value, prefix: &[String], out: &mut Vec<Vec<String>>) {
        if let Some(o) = v.as_object() {
            for (k, child) in o {
                let mut p = prefix.to_vec();
                p.push(k.clone());
                out.push(p.clone());
                walk(child, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(v, &[], &mut out);
    out
}

#[derive(Debug, Clone)]
enum Mutation {
    Replace(Value),
    Remove,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        6 => prop_oneof![2 => leaf(), 1 => json()].prop_map(Mutation::Replace),
        1 => Just(Mutation::Remove),
    ]
}

fn apply(v: &mut Value, path: &[String], m: &Mutation) {
    let (last, parents) = path.split_last().unwrap();
    let parent = parents.iter().fold(v, |cur, seg| &mut cur[seg.as_str()]);
    let obj = parent.as_object_mut().unwrap();
    match m {
        Mutation::Replace(x) => {
            obj.insert(last.clone(), x.clone());
        }
        Mutation::Remove => {
            obj.remove(last);
        }
    }
}

/// Applies a few byte edits (overwrite, insert, delete) to `text`.
fn edit_bytes(text: &str, edits: &[(Index, u8, u8)]) -> Vec<u8> {
    let mut b = text.as_bytes().to_vec();
    for (at, op, byte) in edits {
        if b.is_empty() {
            break;
        }
        let i = at.index(b.len());
        match op % 3 {
            0 => b[i] = *byte,
            1 => b.insert(i, *byte),
            _ => {
                b.remove(i);
            }
        }
    }
    b
}

/// Bytes as they arrive from the network, through every decoding entry point.
fn check_bytes(bytes: &[u8]) {
    if let Ok(v) = serde_json::from_slice::<Value>(bytes) {
        let _ = check_status(&v);
        let _ = check_block(&v);
    }
    let direct = serde_json::from_slice::<SyncStatus>(bytes);
    let via_value = serde_json::from_slice::<Value>(bytes).ok().map(|v| SyncStatus::from_value(&v));
    match (&direct, &via_value) {
        (Ok(a), Some(Ok(b))) => assert_eq!(a, b),
        (Err(_), None | Some(Err(_))) => {}
        (a, b) => panic!("from_slice {a:?} but from_value {b:?}"),
    }
    if let Ok(text) = std::str::from_utf8(bytes) {
        match SyncStatus::from_json(text) {
            Ok(s) => assert_eq!(direct.as_ref().ok(), Some(&s)),
            Err(e) if via_value.is_none() => {
                assert_eq!(e.field, "result");
                assert!(e.reason.starts_with("not JSON: "), "{e}");
            }
            Err(_) => {}
        }
    }
    let _ = serde_json::from_slice::<L2BlockRef>(bytes);
    let _ = serde_json::from_slice::<L1BlockRef>(bytes);
}

// ---------------------------------------------------------------- properties

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Arbitrary JSON: the status and block parsers never panic, and every answer is checked
    /// against the input.
    #[test]
    fn arbitrary_json_is_answered_consistently(v in json()) {
        let _ = check_status(&v);
        let _ = check_block(&v);
    }

    /// Status-shaped JSON (mostly well-formed refs with occasional junk) reaches the deep
    /// fields; when every present ref is well-formed and the required ones are there, it parses.
    #[test]
    fn status_shaped_json_parses_iff_every_ref_is_well_formed(v in status_like()) {
        let r = check_status(&v);
        let obj = v.as_object().unwrap();
        let ref_ok = |name: &str, x: &Value| {
            let l2 = L2_REFS.contains(&name);
            x.is_object()
                && valid_hash(&x["hash"]) && valid_hash(&x["parentHash"])
                && x["number"].as_u64().is_some() && x["timestamp"].as_u64().is_some()
                && (!l2 || (x["l1origin"].is_object() && valid_hash(&x["l1origin"]["hash"])
                    && x["l1origin"]["number"].as_u64().is_some()
                    && x["sequenceNumber"].as_u64().is_some()))
        };
        let well_formed = L1_REFS.iter().chain(&L2_REFS).all(|name| {
            match obj.get(*name).filter(|x| !x.is_null()) {
                Some(x) => ref_ok(name, x),
                None => !REQUIRED.contains(name),
            }
        });
        prop_assert_eq!(r.is_ok(), well_formed, "{:?}", r);
    }

    /// One field of a real status replaced by an arbitrary value (or removed): the error names
    /// exactly that field (or one inside it), and a hash or number field parses iff the new value
    /// is a valid hash or u64.
    #[test]
    fn one_mutated_field_is_the_one_named(
        fx in 0..FIXTURES.len(),
        pick in any::<Index>(),
        m in mutation(),
    ) {
        let mut v = fixture(FIXTURES[fx]);
        let before = SyncStatus::from_value(&v).expect("fixtures parse");
        let all = paths(&v);
        let path = pick.get(&all).clone();
        apply(&mut v, &path, &m);
        let dotted = path.join(".");
        let r = check_status(&v);
        if !in_status_schema(&dotted) {
            // Keys the parser does not read (`some_future_field`, `queued_unsafe_l2`) are ignored.
            prop_assert_eq!(r, Ok(before), "mutating the unread {} changed the result", dotted);
            return Ok(());
        }
        let new = match &m {
            Mutation::Replace(x) if !x.is_null() => Some(x),
            _ => None,
        };
        let last = path.last().unwrap().as_str();
        match new {
            None if path.len() == 1 && !REQUIRED.contains(&dotted.as_str()) => {
                prop_assert!(r.is_ok(), "removing optional {} must parse: {:?}", dotted, r);
            }
            None => {
                let e = r.expect_err("a removed required field is an error");
                prop_assert_eq!(&e.field, &dotted);
                let want = if path.len() == 1 { "missing (required)" } else { "missing" };
                prop_assert_eq!(e.reason.as_str(), want);
            }
            Some(x) if is_hash_field(last) || is_u64_field(last) => {
                let ok = if is_hash_field(last) { valid_hash(x) } else { x.as_u64().is_some() };
                match r {
                    Ok(_) => prop_assert!(ok, "{} accepted {}", dotted, x),
                    Err(e) => {
                        prop_assert!(!ok, "{} rejected the valid {}: {}", dotted, x, e);
                        prop_assert_eq!(&e.field, &dotted);
                    }
                }
            }
            Some(x) => {
                if let Err(e) = &r {
                    prop_assert!(
                        e.field == dotted || e.field.starts_with(&format!("{dotted}.")),
                        "mutated {} but the error names {}", dotted, e
                    );
                }
                if !x.is_object() {
                    prop_assert!(r.is_err(), "{} = {} (not an object) accepted", dotted, x);
                }
            }
        }
    }

    /// Arbitrary bytes through serde_json and every status entry point.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        check_bytes(&bytes);
    }

    /// A real status's JSON text with a few bytes overwritten, inserted or deleted: often still
    /// JSON, so the parser sees near-valid input.
    #[test]
    fn byte_edited_status_text_never_panics(
        fx in 0..FIXTURES.len(),
        edits in prop::collection::vec((any::<Index>(), any::<u8>(), any::<u8>()), 1..4),
    ) {
        let text = serde_json::to_string(&fixture(FIXTURES[fx])).unwrap();
        check_bytes(&edit_bytes(&text, &edits));
    }

    /// `parse_hash` accepts exactly `0x` + 64 hex digits, and names the given path otherwise.
    #[test]
    fn parse_hash_accepts_exactly_32_byte_hex(s in string(), path in "[a-z_.]{1,20}") {
        let v = Value::String(s.clone());
        match parse_hash(&v, &path) {
            Ok(h) => {
                prop_assert!(valid_hash(&v), "accepted {:?}", s);
                prop_assert_eq!(h.to_string(), s.to_ascii_lowercase());
            }
            Err(e) => {
                prop_assert!(!valid_hash(&v), "rejected {:?}: {}", s, e);
                prop_assert_eq!(&e.field, &path);
                check_hash_reason(&v, &e);
            }
        }
    }

    /// Block quantities: `0x` + 1..=16 hex digits parse to their value, others are named errors;
    /// `to_quantity` round-trips; a block with junk fields is answered consistently.
    #[test]
    fn rpc_block_quantities_are_strict(
        n in any::<u64>(),
        digits in "[0-9a-fA-F]{0,20}",
        ts in prop_oneof![3 => "0x[0-9a-f]{1,16}".prop_map(Value::String), 1 => json()],
        hash in plausible_hash(true),
    ) {
        let block = |number: Value, timestamp: Value, hash: Value| json!({
            "hash": hash,
            "number": number,
            "parentHash": format!("0x{}", "ab".repeat(32)),
            "timestamp": timestamp,
            "transactions": [],
        });
        let good = || json!(format!("0x{}", "11".repeat(32)));
        let ok = check_block(&block(json!(to_quantity(n)), json!("0x1"), good()));
        prop_assert_eq!(ok.unwrap().unwrap().number, n);

        let r = check_block(&block(json!(format!("0x{digits}")), json!("0x1"), good()));
        if (1..=16).contains(&digits.len()) {
            let want = u64::from_str_radix(&digits, 16).unwrap();
            prop_assert_eq!(r.unwrap().unwrap().number, want);
        } else {
            let e = r.unwrap_err();
            prop_assert_eq!(e.field.as_str(), "number");
            prop_assert!(e.reason.ends_with("is empty or over 64 bits"), "{}", e);
        }

        let _ = check_block(&block(json!(to_quantity(n)), ts, hash));
    }
}

/// serde_json's recursion limit stops a deeply nested payload before any parser sees it: no
/// stack overflow, just an error naming `result`.
#[test]
fn deeply_nested_payload_is_refused_without_overflow() {
    for open in ["[", "{\"current_l1\":"] {
        let text = open.repeat(100_000);
        assert!(serde_json::from_str::<Value>(&text).is_err());
        let e = SyncStatus::from_json(&text).unwrap_err();
        assert_eq!(e.field, "result");
        assert!(e.reason.contains("recursion limit exceeded"), "{e}");
    }
    let text = format!("{}{}", "[".repeat(1000), "]".repeat(1000));
    let e = SyncStatus::from_json(&text).unwrap_err();
    assert!(e.reason.contains("recursion limit"), "{e}");
}

/// Guards the properties above against going vacuous: the status-shaped generator yields both
/// statuses that parse and statuses that do not, in useful proportions.
#[test]
fn status_generator_reaches_both_outcomes() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = status_like();
    let n = 200;
    let ok = (0..n)
        .filter(|_| {
            let v = strategy.new_tree(&mut runner).unwrap().current();
            SyncStatus::from_value(&v).is_ok()
        })
        .count();
    assert!((n / 4..=n * 3 / 4).contains(&ok), "{ok} of {n} generated statuses parse");
}

/// A quantity with a sign is not hex (`u64::from_str_radix` alone would read "0x+1f" as 31),
/// and a quoted bad value in an error is cut short whatever its size.
#[test]
fn signed_quantities_are_refused_and_errors_stay_short() {
    let h = format!("0x{}", "11".repeat(32));
    let block =
        |number: Value| json!({"hash": h, "parentHash": h, "number": number, "timestamp": "0x1"});
    let e = parse_rpc_block(&block(json!("0x+1f"))).unwrap_err();
    assert_eq!((e.field.as_str(), e.reason.as_str()), ("number", "invalid hex quantity \"0x+1f\""));
    let huge = "9".repeat(1 << 20);
    let e = parse_rpc_block(&block(json!(huge))).unwrap_err();
    assert!(
        e.reason.ends_with("lacks the 0x prefix") && e.reason.len() < 200,
        "{}",
        e.reason.len()
    );
}
