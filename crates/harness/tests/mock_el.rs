//! The mock EL behaves like op-reth (as docs/architecture.md#forkchoice-answers describes) over real HTTP + JWT.

use std::time::Duration;

use alloy_primitives::B256;
use alloy_rpc_types_engine::{Claims, JwtSecret};
use lightcl_core::status::parse_rpc_block;
use lightcl_harness::mock_el::{FcuReply, L2Chain, MockEl, MockElConfig, l2_genesis};
use lightcl_harness::wait;
use lightcl_rpc::{Client, ClientConfig, RpcError};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: &str = "0x6a4f3e2d1c0b9a8776655443322110ffeeddccbbaa99887766554433221100aa";

fn secret() -> JwtSecret {
    JwtSecret::from_hex(SECRET).expect("valid secret")
}

async fn el(download_ms: u64) -> MockEl {
    let mut cfg = MockElConfig::new(secret());
    cfg.download_delay = Duration::from_millis(download_ms);
    MockEl::start(cfg).await.expect("mock EL starts")
}

fn client(el: &MockEl) -> Client {
    let url = el.url().parse().expect("url");
    Client::new(ClientConfig::new(url).with_jwt(secret()).with_timeout(Duration::from_secs(2)))
        .expect("client")
}

async fn fcu(c: &Client, head: B256, safe: B256, fin: B256) -> Result<Value, RpcError> {
    c.call(
        "engine_forkchoiceUpdatedV3",
        json!([{"headBlockHash": head, "safeBlockHash": safe, "finalizedBlockHash": fin}, null]),
    )
    .await
}

fn status(v: &Value) -> &str {
    v["payloadStatus"]["status"].as_str().unwrap_or("?")
}

async fn block(c: &Client, tag: &str) -> Option<lightcl_core::L1BlockRef> {
    let v = c.call("eth_getBlockByNumber", json!([tag, false])).await.expect("call");
    parse_rpc_block(&v).expect("block parses")
}

/// Sends one raw HTTP request with the given Authorization header; returns the status line.
async fn raw_status(el: &MockEl, auth: Option<String>) -> String {
    let mut s = tokio::net::TcpStream::connect(el.addr()).await.expect("connect");
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}"#;
    let auth = auth.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    let req = format!(
        "POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    out.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn jwt_is_required_and_checked() {
    let el = el(10).await;
    assert!(raw_status(&el, None).await.contains("401"));
    let now = Claims::with_current_timestamp();
    let good = secret().encode(&now).expect("encode");
    assert!(raw_status(&el, Some(format!("Bearer {good}"))).await.contains("200"));
    let stale = secret().encode(&Claims { iat: now.iat - 120, exp: None }).expect("encode");
    assert!(raw_status(&el, Some(format!("Bearer {stale}"))).await.contains("401"));
    let other = JwtSecret::random().encode(&now).expect("encode");
    assert!(raw_status(&el, Some(format!("Bearer {other}"))).await.contains("401"));
    assert_eq!(el.unauthorized_count(), 3);

    // Through the real client with a wrong secret: HTTP 401, nothing executed.
    let url = el.url().parse().expect("url");
    let bad = Client::new(ClientConfig::new(url).with_jwt(JwtSecret::random())).expect("client");
    let chain = L2Chain::new(3);
    let err = fcu(&bad, chain.at(3).hash, B256::ZERO, B256::ZERO).await.expect_err("401");
    assert_eq!(err.http_status(), Some(401), "{err}");
    assert!(el.fcus().is_empty());
}

#[tokio::test]
async fn chain_id_capabilities_and_block_json() {
    let el = el(10).await;
    let c = client(&el);
    assert_eq!(c.call("eth_chainId", json!([])).await.expect("chainId"), json!("0xa"));
    let caps = c.call("engine_exchangeCapabilities", json!([["engine_forkchoiceUpdatedV3"]])).await;
    assert!(
        caps.expect("caps")
            .as_array()
            .expect("array")
            .contains(&json!("engine_forkchoiceUpdatedV3"))
    );
    let g = block(&c, "latest").await.expect("genesis");
    assert_eq!((g.hash, g.number), (l2_genesis().hash, 0));
    assert_eq!(block(&c, "0x0").await.map(|b| b.hash), Some(g.hash));
    assert_eq!(block(&c, "safe").await.map(|b| b.hash), Some(g.hash));
    assert_eq!(block(&c, "finalized").await.map(|b| b.hash), Some(g.hash));
    assert!(block(&c, "0x5").await.is_none(), "unknown number is null");
    let v = c.call("eth_getBlockByNumber", json!(["latest", false])).await.expect("call");
    assert_eq!(v["number"], json!("0x0"));
    assert!(v["stateRoot"].as_str().is_some_and(|s| s.len() == 66));
    let err =
        c.call("eth_getBlockByNumber", json!(["nonsense", false])).await.expect_err("bad tag");
    assert!(matches!(err, RpcError::Rpc { .. }), "{err}");
}

#[tokio::test]
async fn unknown_head_syncs_then_downloads_and_labels_land_only_when_valid() {
    let el = el(80).await;
    let c = client(&el);
    let chain = L2Chain::new(20);
    el.set_network_chain(&chain);
    let (h, s, f) = (chain.at(20).hash, chain.at(15).hash, chain.at(10).hash);
    let r = fcu(&c, h, s, f).await.expect("fcu");
    assert_eq!(status(&r), "SYNCING");
    assert_eq!(el.safe().number, 0, "labels not applied while SYNCING");
    assert_eq!(block(&c, "latest").await.map(|b| b.number), Some(0));
    // Still downloading.
    assert_eq!(status(&fcu(&c, h, s, f).await.expect("fcu")), "SYNCING");
    assert!(el.wait_until(Duration::from_secs(3), |e| e.has_block(&h)).await);
    let r = fcu(&c, h, s, f).await.expect("fcu");
    assert_eq!(status(&r), "VALID");
    assert_eq!(r["payloadStatus"]["latestValidHash"], json!(h));
    assert_eq!((el.head().number, el.safe().number, el.finalized().number), (20, 15, 10));
    assert_eq!(block(&c, "0xf").await.map(|b| b.hash), Some(s));
    assert_eq!(block(&c, "safe").await.map(|b| b.hash), Some(s));
    assert!(el.check_invariants().is_ok());
}

#[tokio::test]
async fn hash_unknown_to_peers_stays_syncing() {
    let el = el(0).await;
    let c = client(&el);
    let stranger = L2Chain::new(5).fork(1, 99, 5);
    for _ in 0..3 {
        let r = fcu(&c, stranger.at(5).hash, B256::ZERO, B256::ZERO).await.expect("fcu");
        assert_eq!(status(&r), "SYNCING");
    }
}

#[tokio::test]
async fn labels_off_the_head_chain_give_38002_after_moving_the_head() {
    let el = el(0).await;
    let c = client(&el);
    let a = L2Chain::new(20);
    let b = a.fork(12, 1, 20);
    el.set_network_chain(&a);
    el.add_network_blocks(b.blocks().iter().copied());
    el.seed(&a, 14, 10, 5);
    // Head on fork b (downloaded at once), safe from fork a above the fork point.
    let r = fcu(&c, b.at(20).hash, a.at(13).hash, a.at(5).hash).await.expect("fcu");
    assert_eq!(status(&r), "SYNCING");
    let err = fcu(&c, b.at(20).hash, a.at(13).hash, a.at(5).hash).await.expect_err("-38002");
    assert_eq!(err.rpc_code(), Some(-38002), "{err}");
    assert_eq!(el.head().hash, b.at(20).hash, "op-reth moves the head before checking labels");
    assert_eq!(el.safe().hash, a.at(10).hash, "labels untouched");
    // Labels on the shared prefix are fine.
    let r = fcu(&c, b.at(20).hash, a.at(10).hash, a.at(5).hash).await.expect("fcu");
    assert_eq!(status(&r), "VALID");
    // Unknown safe hash.
    let err = fcu(&c, b.at(20).hash, B256::repeat_byte(7), a.at(5).hash).await.expect_err("-38002");
    assert_eq!(err.rpc_code(), Some(-38002), "{err}");
}

#[tokio::test]
async fn zero_head_is_rejected() {
    let el = el(0).await;
    let c = client(&el);
    let err = fcu(&c, B256::ZERO, B256::ZERO, B256::ZERO).await.expect_err("zero head");
    assert_eq!(err.rpc_code(), Some(-38002), "{err}");
    assert_eq!(el.head().number, 0);
}

#[tokio::test]
async fn forced_invalid_and_descendants_answer_invalid() {
    let el = el(0).await;
    let c = client(&el);
    let chain = L2Chain::new(10);
    el.set_network_chain(&chain);
    el.force_invalid(chain.at(7).hash);
    for n in [7, 9] {
        let r = fcu(&c, chain.at(n).hash, B256::ZERO, B256::ZERO).await.expect("fcu");
        assert_eq!(status(&r), "INVALID");
        assert_eq!(r["payloadStatus"]["latestValidHash"], json!(chain.at(6).hash));
    }
    assert_eq!(el.fcus()[0].reply, FcuReply::Invalid { latest_valid_hash: Some(chain.at(6).hash) });
}

#[tokio::test]
async fn reorg_to_side_chain_and_no_rewind_to_ancestor() {
    let el = el(0).await;
    let c = client(&el);
    let a = L2Chain::new(10);
    let b = a.fork(6, 1, 12);
    el.set_network_chain(&a);
    el.seed(&a, 10, 8, 4);
    // Canonical ancestor: VALID, head not rewound, labels applied.
    let r = fcu(&c, a.at(9).hash, a.at(9).hash, a.at(5).hash).await.expect("fcu");
    assert_eq!(status(&r), "VALID");
    assert_eq!(el.head().number, 10);
    assert_eq!(el.safe().number, 9);
    // Side chain: unknown first, then reorg.
    el.add_network_blocks(b.blocks().iter().copied());
    assert_eq!(
        status(&fcu(&c, b.at(12).hash, a.at(5).hash, a.at(5).hash).await.expect("fcu")),
        "SYNCING"
    );
    let r = fcu(&c, b.at(12).hash, a.at(5).hash, a.at(5).hash).await.expect("fcu");
    assert_eq!(status(&r), "VALID");
    assert_eq!(el.head().hash, b.at(12).hash);
    assert_eq!(block(&c, "0x7").await.map(|x| x.hash), Some(b.at(7).hash));
    // forced SYNCING knob.
    el.set_forced_syncing(true);
    assert_eq!(
        status(&fcu(&c, b.at(12).hash, a.at(5).hash, a.at(5).hash).await.expect("fcu")),
        "SYNCING"
    );
}

#[tokio::test]
async fn downtime_and_restart_on_the_same_port() {
    let el = el(0).await;
    let c = client(&el);
    let url = el.url();
    el.stop().await;
    let err = c.call("eth_chainId", json!([])).await.expect_err("down");
    assert!(matches!(err.kind(), "connect" | "transport"), "{err}");
    el.restart().await.expect("restart");
    assert_eq!(el.url(), url);
    assert_eq!(c.call("eth_chainId", json!([])).await.expect("up again"), json!("0xa"));
}

#[tokio::test]
async fn fcu_latency_knob_delays_the_answer() {
    let el = el(0).await;
    let c = client(&el);
    el.set_fcu_latency(Duration::from_millis(200));
    let t = std::time::Instant::now();
    fcu(&c, l2_genesis().hash, B256::ZERO, B256::ZERO).await.expect("fcu");
    assert!(t.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn invariant_checker_flags_bad_fcus() {
    let el = el(0).await;
    let c = client(&el);
    let chain = L2Chain::new(10);
    el.set_network_chain(&chain);
    el.seed(&chain, 10, 8, 6);
    // safe above head (the EL itself accepts it here: head 5 is an ancestor; the checker flags it).
    let _ = fcu(&c, chain.at(5).hash, chain.at(8).hash, chain.at(6).hash).await;
    // finalized going back.
    let _ = fcu(&c, chain.at(10).hash, chain.at(8).hash, chain.at(2).hash).await;
    let errs = el.check_invariants().expect_err("violations");
    assert!(errs.iter().any(|e| e.contains("safe 8 above head 5")), "{errs:?}");
    assert!(errs.iter().any(|e| e.contains("finalized went back to 2")), "{errs:?}");
}

#[test]
fn synthetic_chains_are_consistent() {
    let a = L2Chain::new(30);
    for w in a.blocks().windows(2) {
        assert_eq!(w[1].parent_hash, w[0].hash);
        assert_eq!(w[1].number, w[0].number + 1);
        assert_eq!(w[1].timestamp, w[0].timestamp + 2);
        assert!(w[1].l1origin.number >= w[0].l1origin.number);
    }
    let b = a.fork(10, 1, 35);
    assert_eq!(b.at(9), a.at(9));
    assert_ne!(b.at(10).hash, a.at(10).hash);
    assert_eq!(b.at(10).parent_hash, a.at(9).hash);
    assert_eq!(b.tip().number, 35);
    let mut c = a.clone();
    let new = c.extend(2);
    assert_eq!(new.len(), 2);
    assert_eq!(c.at(31).parent_hash, a.at(30).hash);
}

#[tokio::test]
async fn downloaded_sync_target_becomes_head_without_labels() {
    let el = el(30).await;
    let c = client(&el);
    let chain = L2Chain::new(12);
    el.set_network_chain(&chain);
    let (h, s, f) = (chain.at(12).hash, chain.at(10).hash, chain.at(8).hash);
    assert_eq!(status(&fcu(&c, h, s, f).await.expect("fcu")), "SYNCING");
    wait::until_async(Duration::from_secs(3), Duration::from_millis(10), || async {
        block(&c, "latest").await.is_some_and(|b| b.hash == h)
    })
    .await
    .expect("the EL reports the downloaded head as latest");
    assert_eq!(el.safe().number, 0, "labels wait for a VALID forkchoice");
    assert_eq!(status(&fcu(&c, h, s, f).await.expect("fcu")), "VALID");
    assert_eq!((el.safe().number, el.finalized().number), (10, 8));

    // Without the knob the head stays until the next forkchoice update.
    el.set_auto_canonical(false);
    let mut longer = chain.clone();
    longer.extend(3);
    el.set_network_chain(&longer);
    assert_eq!(status(&fcu(&c, longer.at(15).hash, s, f).await.expect("fcu")), "SYNCING");
    assert!(el.wait_until(Duration::from_secs(3), |e| e.has_block(&longer.at(15).hash)).await);
    assert_eq!(el.head().number, 12);
}
