//! The mock consensus source, exercised with the real lightcl JSON-RPC client.

use std::time::Duration;

use lightcl_core::{Severity, SyncStatus};
use lightcl_harness::mock_source::{Failure, Heads, MockSource, l1_block_hash, synthetic_status};
use lightcl_rpc::{Client, ClientConfig};
use serde_json::{Value, json};

fn heads(n: u64) -> Heads {
    Heads { l1: 100 + n, unsafe_l2: 600 + 6 * n, safe_l2: 590 + 6 * n, finalized_l2: 500 }
}

fn client(src: &MockSource, timeout: Duration) -> Client {
    Client::new(ClientConfig::new(src.url().parse().unwrap()).with_timeout(timeout)).unwrap()
}

#[tokio::test]
async fn serves_status_config_and_chain_id() {
    let src = MockSource::start(10, synthetic_status(heads(0))).await.unwrap();
    let c = client(&src, Duration::from_secs(2));

    let v = c.call("optimism_syncStatus", json!([])).await.unwrap();
    assert_eq!(SyncStatus::from_value(&v).unwrap(), synthetic_status(heads(0)));
    assert_eq!(
        v["safe_l2"]["l1origin"]["number"],
        json!(98),
        "wire format: l1origin, plain numbers"
    );
    assert!(v["unsafe_l2"]["parentHash"].is_string());

    src.set_status(synthetic_status(heads(1)));
    let v = c.call("optimism_syncStatus", json!([])).await.unwrap();
    assert_eq!(SyncStatus::from_value(&v).unwrap().unsafe_l2.number, 606);

    let cfg = c.call("optimism_rollupConfig", json!([])).await.unwrap();
    assert_eq!((cfg["l2_chain_id"].as_u64(), cfg["block_time"].as_u64()), (Some(10), Some(2)));
    assert_eq!(c.request::<_, String>("eth_chainId", lightcl_rpc::NO_PARAMS).await.unwrap(), "0xa");
    src.set_chain_id(11);
    assert_eq!(c.call("optimism_rollupConfig", json!([])).await.unwrap()["l2_chain_id"], json!(11));

    let err = c.call("eth_blockNumber", json!([])).await.unwrap_err();
    assert_eq!(err.rpc_code(), Some(-32601));

    let out = c
        .batch_calls(&[("eth_chainId", json!([])), ("optimism_syncStatus", json!([]))])
        .await
        .unwrap();
    assert_eq!(out[0].as_ref().unwrap(), &json!("0xb"));

    assert_eq!(src.requests("optimism_syncStatus"), 3);
    assert_eq!(src.requests("optimism_rollupConfig"), 2);
    assert_eq!(src.requests("eth_chainId"), 2);
    assert_eq!(src.total_requests(), 8);
}

#[tokio::test]
async fn raw_status_override() {
    let src = MockSource::start(10, synthetic_status(heads(0))).await.unwrap();
    let c = client(&src, Duration::from_secs(2));
    let mut raw = serde_json::to_value(synthetic_status(heads(0))).unwrap();
    raw["safe_l2"]["hash"] = json!("0x1234");
    src.set_status_json(raw.clone());
    let v = c.call("optimism_syncStatus", json!([])).await.unwrap();
    assert_eq!(v, raw);
    let err = SyncStatus::from_value(&v).unwrap_err();
    assert_eq!(err.field, "safe_l2.hash");
    src.set_status(synthetic_status(heads(1)));
    let v = c.call("optimism_syncStatus", json!([])).await.unwrap();
    assert_eq!(SyncStatus::from_value(&v).unwrap(), synthetic_status(heads(1)));
}

#[tokio::test]
async fn failure_modes() {
    let src = MockSource::start(10, synthetic_status(heads(0))).await.unwrap();
    // Generous timeout: under load the 8 MiB body takes a while; only the delay case uses a
    // short one.
    let c = client(&src, Duration::from_secs(10));
    let impatient = client(&src, Duration::from_millis(300));
    let call = || c.call("optimism_syncStatus", Value::Null);

    src.set_failure(Failure::RpcError { code: -32000, message: "not synced".into() });
    let e = call().await.unwrap_err();
    assert_eq!(e.kind(), "rpc");
    assert!(
        matches!(&e, lightcl_rpc::RpcError::Rpc { message, .. } if message == "not synced"),
        "{e}"
    );

    src.set_failure(Failure::MalformedJson);
    assert_eq!(call().await.unwrap_err().kind(), "json");

    src.set_failure(Failure::Oversized(8 * 1024 * 1024));
    assert_eq!(call().await.unwrap_err().kind(), "too_large");

    src.set_failure(Failure::Delay(Duration::from_secs(3)));
    let e = impatient.call("optimism_syncStatus", Value::Null).await.unwrap_err();
    assert_eq!((e.kind(), e.severity()), ("timeout", Severity::Temporary));

    src.set_failure(Failure::Http500);
    let e = call().await.unwrap_err();
    assert_eq!((e.kind(), e.severity()), ("http", Severity::Temporary));

    src.set_failure(Failure::None);
    assert!(call().await.is_ok());
    assert_eq!(src.requests("optimism_syncStatus"), 6);
}

#[tokio::test]
async fn delay_still_answers_with_a_patient_client() {
    let src = MockSource::start(10, synthetic_status(heads(0))).await.unwrap();
    src.set_failure(Failure::Delay(Duration::from_millis(100)));
    let c = client(&src, Duration::from_secs(3));
    let started = std::time::Instant::now();
    c.call("optimism_syncStatus", json!([])).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(100));
}

#[tokio::test]
async fn stop_and_restart_on_the_same_port() {
    let src = MockSource::start(10, synthetic_status(heads(0))).await.unwrap();
    let url = src.url();
    let c = client(&src, Duration::from_secs(2));
    c.call("optimism_syncStatus", json!([])).await.unwrap(); // keep-alive connection open

    src.stop().await;
    src.stop().await; // idempotent
    let e = c.call("optimism_syncStatus", json!([])).await.unwrap_err();
    assert_eq!(e.severity(), Severity::Temporary, "{e}");
    assert!(matches!(e.kind(), "connect" | "transport"), "{e}");

    src.set_status(synthetic_status(heads(2)));
    src.restart().await.unwrap();
    assert_eq!(src.url(), url);
    let v = c.call("optimism_syncStatus", json!([])).await.unwrap();
    assert_eq!(SyncStatus::from_value(&v).unwrap(), synthetic_status(heads(2)));
    assert!(src.wait_for_requests("optimism_syncStatus", 2, Duration::from_secs(1)).await);
}

#[test]
fn synthetic_status_is_consistent() {
    let s = synthetic_status(Heads { l1: 50, unsafe_l2: 400, safe_l2: 290, finalized_l2: 120 });
    assert!(s.finalized_l2.number <= s.safe_l2.number && s.safe_l2.number <= s.unsafe_l2.number);
    for r in [s.unsafe_l2, s.safe_l2, s.finalized_l2] {
        assert!(r.l1origin.number <= s.current_l1.number);
        assert_eq!(r.l1origin.hash, l1_block_hash(r.l1origin.number));
        assert!(!r.is_unset());
    }
    assert_eq!(s.unsafe_l2.l1origin.number, 50, "capped at the L1 head");
    assert_eq!(s.safe_l2.l1origin.number, 48);
    assert_eq!(s.safe_l2.sequence_number, 2);
    assert_eq!(s.local_safe(), s.safe_l2);
    assert!(s.finalized_l1.number <= s.safe_l1.number && s.safe_l1.number <= s.head_l1.number);
    assert_eq!(s.head_l1.parent_hash, l1_block_hash(49));
    // Round trip through the wire format.
    let v = serde_json::to_value(&s).unwrap();
    assert_eq!(SyncStatus::from_value(&v).unwrap(), s);
}
