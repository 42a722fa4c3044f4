//! The real `lightctl` binary over real gRPC against in-test control services served by
//! `lightcl_runtime::serve_grpc` (health, reflection, bearer auth, TLS as in production).

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use lightcl_harness::nats::{NatsOptions, NatsServer};
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_json_reports_every_service() {
    let p = fake_poller(poller_status(), Opts::default()).await;
    let v = fake_validator(validator_status(), Opts::default()).await;
    let d1 = fake_driver(driver_status("reth-0", 120), Opts::default()).await;
    let d2 = fake_driver(driver_status("reth-1", 110), Opts::default()).await;
    let r = lightctl(&[
        "status",
        "-o",
        "json",
        "--poller",
        &p.url(),
        "--validator",
        &v.url(),
        "--driver",
        &d1.url(),
        "--driver",
        &d2.url(),
    ])
    .await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.is_empty(), "{r:?}");
    let j = r.json();
    assert_eq!(j["exit_code"], 0);
    assert_eq!(j["fleet"], serde_json::Value::Null);

    let poller = &j["pollers"][0];
    assert_eq!(poller["endpoint"], p.url());
    assert_eq!(poller["error"], serde_json::Value::Null);
    let ps = &poller["status"];
    assert_eq!(ps["source_id"], "src-a");
    assert_eq!(ps["last_status"]["unsafe_l2"]["number"], 120);
    assert_eq!(ps["last_status"]["unsafe_l2"]["hash"], hex_hash(0x12));
    assert_eq!(ps["last_status"]["safe_l2"]["number"], 100);
    assert_eq!(ps["last_status"]["finalized_l2"]["number"], 80);
    assert_eq!(ps["last_status"]["current_l1"]["number"], 50);
    assert_eq!((ps["polls_ok"].as_u64(), ps["polls_failed"].as_u64()), (Some(42), Some(3)));

    let vs = &j["validators"][0]["status"];
    assert_eq!(vs["last_target"]["revision"], 7);
    assert_eq!(vs["last_target"]["safe_l2"]["number"], 100);
    let rej = &vs["recent_rejections"][0];
    assert_eq!(rej["reason"], "l1_mismatch");
    assert_eq!(rej["ref_name"], "safe_l2.l1origin");
    assert_eq!(rej["number"], 25);
    assert_eq!(rej["expected_hash"], hex_hash(0xaa));
    assert_eq!(rej["actual_hash"], hex_hash(0xbb));
    let src = &vs["sources"];
    assert_eq!(
        (src[0]["source_id"].as_str(), src[0]["chosen"].as_bool()),
        (Some("src-a"), Some(true))
    );
    assert_eq!(
        (src[1]["lag_blocks"].as_u64(), src[1]["rejections_in_row"].as_u64()),
        (Some(3), Some(2))
    );

    let drivers = j["drivers"].as_array().expect("drivers");
    assert_eq!(drivers.len(), 2);
    assert_eq!(drivers[0]["status"]["state"]["node_id"], "reth-0");
    assert_eq!(drivers[1]["status"]["state"]["node_id"], "reth-1");
    assert_eq!(drivers[1]["status"]["state"]["head"]["number"], 110);
    assert_eq!(drivers[1]["status"]["lag_blocks"], 10);
    assert_eq!(drivers[1]["status"]["state"]["phase"], "following");
    assert_eq!(drivers[1]["status"]["state"]["last_answer"], "valid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_table_shows_the_pipeline() {
    let p = fake_poller(poller_status(), Opts::default()).await;
    let v = fake_validator(validator_status(), Opts::default()).await;
    let d = fake_driver(driver_status("reth-0", 118), Opts::default()).await;
    let r =
        lightctl(&["status", "--poller", &p.url(), "--validator", &v.url(), "--driver", &d.url()])
            .await;
    assert_eq!(r.code, 0, "{r:?}");
    let t = &r.stdout;
    for header in ["POLLER", "VALIDATOR", "DRIVER", "recent rejections"] {
        assert!(t.contains(header), "{header} missing:\n{t}");
    }
    let poller_row = t.lines().find(|l| l.contains(&p.url())).expect("poller row");
    assert!(poller_row.contains("120 121212") && poller_row.contains("42/3"), "{poller_row}");
    assert!(t.contains("src-b/9: l1_mismatch [safe_l2.l1origin #25]"), "{t}");
    assert!(t.contains("src-a (chosen): head #120 lag 0"), "{t}");
    assert!(t.contains("src-b: head #117 lag 3") && t.contains("rejected-in-row 2"), "{t}");
    let driver_row = t.lines().find(|l| l.contains(&d.url())).expect("driver row");
    for want in ["reth-0", "running", "following", "118 121212", "valid"] {
        assert!(driver_row.contains(want), "{want} missing: {driver_row}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_service_is_reported_and_exits_1() {
    let d = fake_driver(driver_status("reth-0", 120), Opts::default()).await;
    let dead = dead_addr();
    let r = lightctl(&["status", "-o", "json", "--poller", &dead, "--driver", &d.url()]).await;
    assert_eq!(r.code, 1, "{r:?}");
    let j = r.json();
    assert_eq!(j["exit_code"], 1);
    assert_eq!(j["pollers"][0]["error"]["kind"], "unreachable");
    assert_eq!(j["pollers"][0]["status"], serde_json::Value::Null);
    assert_eq!(j["drivers"][0]["status"]["state"]["head"]["number"], 120, "others still shown");
    let line = r.stderr.lines().next().unwrap_or_default();
    assert!(line.starts_with(&format!("error: poller {dead}: unreachable")), "{}", r.stderr);

    // The text table says DOWN for it.
    let r = lightctl(&["status", "--poller", &dead, "--driver", &d.url()]).await;
    assert_eq!(r.code, 1);
    let row = r.stdout.lines().find(|l| l.contains(&dead)).expect("row");
    assert!(row.contains("DOWN"), "{row}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wrong_kind_of_service_is_named() {
    let d = fake_driver(driver_status("reth-0", 120), Opts::default()).await;
    let r = lightctl(&["status", "-o", "json", "--poller", &d.url()]).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(r.json()["pollers"][0]["error"]["kind"], "wrong_service");
    assert!(r.stderr.contains("does not serve lightcl.v1.PollerControl"), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_resume_need_the_token_and_a_bad_one_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = write_file(dir.path(), "good", &format!("{TOKEN}\n"));
    let bad = write_file(dir.path(), "bad", "not-the-token");
    let (good, bad) = (good.to_str().expect("path"), bad.to_str().expect("path"));
    let p = fake_poller(poller_status(), Opts::token()).await;
    let v = fake_validator(validator_status(), Opts::token()).await;
    let d = fake_driver(driver_status("reth-0", 120), Opts::token()).await;

    for (kind, url) in [("poller", p.url()), ("validator", v.url()), ("driver", d.url())] {
        let r = lightctl(&["pause", kind, &url, "--token-file", bad]).await;
        assert_eq!(r.code, 3, "{kind}: {r:?}");
        assert!(r.stderr.contains("unauthenticated: invalid bearer token"), "{}", r.stderr);
        assert!(!r.stderr.contains("not-the-token"), "the token is never printed");

        let r = lightctl(&["pause", kind, &url]).await;
        assert_eq!(r.code, 3, "{kind}: {r:?}");
        assert!(r.stderr.contains("no --token-file was given"), "{}", r.stderr);
    }
    assert!(!p.paused() && !v.paused() && !d.paused(), "no side effect without the token");

    for (kind, url) in [("poller", p.url()), ("validator", v.url()), ("driver", d.url())] {
        let r = lightctl(&["pause", kind, &url, "--token-file", good, "--reason", "test"]).await;
        assert_eq!(r.code, 0, "{kind}: {r:?}");
        assert_eq!(r.stdout.trim(), format!("{kind} {url}: paused"));
    }
    assert!(p.paused() && v.paused() && d.paused());

    // A bad token cannot resume either.
    let r = lightctl(&["resume", "driver", &d.url(), "--token-file", bad]).await;
    assert_eq!(r.code, 3);
    assert!(d.paused());

    let r = lightctl(&["-o", "json", "resume", "poller", &p.url(), "--token-file", good]).await;
    assert_eq!(r.code, 0, "{r:?}");
    let j = r.json();
    assert_eq!((j["kind"].as_str(), j["action"].as_str()), (Some("poller"), Some("resume")));
    assert_eq!(j["paused"], false);
    assert!(!p.paused() && v.paused());

    // Status shows who is paused.
    let r = lightctl(&["status", "-o", "json", "--validator", &v.url()]).await;
    assert_eq!(r.json()["validators"][0]["status"]["paused"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kind_is_found_through_reflection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = write_file(dir.path(), "good", TOKEN);
    let v = fake_validator(validator_status(), Opts::token()).await;
    let r =
        lightctl(&["-o", "json", "pause", &v.url(), "--token-file", good.to_str().expect("path")])
            .await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.json()["kind"], "validator");
    assert!(v.paused());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resync_reaches_the_driver_only_with_the_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = write_file(dir.path(), "good", TOKEN);
    let d = fake_driver(driver_status("reth-0", 120), Opts::token()).await;
    let r = lightctl(&["resync", &d.url()]).await;
    assert_eq!(r.code, 3, "{r:?}");
    assert_eq!(d.resyncs.load(Ordering::SeqCst), 0);
    let r = lightctl(&["resync", &d.url(), "--token-file", good.to_str().expect("path")]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(d.resyncs.load(Ordering::SeqCst), 1);
    assert!(r.stdout.contains("resync done") && r.stdout.contains("reth-0"), "{}", r.stdout);

    // Resync against a poller is the wrong service.
    let p = fake_poller(poller_status(), Opts::token()).await;
    let r = lightctl(&["resync", &p.url(), "--token-file", good.to_str().expect("path")]).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("does not serve lightcl.v1.EngineDriverControl"), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_can_require_the_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = write_file(dir.path(), "good", TOKEN);
    let opts = Opts { token: Some(TOKEN.into()), require_for_reads: true, tls: None };
    let d = fake_driver(driver_status("reth-0", 120), opts).await;
    let r = lightctl(&["status", "-o", "json", "--driver", &d.url()]).await;
    assert_eq!(r.code, 3, "{r:?}");
    assert_eq!(r.json()["drivers"][0]["error"]["kind"], "unauthenticated");
    let r = lightctl(&[
        "status",
        "-o",
        "json",
        "--driver",
        &d.url(),
        "--token-file",
        good.to_str().expect("p"),
    ])
    .await;
    assert_eq!(r.code, 0, "{r:?}");
    // A wrong token is refused like none.
    let bad = write_file(dir.path(), "bad", "not-the-token");
    let r = lightctl(&[
        "status",
        "-o",
        "json",
        "--driver",
        &d.url(),
        "--token-file",
        bad.to_str().expect("p"),
    ])
    .await;
    assert_eq!(r.code, 3, "{r:?}");
    // `watch` sends the token on WatchStatus too.
    let r = lightctl(&[
        "watch",
        "-o",
        "json",
        "--updates",
        "1",
        "--driver",
        &d.url(),
        "--token-file",
        good.to_str().expect("p"),
    ])
    .await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.json()["drivers"][0]["status"]["state"]["head"]["number"], 120, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_exit_64_with_one_line_naming_the_flag() {
    let dir = tempfile::tempdir().expect("tempdir");
    let empty = write_file(dir.path(), "empty", "\n");
    let bad_cfg = write_file(dir.path(), "ctl.toml", "drivers = [\"http://x:1\"]\n");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["status".into()], "nothing to show"),
        (
            vec![
                "status".into(),
                "--driver".into(),
                "h:1".into(),
                "--timeout".into(),
                "soon".into(),
            ],
            "--timeout",
        ),
        (
            vec![
                "status".into(),
                "--driver".into(),
                "h:1".into(),
                "--token-file".into(),
                "/nonexistent/t".into(),
            ],
            "--token-file",
        ),
        (
            vec![
                "status".into(),
                "--driver".into(),
                "h:1".into(),
                "--token-file".into(),
                empty.display().to_string(),
            ],
            "--token-file",
        ),
        (vec!["status".into(), "--config".into(), bad_cfg.display().to_string()], "--config"),
        (vec!["pause".into(), "nats".into(), "h:1".into()], "unknown kind"),
        (vec!["pause".into(), "nobody".into()], "neither an address"),
        (vec!["bogus".into()], "error:"),
        (vec!["status".into(), "--bogus".into()], "--bogus"),
        (vec!["-o".into(), "xml".into(), "status".into()], "--output"),
    ];
    for (args, want) in cases {
        let r = lightctl(&args).await;
        assert_eq!(r.code, 64, "{args:?}: {r:?}");
        assert_eq!(r.stderr.trim().lines().count(), 1, "one line for {args:?}: {}", r.stderr);
        assert!(r.stderr.starts_with("error: "), "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains(want), "{args:?}: want {want:?} in {}", r.stderr);
    }
    let r = lightctl(&["--help"]).await;
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("Exit codes"), "{}", r.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_lists_services_and_names_are_targets() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_file(dir.path(), "token", TOKEN);
    let p = fake_poller(poller_status(), Opts::token()).await;
    let d = fake_driver(driver_status("reth-0", 120), Opts::token()).await;
    let cfg = write_file(
        dir.path(),
        "lightctl.toml",
        &format!(
            "token_file = \"token\"\ntimeout = \"2s\"\npoller = [\"{}\"]\n\n[[driver]]\nname = \"op-reth-0\"\nurl = \"{}\"\n",
            p.url(),
            d.url()
        ),
    );
    let cfg = cfg.to_str().expect("path");
    let r = lightctl(&["status", "-o", "json", "--config", cfg]).await;
    assert_eq!(r.code, 0, "{r:?}");
    let j = r.json();
    assert_eq!(j["drivers"][0]["name"], "op-reth-0");
    assert_eq!(j["pollers"][0]["status"]["source_id"], "src-a");

    let r = lightctl(&["pause", "op-reth-0", "--config", cfg]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(d.paused() && !p.paused());

    // The same in JSON.
    let json_cfg = write_file(
        dir.path(),
        "lightctl.json",
        &format!(
            r#"{{"token_file":"token","driver":[{{"name":"op-reth-0","url":"{}"}}]}}"#,
            d.url()
        ),
    );
    let r = lightctl(&["resume", "op-reth-0", "--config", json_cfg.to_str().expect("p")]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!d.paused());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_every_change() {
    let d = fake_driver(driver_status("reth-0", 100), Opts::default()).await;
    let p = fake_poller(poller_status(), Opts::default()).await;
    let mut child = lightctl_cmd()
        .args(["watch", "-o", "json", "--updates", "3", "--redraw-interval", "50ms"])
        .args(["--driver", &d.url(), "--poller", &p.url()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut next = async || -> serde_json::Value {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("an update in time")
            .expect("read")
            .expect("a line");
        serde_json::from_str(&line).expect("one JSON document per line")
    };
    let first = next().await;
    assert_eq!(first["drivers"][0]["status"]["state"]["head"]["number"], 100);
    assert_eq!(first["pollers"][0]["status"]["source_id"], "src-a", "first draw has everyone");

    d.tx.send_replace(driver_status("reth-0", 110));
    let second = next().await;
    assert_eq!(second["drivers"][0]["status"]["state"]["head"]["number"], 110);

    // A service going away shows up as an error, and the watch goes on.
    d.cancel.cancel();
    let third = next().await;
    assert_eq!(third["drivers"][0]["error"]["kind"], "unreachable", "{third}");
    assert_eq!(third["exit_code"], 1);
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits after --updates")
        .expect("wait");
    assert_eq!(status.code(), Some(1), "exit code of the last report");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_ca_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = self_signed(dir.path());
    let identity = tonic::transport::Identity::from_pem(
        std::fs::read(&cert).expect("cert"),
        std::fs::read(&key).expect("key"),
    );
    let opts = Opts {
        tls: Some(tonic::transport::ServerTlsConfig::new().identity(identity)),
        ..Opts::default()
    };
    let d = fake_driver(driver_status("reth-0", 120), opts).await;
    let addr = format!("localhost:{}", d.addr.port());
    let ca = cert.to_str().expect("path");
    let r = lightctl(&["status", "-o", "json", "--driver", &addr, "--tls.ca", ca]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.json()["drivers"][0]["status"]["state"]["node_id"], "reth-0");
    // Plain text against a TLS port fails clearly and is not a success.
    let r = lightctl(&[
        "status",
        "-o",
        "json",
        "--driver",
        &format!("http://{addr}"),
        "--timeout",
        "1s",
    ])
    .await;
    assert_eq!(r.code, 1, "{r:?}");
    // A CA file that is not a certificate is a usage error.
    let r = lightctl(&["status", "--driver", &addr, "--tls.ca", key.to_str().expect("p")]).await;
    assert_eq!(r.code, 64, "{r:?}");
    assert!(r.stderr.contains("--tls.ca"), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_is_read_from_the_engine_kv_bucket() {
    use prost::Message;
    let nats = NatsServer::start().await.expect("nats-server");
    // No bucket yet: an empty fleet, not an error.
    let r = lightctl(&["status", "-o", "json", "--nats.url", &nats.url()]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.json()["fleet"]["nodes"].as_array().map(Vec::len), Some(0));

    let client = async_nats::connect(nats.url()).await.expect("nats");
    let js = async_nats::jetstream::new(client);
    let kv = js
        .create_key_value(async_nats::jetstream::kv::Config {
            bucket: "lightcl-engine".into(),
            ..Default::default()
        })
        .await
        .expect("bucket");
    for (key, node, head) in
        [("10.reth-1", "reth-1", 118), ("10.reth-0", "reth-0", 120), ("11.other", "other", 5)]
    {
        let state = driver_status(node, head).state.expect("state");
        kv.put(key, state.encode_to_vec().into()).await.expect("put");
    }
    kv.put("10.garbage", vec![0xff, 0xff, 0xff].into()).await.expect("put");

    let r =
        lightctl(&["status", "-o", "json", "--nats.url", &nats.url(), "--chain-id", "10"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    let j = r.json();
    let nodes = j["fleet"]["nodes"].as_array().expect("nodes");
    let keys: Vec<&str> = nodes.iter().filter_map(|n| n["key"].as_str()).collect();
    assert_eq!(keys, ["10.garbage", "10.reth-0", "10.reth-1"], "chain filter, sorted");
    assert!(nodes[0]["error"].as_str().is_some_and(|e| e.contains("undecodable")));
    assert_eq!(nodes[1]["state"]["head"]["number"], 120);
    assert_eq!(nodes[2]["state"]["head"]["number"], 118);
    assert_eq!(j["fleet"]["bucket"], "lightcl-engine");

    let r = lightctl(&["status", "--nats.url", &nats.url()]).await;
    assert!(r.stdout.contains("11.other") && r.stdout.contains("10.reth-0"), "{}", r.stdout);

    // NATS down: the fleet section says so and the exit code is 1.
    let url = nats.url();
    drop(js);
    let mut nats = nats;
    nats.stop();
    let r = lightctl(&["status", "-o", "json", "--nats.url", &url, "--timeout", "1s"]).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(r.json()["fleet"]["error"]["kind"], "nats");
    assert!(r.stderr.contains("fleet (KV lightcl-engine"), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_follows_the_fleet() {
    use prost::Message;
    let nats = NatsServer::start().await.expect("nats-server");
    let client = async_nats::connect(nats.url()).await.expect("nats");
    let js = async_nats::jetstream::new(client);
    let kv = js
        .create_key_value(async_nats::jetstream::kv::Config {
            bucket: "lightcl-engine".into(),
            ..Default::default()
        })
        .await
        .expect("bucket");
    let put = |node: &'static str, head: u64| {
        let kv = kv.clone();
        async move {
            let state = driver_status(node, head).state.expect("state");
            kv.put(format!("10.{node}"), state.encode_to_vec().into()).await.expect("put");
        }
    };
    put("a", 1).await;
    let mut child = lightctl_cmd()
        .args(["watch", "-o", "json", "--redraw-interval", "20ms", "--nats.url", &nats.url()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let head_of_a =
        |j: &serde_json::Value| j["fleet"]["nodes"][0]["state"]["head"]["number"].as_u64();
    let first: serde_json::Value = serde_json::from_str(
        &tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("in time")
            .expect("read")
            .expect("line"),
    )
    .expect("json");
    assert_eq!(head_of_a(&first), Some(1));
    put("a", 2).await;
    // Replays of the history may come first; the new value arrives within the deadline.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let line = tokio::time::timeout_at(deadline, lines.next_line())
            .await
            .expect("the change in time")
            .expect("read")
            .expect("line");
        let j: serde_json::Value = serde_json::from_str(&line).expect("json");
        if head_of_a(&j) == Some(2) {
            break;
        }
    }
    let _ = child.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kind_is_probed_when_reflection_lists_every_service() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = write_file(dir.path(), "good", TOKEN);
    let v = fake_validator_listing_everything(validator_status()).await;
    let r =
        lightctl(&["-o", "json", "pause", &v.url(), "--token-file", good.to_str().expect("path")])
            .await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.json()["kind"], "validator");
    assert!(v.paused());
}

/// A nats-server that requires a token.
async fn auth_nats(token: &str) -> NatsServer {
    let opts = NatsOptions { auth_token: Some(token.to_owned()), ..NatsOptions::default() };
    NatsServer::start_with(opts).await.expect("nats-server with auth")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_uses_the_nats_credentials() {
    let nats = auth_nats("nats-s3cret").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let good = write_file(dir.path(), "nats-token", "nats-s3cret\n");
    let r = lightctl(&["status", "-o", "json", "--nats.url", &nats.url()]).await;
    assert_eq!(r.code, 1, "no credentials: {r:?}");
    assert_eq!(r.json()["fleet"]["error"]["kind"], "nats");
    let r = lightctl(&[
        "status",
        "-o",
        "json",
        "--nats.url",
        &nats.url(),
        "--nats.token-file",
        good.to_str().expect("path"),
    ])
    .await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.json()["fleet"]["nodes"].as_array().map(Vec::len), Some(0));
    assert!(!r.stdout.contains("nats-s3cret") && !r.stderr.contains("nats-s3cret"));
    // From the config file too, and a missing secret file is a usage error.
    let cfg = write_file(
        dir.path(),
        "ctl.toml",
        &format!("nats_url = \"{}\"\nnats_token_file = \"nats-token\"\n", nats.url()),
    );
    let r = lightctl(&["status", "--config", cfg.to_str().expect("path")]).await;
    assert_eq!(r.code, 0, "{r:?}");
    let r =
        lightctl(&["status", "--nats.url", &nats.url(), "--nats.token-file", "/nonexistent"]).await;
    assert_eq!(r.code, 64, "{r:?}");
    assert!(r.stderr.starts_with("error: --nats.token-file:"), "{}", r.stderr);
}
