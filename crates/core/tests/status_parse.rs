//! Fixture tests for the `optimism_syncStatus` parser (docs/architecture.md#status-wire-format).

use lightcl_core::status::{ParseError, SyncStatus, parse_rpc_block, to_quantity};
use serde_json::{Value, json};

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str::<Value>(&text).unwrap()["result"].clone()
}

fn err_of(v: &Value) -> ParseError {
    SyncStatus::from_value(v).expect_err("expected a parse error")
}

#[test]
fn full_op_node_status_parses_every_ref() {
    let s = SyncStatus::from_value(&fixture("status_full.json")).unwrap();
    assert_eq!(s.current_l1.number, 22104929);
    assert_eq!(s.unsafe_l2.number, 135049321);
    assert_eq!(s.unsafe_l2.sequence_number, 5);
    assert_eq!(s.safe_l2.l1origin.number, 22104883);
    assert_eq!(s.finalized_l2.number, 135047890);
    assert_eq!(s.local_safe_l2.unwrap().number, 135049060);
    assert_eq!(s.local_safe().number, 135049060);
    assert!(s.cross_unsafe_l2.is_some() && s.pending_safe_l2.is_some());
    assert!(s.current_l1_finalized.is_some());
}

#[test]
fn old_node_without_optional_refs_parses_and_local_safe_defaults_to_safe() {
    let s = SyncStatus::from_value(&fixture("status_old_node.json")).unwrap();
    assert!(
        s.local_safe_l2.is_none() && s.cross_unsafe_l2.is_none() && s.pending_safe_l2.is_none()
    );
    assert_eq!(s.local_safe(), s.safe_l2);
}

#[test]
fn unset_refs_are_recognised() {
    let s = SyncStatus::from_value(&fixture("status_unset.json")).unwrap();
    assert!(s.current_l1.is_unset());
    assert!(s.safe_l2.is_unset() && s.finalized_l2.is_unset() && s.unsafe_l2.is_unset());
    assert!(!s.head_l1.is_unset());
}

#[test]
fn serialization_round_trips_in_wire_format() {
    let s = SyncStatus::from_value(&fixture("status_full.json")).unwrap();
    let v = serde_json::to_value(&s).unwrap();
    assert!(v["safe_l2"]["l1origin"]["hash"].is_string(), "l1origin stays lowercase");
    assert!(v["safe_l2"]["parentHash"].is_string());
    assert!(v["safe_l2"]["sequenceNumber"].is_u64());
    assert!(v["safe_l2"]["number"].is_u64(), "numbers stay plain JSON integers");
    assert_eq!(SyncStatus::from_value(&v).unwrap(), s);
    let via_serde: SyncStatus = serde_json::from_value(v).unwrap();
    assert_eq!(via_serde, s);
}

fn mutate(path: &[&str], value: Value) -> Value {
    let mut v = fixture("status_full.json");
    let mut cur = &mut v;
    for p in &path[..path.len() - 1] {
        cur = &mut cur[*p];
    }
    cur[path[path.len() - 1]] = value;
    v
}

fn remove(key: &str) -> Value {
    let mut v = fixture("status_full.json");
    v.as_object_mut().unwrap().remove(key);
    v
}

#[test]
fn missing_required_refs_are_named() {
    for key in ["safe_l2", "finalized_l2", "unsafe_l2", "current_l1"] {
        let e = err_of(&remove(key));
        assert_eq!(e.field, key);
        assert!(e.to_string().contains("missing"), "{e}");
    }
}

#[test]
fn missing_optional_l1_refs_default_to_unset() {
    let s = SyncStatus::from_value(&remove("head_l1")).unwrap();
    assert!(s.head_l1.is_unset());
}

#[test]
fn bad_hex_is_named() {
    let e = err_of(&mutate(&["safe_l2", "hash"], json!(format!("0x{}", "zz".repeat(32)))));
    assert_eq!(e.field, "safe_l2.hash");
    assert!(e.reason.contains("invalid hex"), "{e}");
}

#[test]
fn wrong_hash_length_is_named() {
    let e = err_of(&mutate(&["finalized_l2", "l1origin", "hash"], json!("0xabcd")));
    assert_eq!(e.field, "finalized_l2.l1origin.hash");
    assert!(e.reason.contains("32 bytes"), "{e}");
}

#[test]
fn hash_without_prefix_is_named() {
    let e = err_of(&mutate(&["current_l1", "hash"], json!("ab".repeat(32))));
    assert_eq!(e.field, "current_l1.hash");
    assert!(e.reason.contains("0x"), "{e}");
}

#[test]
fn negative_number_is_named() {
    let e = err_of(&mutate(&["unsafe_l2", "number"], json!(-1)));
    assert_eq!(e.field, "unsafe_l2.number");
    assert!(e.reason.contains("negative"), "{e}");
}

#[test]
fn overflowing_number_is_named() {
    let v: Value = serde_json::from_str(
        &serde_json::to_string(&mutate(&["safe_l2", "number"], json!(0))).unwrap().replacen(
            "\"number\":0",
            "\"number\":18446744073709551616",
            1,
        ),
    )
    .unwrap();
    let e = err_of(&v);
    assert_eq!(e.field, "safe_l2.number");
    assert!(e.reason.contains("overflows"), "{e}");
}

#[test]
fn hex_string_number_is_rejected_for_sync_status() {
    let e = err_of(&mutate(&["safe_l2", "l1origin", "number"], json!("0x10")));
    assert_eq!(e.field, "safe_l2.l1origin.number");
}

#[test]
fn fractional_number_is_rejected() {
    let e = err_of(&mutate(&["finalized_l2", "timestamp"], json!(1.5)));
    assert_eq!(e.field, "finalized_l2.timestamp");
}

#[test]
fn missing_l1origin_is_named() {
    let mut v = fixture("status_full.json");
    v["safe_l2"].as_object_mut().unwrap().remove("l1origin");
    assert_eq!(err_of(&v).field, "safe_l2.l1origin");
}

#[test]
fn malformed_optional_ref_is_still_an_error() {
    let e = err_of(&mutate(&["local_safe_l2", "hash"], json!(7)));
    assert_eq!(e.field, "local_safe_l2.hash");
}

#[test]
fn non_object_result_is_an_error() {
    assert_eq!(err_of(&json!([1, 2])).field, "result");
    assert_eq!(SyncStatus::from_json("{not json").unwrap_err().field, "result");
}

#[test]
fn rpc_block_reads_only_the_needed_fields() {
    let block = json!({
        "hash": format!("0x{}", "11".repeat(32)),
        "number": "0x1a",
        "parentHash": format!("0x{}", "22".repeat(32)),
        "timestamp": "0x65",
        "transactions": [],
        "someNewForkField": "0x1"
    });
    let b = parse_rpc_block(&block).unwrap().unwrap();
    assert_eq!(b.number, 26);
    assert_eq!(b.timestamp, 0x65);
    assert_eq!(parse_rpc_block(&Value::Null).unwrap(), None);
    let mut bad = block;
    bad["number"] = json!(26);
    assert_eq!(parse_rpc_block(&bad).unwrap_err().field, "number");
    assert_eq!(to_quantity(26), "0x1a");
}
