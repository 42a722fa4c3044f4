//! Fuzzes what the EL sends back: arbitrary bytes and near-valid `engine_forkchoiceUpdatedV3`
//! answers decode through alloy's types and map onto an outcome, or fail with an error; never a
//! panic, and a decoded answer always maps onto the status it carried.

use alloy_rpc_types_engine::ForkchoiceUpdated;
use lightcl_core::engine::FcuOutcome;
use lightcl_engine_driver::el::fcu_outcome;
use proptest::prelude::*;
use serde_json::{Value, json};

fn status() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!("VALID")),
        Just(json!("INVALID")),
        Just(json!("SYNCING")),
        Just(json!("ACCEPTED")),
        Just(json!("INVALID_BLOCK_HASH")),
        "[A-Za-z_]{0,12}".prop_map(Value::String),
        any::<i64>().prop_map(|n| json!(n)),
        Just(Value::Null),
    ]
}

fn hash_like() -> impl Strategy<Value = Value> {
    prop_oneof![
        "0x[0-9a-f]{64}".prop_map(Value::String),
        "0x[0-9a-fA-Fg]{0,70}".prop_map(Value::String),
        Just(Value::Null),
        any::<u64>().prop_map(|n| json!(n)),
    ]
}

fn answer() -> impl Strategy<Value = Value> {
    (status(), hash_like(), proptest::option::of(".{0,40}"), proptest::option::of(hash_like()))
        .prop_map(|(status, lvh, err, payload_id)| {
            let mut ps = json!({"status": status, "latestValidHash": lvh});
            if let Some(e) = err {
                ps["validationError"] = json!(e);
            }
            let mut a = json!({"payloadStatus": ps});
            if let Some(p) = payload_id {
                a["payloadId"] = p;
            }
            a
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        if let Ok(a) = serde_json::from_slice::<ForkchoiceUpdated>(&bytes) {
            let _ = fcu_outcome(&a);
        }
    }

    #[test]
    fn near_valid_answers_map_onto_their_status(v in answer()) {
        let status = v["payloadStatus"]["status"].as_str().map(str::to_owned);
        match serde_json::from_value::<ForkchoiceUpdated>(v.clone()) {
            Ok(a) => {
                let out = fcu_outcome(&a);
                let want = match status.as_deref() {
                    Some("VALID") => matches!(out, FcuOutcome::Valid),
                    Some("SYNCING" | "ACCEPTED") => matches!(out, FcuOutcome::Syncing),
                    Some("INVALID") => matches!(out, FcuOutcome::Invalid { .. }),
                    _ => false,
                };
                prop_assert!(want, "{} decoded as {:?}", v, out);
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }
}

/// The statuses the Engine API defines decode; anything else is refused by the decoder (the
/// driver then treats the answer as an error and retries).
#[test]
fn only_defined_statuses_decode() {
    for s in ["VALID", "SYNCING", "ACCEPTED"] {
        let v = json!({"payloadStatus": {"status": s, "latestValidHash": null}, "payloadId": null});
        assert!(serde_json::from_value::<ForkchoiceUpdated>(v).is_ok(), "{s}");
    }
    let v = json!({"payloadStatus": {"status": "MAYBE", "latestValidHash": null}});
    assert!(serde_json::from_value::<ForkchoiceUpdated>(v).is_err());
}
