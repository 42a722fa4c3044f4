//! Checks that a service binary refuses a bad configuration before it starts anything.

use std::net::TcpListener;
use std::process::Command;

/// Runs `cmd` (a service binary given a bad flag) with `--nats.url`, `--admin.addr` and
/// `--grpc.addr` all pointing at one listener held here, and asserts what an operator relies on:
/// exit status 64, one line on stderr naming `flag`, `secret` in none of the output, and nothing
/// started first: no connection reached the NATS address, and the occupied admin/gRPC address
/// did not turn the error into a bind failure.
pub fn assert_refused_before_start(cmd: &mut Command, flag: &str, secret: &str) {
    let held = TcpListener::bind("127.0.0.1:0").expect("bind a listener");
    held.set_nonblocking(true).expect("nonblocking");
    let addr = held.local_addr().expect("local addr");
    let out = cmd
        .args(["--nats.url", &format!("nats://127.0.0.1:{}", addr.port())])
        .args(["--admin.addr", &addr.to_string(), "--grpc.addr", &addr.to_string()])
        .output()
        .expect("run the binary");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(64), "exit status; stderr: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(flag), "names {flag}: {stderr}");
    assert!(!stderr.contains(secret) && !stdout.contains(secret), "leaks the secret: {stderr}");
    match held.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        Ok(_) => panic!("the binary connected to NATS before refusing {flag}"),
        Err(e) => panic!("accept: {e}"),
    }
}
