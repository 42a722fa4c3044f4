//! The one plain-HTTP GET of the tests, the devnet and the bench: admin endpoints (`/ready`,
//! `/live`, `/metrics`) and nats-server's monitoring port (`/healthz`).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long one [`http_get`] may take in all (connect, request, reading the whole answer).
pub const HTTP_GET_TIMEOUT: Duration = Duration::from_secs(5);

/// What a GET answered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpAnswer {
    /// The status code; 0 when nothing answered (connection refused, not HTTP, timed out).
    pub status: u16,
    /// The response headers, names in lower case, in order.
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked), as lossy UTF-8.
    pub body: String,
}

impl HttpAnswer {
    /// The first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }

    /// The body when the status is 200.
    pub fn ok_body(self) -> Option<String> {
        (self.status == 200).then_some(self.body)
    }
}

/// `GET http://{addr}{path}` over HTTP/1.1 (`Connection: close`, the body read to EOF and
/// de-chunked), bounded by [`HTTP_GET_TIMEOUT`]. Never fails: an unreachable port or an answer
/// that is not HTTP/1.x is status 0.
pub async fn http_get(addr: SocketAddr, path: &str) -> HttpAnswer {
    tokio::time::timeout(HTTP_GET_TIMEOUT, fetch(addr, path))
        .await
        .ok()
        .flatten()
        .unwrap_or_default()
}

async fn fetch(addr: SocketAddr, path: &str) -> Option<HttpAnswer> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.ok()?;
    parse(&raw)
}

fn parse(raw: &[u8]) -> Option<HttpAnswer> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let body = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let mut status_line = lines.next()?.split_whitespace();
    if !status_line.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let status = status_line.next()?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    let body = if chunked { dechunk(body)? } else { body.to_vec() };
    Some(HttpAnswer { status, headers, body: String::from_utf8_lossy(&body).into_owned() })
}

/// Decodes an HTTP/1.1 chunked body.
fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = rest.windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&rest[..eol]).ok()?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        let after = &rest[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(after.get(..size)?);
        rest = after.get(size..)?.strip_prefix(b"\r\n")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_answers() {
        let a =
            parse(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\r\nnats\n")
                .unwrap();
        assert_eq!((a.status, a.body.as_str()), (503, "nats\n"));
        assert_eq!(a.header("content-type"), Some("text/plain"));
        assert_eq!(a.header("Content-Type"), Some("text/plain"));
        let a = parse(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4\r\nlive\r\n3;x=y\r\n ok\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(a.ok_body().as_deref(), Some("live ok"));
        assert_eq!(parse(b"SSH-2.0-OpenSSH\r\n\r\n"), None);
        assert_eq!(parse(b"HTTP/1.1 200 OK\r\n"), None);
    }

    #[tokio::test]
    async fn an_unreachable_port_is_status_0() {
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        assert_eq!(http_get(addr, "/ready").await, HttpAnswer::default());
    }
}
