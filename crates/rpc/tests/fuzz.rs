//! Property tests: the answer decoder never panics on arbitrary bytes or JSON, and the whole
//! client, against a local server returning arbitrary bodies, returns a value or a classified
//! error (never panics), refusing every body above its limit as `too_large`.

#[allow(dead_code)]
mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use alloy_json_rpc::{Id, ResponsePacket, ResponsePayload};
use http::StatusCode;
use lightcl_rpc::transport::decode_response;
use lightcl_rpc::{Client, ClientConfig, Endpoint, NO_PARAMS, RpcError};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Map, Number, Value, json};
use support::{Seen, reply, reply_chunked, serve};

/// Every label `RpcError::kind` documents.
const KINDS: &[&str] = &[
    "config",
    "timeout",
    "connect",
    "tls",
    "transport",
    "http",
    "too_large",
    "bad_response",
    "jwt",
    "rpc",
    "json",
];

/// Arbitrary JSON values (bounded depth and size).
fn json_value() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
        ".{0,12}".prop_map(Value::String),
        // Strings that look like JSON-RPC keys and values.
        prop::sample::select(vec!["jsonrpc", "2.0", "id", "result", "error", "code", "message"])
            .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
    .boxed()
}

/// JSON-RPC-shaped answers: each member present or not, with plausible or arbitrary values.
fn rpc_like() -> impl Strategy<Value = Value> {
    let id = prop_oneof![
        any::<u64>().prop_map(Value::from),
        (0u64..4).prop_map(Value::from),
        Just(Value::Null),
        ".{0,6}".prop_map(Value::String),
        json_value(),
    ];
    let error = prop_oneof![
        (any::<i64>(), ".{0,16}", prop::option::of(json_value())).prop_map(|(code, msg, data)| {
            let mut e = json!({"code": code, "message": msg});
            if let Some(d) = data {
                e["data"] = d;
            }
            e
        }),
        json_value(),
    ];
    let one = (
        prop::option::of(prop_oneof![Just(json!("2.0")), json_value()]),
        prop::option::of(id),
        prop::option::of(json_value()),
        prop::option::of(error),
    )
        .prop_map(|(jsonrpc, id, result, error)| {
            let mut m = Map::new();
            for (k, v) in [("jsonrpc", jsonrpc), ("id", id), ("result", result), ("error", error)] {
                if let Some(v) = v {
                    m.insert(k.to_owned(), v);
                }
            }
            Value::Object(m)
        })
        .boxed();
    prop_oneof![one.clone(), prop::collection::vec(one, 0..5).prop_map(Value::Array)]
}

proptest! {
    #![proptest_config(Config { cases: 512, failure_persistence: None, ..Config::default() })]

    #[test]
    fn decoder_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_response(&bytes);
    }

    #[test]
    fn decoder_never_panics_on_json(v in prop_oneof![json_value(), rpc_like()]) {
        let text = v.to_string();
        let _ = decode_response(text.as_bytes());
        // Truncated JSON as well.
        for cut in [text.len() / 2, text.len().saturating_sub(1)] {
            if let Some(prefix) = text.get(..cut) {
                let _ = decode_response(prefix.as_bytes());
            }
        }
    }

    #[test]
    fn decoder_reads_well_formed_answers(id in any::<u64>(), result in json_value()) {
        let text = json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string();
        let packet = decode_response(text.as_bytes()).unwrap();
        let ResponsePacket::Single(r) = packet else { panic!("a single answer: {text}") };
        prop_assert_eq!(&r.id, &Id::Number(id));
        let ResponsePayload::Success(raw) = &r.payload else { panic!("success: {text}") };
        // The result is kept as the server wrote it.
        prop_assert_eq!(raw.get(), result.to_string());
    }
}

/// What the server answers in one end-to-end case.
#[derive(Clone, Debug)]
enum Body {
    /// These bytes.
    Raw(Vec<u8>),
    /// This JSON text.
    Json(Value),
    /// A well-formed success answer carrying the request's id(s) and this result.
    Answer(Value),
    /// A well-formed error answer carrying the request's id(s).
    Error(i64, String),
}

#[derive(Clone, Debug)]
struct Case {
    body: Body,
    /// Sent chunked (no `content-length`) rather than with a declared length.
    chunked: bool,
    /// Call as a batch of two rather than a single call.
    batch: bool,
}

fn case() -> impl Strategy<Value = Case> {
    let body = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256).prop_map(Body::Raw),
        json_value().prop_map(Body::Json),
        rpc_like().prop_map(Body::Json),
        json_value().prop_map(Body::Answer),
        (any::<i64>(), ".{0,16}").prop_map(|(c, m)| Body::Error(c, m)),
    ];
    (body, any::<bool>(), any::<bool>()).prop_map(|(body, chunked, batch)| Case {
        body,
        chunked,
        batch,
    })
}

/// The body the server sends for `body` in answer to `req`.
fn render(body: &Body, req: &Value) -> Vec<u8> {
    let answer = |payload: &dyn Fn(&Value) -> Value| match req {
        Value::Array(items) => Value::Array(items.iter().map(|r| payload(&r["id"])).collect()),
        one => payload(&one["id"]),
    };
    match body {
        Body::Raw(b) => b.clone(),
        Body::Json(v) => v.to_string().into_bytes(),
        Body::Answer(v) => {
            answer(&|id| json!({"jsonrpc": "2.0", "id": id, "result": v})).to_string().into_bytes()
        }
        Body::Error(code, msg) => answer(
            &|id| json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": msg}}),
        )
        .to_string()
        .into_bytes(),
    }
}

/// A server answering each request with the body of the current case, and a client of it.
struct Rig {
    rt: tokio::runtime::Runtime,
    current: Arc<Mutex<Option<Case>>>,
    addr: std::net::SocketAddr,
}

impl Rig {
    fn new() -> Self {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let current: Arc<Mutex<Option<Case>>> = Arc::default();
        let state = current.clone();
        let srv = rt.block_on(serve(move |req: &Seen| {
            let case = state.lock().unwrap().clone().expect("a current case");
            let bytes = render(&case.body, &req.body);
            if case.chunked { reply_chunked(bytes, 61) } else { reply(StatusCode::OK, bytes) }
        }));
        Self { rt, current, addr: srv.addr }
    }

    fn client(&self, max_response_bytes: usize) -> Client {
        let endpoint = Endpoint::parse("--l1.rpc", &format!("http://{}", self.addr)).unwrap();
        let config = ClientConfig::new(endpoint)
            .with_timeout(Duration::from_secs(10))
            .with_max_response_bytes(max_response_bytes);
        Client::new(config).unwrap()
    }

    /// Runs one call (or a batch of two) against `case`: the per-call results, or the error of
    /// the whole batch.
    fn run(&self, client: &Client, case: &Case) -> Result<Vec<Result<Value, RpcError>>, RpcError> {
        *self.current.lock().unwrap() = Some(case.clone());
        self.rt.block_on(async {
            if case.batch {
                client
                    .batch::<_, Value>("eth_getBlockByNumber", &[("0x1", false), ("0x2", false)])
                    .await
            } else {
                Ok(vec![client.request::<_, Value>("eth_chainId", NO_PARAMS).await])
            }
        })
    }
}

fn check_kind(err: &RpcError, allowed: &[&str]) -> Result<(), TestCaseError> {
    // Formatting must not panic either.
    let text = format!("{err} {err:?}");
    prop_assert!(KINDS.contains(&err.kind()), "undocumented kind {}: {}", err.kind(), text);
    prop_assert!(allowed.contains(&err.kind()), "unexpected kind {}: {}", err.kind(), text);
    let _ = err.severity();
    Ok(())
}

#[test]
fn client_classifies_arbitrary_answers() {
    let rig = Rig::new();
    let client = rig.client(lightcl_rpc::DEFAULT_MAX_RESPONSE_BYTES);
    let mut runner =
        TestRunner::new(Config { cases: 64, failure_persistence: None, ..Config::default() });
    runner
        .run(&case(), |case| {
            // A complete 200 answer can only be wrong in its content.
            let content = ["json", "rpc", "bad_response"];
            match rig.run(&client, &case) {
                Err(e) => {
                    let well_formed = matches!(case.body, Body::Answer(_) | Body::Error(..));
                    prop_assert!(!well_formed, "a well-formed batch answer failed: {e}");
                    check_kind(&e, &content)?;
                }
                Ok(results) => {
                    prop_assert_eq!(results.len(), if case.batch { 2 } else { 1 });
                    for r in &results {
                        match (&case.body, r) {
                            (Body::Answer(v), Ok(got)) => {
                                // As serde_json reads the text (floats may not round-trip).
                                let sent: Value = serde_json::from_str(&v.to_string()).unwrap();
                                prop_assert_eq!(got, &sent);
                            }
                            (Body::Answer(_), Err(e)) => {
                                prop_assert!(false, "a well-formed answer failed: {e}")
                            }
                            (Body::Error(code, _), Err(e)) => {
                                prop_assert_eq!(e.rpc_code(), Some(*code), "{}", e)
                            }
                            (Body::Error(..), Ok(v)) => {
                                prop_assert!(false, "an error answer succeeded: {v}")
                            }
                            (_, Err(e)) => check_kind(e, &content)?,
                            (_, Ok(_)) => {}
                        }
                    }
                }
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn bodies_above_the_limit_are_too_large() {
    let rig = Rig::new();
    let strategy = (1usize..2048, 1usize..4096, any::<bool>(), any::<bool>(), any::<u8>());
    let mut runner =
        TestRunner::new(Config { cases: 64, failure_persistence: None, ..Config::default() });
    runner
        .run(&strategy, |(limit, extra, chunked, batch, fill)| {
            let client = rig.client(limit);
            let case = Case { body: Body::Raw(vec![fill; limit + extra]), chunked, batch };
            let err = match rig.run(&client, &case) {
                Err(e) => e,
                Ok(mut single) if !batch => single.remove(0).expect_err("above the limit"),
                Ok(r) => panic!("a batch above the limit succeeded: {r:?}"),
            };
            check_kind(&err, &["too_large"])?;
            prop_assert!(
                err.to_string().contains(&format!("larger than {limit} bytes")),
                "{}",
                err
            );

            // The same body within a limit that fits it is read (and then judged on content).
            let client = rig.client(limit + extra);
            match rig.run(&client, &case) {
                Err(e) => check_kind(&e, &["json", "rpc", "bad_response"])?,
                Ok(results) => {
                    for e in results.iter().filter_map(|r| r.as_ref().err()) {
                        check_kind(e, &["json", "rpc", "bad_response"])?;
                    }
                }
            }
            Ok(())
        })
        .unwrap();
}
