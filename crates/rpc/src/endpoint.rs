//! Endpoints as operators give them, and how they are shown.
//!
//! Hosted providers put API keys in URL paths (`/v2/<key>`), queries (`?apikey=`) and userinfo
//! (`user:pass@`). An [`Endpoint`] keeps the full URL for connecting but only ever displays
//! `scheme://host:port`; [`redact_url`] does the same for any URL string (NATS URLs included),
//! and [`Endpoint::scrub`] removes the secret parts from text a server sent back.

use std::fmt;

use base64::Engine as _;
use url::Url;

/// A bad endpoint flag. The message never contains the secret parts of the URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{flag}: {reason}")]
pub struct EndpointError {
    /// The flag that was wrong, e.g. `--l1.rpc`.
    pub flag: &'static str,
    /// What was wrong.
    pub reason: String,
}

/// An outbound `http://` or `https://` JSON-RPC endpoint.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    url: Url,
    shown: String,
}

impl Endpoint {
    /// Parses the value of `flag`: an absolute `http://` or `https://` URL with a host.
    pub fn parse(flag: &'static str, raw: &str) -> Result<Self, EndpointError> {
        let err = |reason: String| EndpointError { flag, reason };
        let url = Url::parse(raw.trim())
            .map_err(|e| err(format!("not a URL ({e}); expected http(s)://host:port[/path]")))?;
        let shown = redact(&url);
        if !matches!(url.scheme(), "http" | "https") {
            return Err(err(format!(
                "{shown}: unsupported scheme {:?}; expected http:// or https://",
                url.scheme()
            )));
        }
        // The url crate reads `http:///host` and `http:/host` as `http://host/`: a typo we
        // refuse rather than guess at.
        let authority =
            raw.trim().split_once("://").is_some_and(|(_, rest)| !rest.starts_with(['/', '\\']));
        if url.host_str().is_none_or(str::is_empty) || !authority {
            return Err(err(format!("{shown}: the URL has no host")));
        }
        Ok(Self { url, shown })
    }

    /// The full URL, secrets included: for connecting only, never for printing.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// `true` for `https://`.
    pub fn is_https(&self) -> bool {
        self.url.scheme() == "https"
    }

    /// `host:port` (the port defaulted from the scheme), e.g. for a `server.address` attribute.
    pub fn host_port(&self) -> String {
        host_port(&self.url)
    }

    /// `scheme://host:port`, the only form ever printed.
    pub fn redacted(&self) -> &str {
        &self.shown
    }

    /// `text` with every secret part of this endpoint (userinfo, path segments, query values)
    /// replaced by `<redacted>`: for server answers that may echo the request URL.
    pub fn scrub(&self, text: &str) -> String {
        scrub_with(&self.url, text)
    }
}

impl std::str::FromStr for Endpoint {
    type Err = EndpointError;

    /// Parses a URL that is not a flag (tests, embedders); errors name it as `endpoint`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse("endpoint", s)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Endpoint({})", self.shown)
    }
}

fn host_port(url: &Url) -> String {
    match (url.host_str(), url.port_or_known_default()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_owned(),
        _ => "?".to_owned(),
    }
}

fn redact(url: &Url) -> String {
    format!("{}://{}", url.scheme(), host_port(url))
}

/// `scheme://host:port` of every URL in `raw` (a comma-separated list is allowed, as NATS
/// takes one); a part without a scheme is shown as `host:port`; a part that does not parse is
/// shown as `<unparsable URL>`, never verbatim.
pub fn redact_url(raw: &str) -> String {
    raw.split(',')
        .map(|part| {
            let part = part.trim();
            if part.contains("://") {
                match Url::parse(part) {
                    Ok(u) if u.host_str().is_some() => redact(&u),
                    _ => "<unparsable URL>".to_owned(),
                }
            } else {
                let parsed = Url::parse(&format!("x://{part}")).ok();
                match parsed.as_ref().and_then(|u| u.host_str().map(|h| (h, u.port()))) {
                    Some((h, Some(p))) => format!("{h}:{p}"),
                    Some((h, None)) => h.to_owned(),
                    None => "<unparsable URL>".to_owned(),
                }
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The pieces of `url` that may be secret: userinfo, path segments and query values that are
/// long enough to be a key (short ones such as `v2` or `rpc` are not worth hiding and would
/// garble unrelated text). Each as written in the URL and percent-decoded (a server may echo
/// either), plus the HTTP Basic credentials the transport derives from the userinfo.
fn secret_parts(url: &Url) -> Vec<String> {
    const MIN: usize = 6;
    let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
    let mut parts = Vec::new();
    if !url.username().is_empty() || url.password().is_some() {
        let (user, pass) = (decode(url.username()), url.password().map(decode).unwrap_or_default());
        parts.push(base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}")));
        // Userinfo of one or two characters is not worth hiding: replacing it would garble
        // every word of the text that contains those letters.
        parts.extend([url.username().to_owned(), user].into_iter().filter(|u| u.len() >= 3));
        if let Some(p) = url.password() {
            parts.extend([p.to_owned(), pass].into_iter().filter(|p| p.len() >= 3));
        }
    }
    let mut long = Vec::new();
    if let Some(segments) = url.path_segments() {
        long.extend(segments.flat_map(|s| [s.to_owned(), decode(s)]));
    }
    // Query values: decoded (`+` is a space there) and as written.
    long.extend(url.query_pairs().map(|(_, v)| v.into_owned()));
    if let Some(q) = url.query() {
        long.extend(q.split('&').filter_map(|kv| kv.split_once('=')).map(|(_, v)| v.to_owned()));
    }
    parts.extend(long.into_iter().filter(|p| p.len() >= MIN));
    parts.retain(|p| !p.is_empty());
    // Longest first, so a secret that contains another is replaced whole.
    parts.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    parts.dedup();
    parts
}

fn scrub_with(url: &Url, text: &str) -> String {
    let mut out = text.to_owned();
    for secret in secret_parts(url) {
        if out.contains(&secret) {
            out = out.replace(&secret, "<redacted>");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "k3y-0123456789abcdef";

    #[test]
    fn shows_scheme_host_port_only() {
        for raw in [
            format!("https://eth.example.com/v2/{KEY}"),
            format!("https://user:{KEY}@eth.example.com/"),
            format!("https://eth.example.com/rpc?apikey={KEY}"),
        ] {
            let e = Endpoint::parse("--l1.rpc", &raw).unwrap();
            assert_eq!(e.to_string(), "https://eth.example.com:443");
            assert_eq!(format!("{e:?}"), "Endpoint(https://eth.example.com:443)");
            assert!(e.url().as_str().contains(KEY));
        }
        let e = Endpoint::parse("--l1.rpc", "http://127.0.0.1:8545").unwrap();
        assert_eq!(e.redacted(), "http://127.0.0.1:8545");
        assert_eq!(e.host_port(), "127.0.0.1:8545");
    }

    #[test]
    fn bad_urls_name_the_flag_and_hide_the_key() {
        let e =
            Endpoint::parse("--l1.rpc", &format!("wss://eth.example.com/v2/{KEY}")).unwrap_err();
        assert_eq!(e.flag, "--l1.rpc");
        assert!(e.to_string().contains("unsupported scheme \"wss\""), "{e}");
        assert!(!e.to_string().contains(KEY), "{e}");
        let e = Endpoint::parse("--l2.follow.source", &format!("not a url {KEY}")).unwrap_err();
        assert!(e.to_string().starts_with("--l2.follow.source: not a URL"), "{e}");
        assert!(!e.to_string().contains(KEY), "{e}");
        assert!(Endpoint::parse("--l1.rpc", "http:///nohost").is_err());
    }

    #[test]
    fn redacts_nats_urls_and_lists() {
        assert_eq!(
            redact_url(&format!("nats://lightcl:{KEY}@nats-0.nats:4222,nats://nats-1.nats:4222")),
            "nats://nats-0.nats:4222,nats://nats-1.nats:4222"
        );
        assert_eq!(redact_url("127.0.0.1:4222"), "127.0.0.1:4222");
        assert_eq!(redact_url(&format!("u:{KEY}@10.0.0.1:4222")), "10.0.0.1:4222");
        assert_eq!(redact_url("tls://a:b@host"), "tls://host");
    }

    #[test]
    fn scrubs_echoed_secrets() {
        let e =
            Endpoint::parse("--l1.rpc", &format!("https://u:{KEY}@h/v2/{KEY}x?apikey=sekrit99"))
                .unwrap();
        let text = format!("invalid key {KEY}x for /v2/{KEY}x (apikey=sekrit99) v2");
        let s = e.scrub(&text);
        assert!(!s.contains(KEY) && !s.contains("sekrit99"), "{s}");
        assert!(s.ends_with("v2"), "{s}");
    }

    #[test]
    fn scrubs_decoded_and_basic_auth_forms() {
        let e = Endpoint::parse(
            "--l1.rpc",
            "https://alice:s3cr3t%2Fpw@h/v2/k%3Dy-0123456789?apikey=ab%2Bcd%2Fef&x=a+b+c+d",
        )
        .unwrap();
        let basic = base64::engine::general_purpose::STANDARD.encode("alice:s3cr3t/pw");
        let text = format!(
            "{basic} alice s3cr3t/pw s3cr3t%2Fpw k=y-0123456789 k%3Dy-0123456789 ab+cd/ef \
             ab%2Bcd%2Fef a b c d a+b+c+d"
        );
        let s = e.scrub(&text);
        for secret in [
            basic.as_str(),
            "alice",
            "s3cr3t",
            "0123456789",
            "cd/ef",
            "cd%2Fef",
            "a b c d",
            "a+b+c+d",
        ] {
            assert!(!s.contains(secret), "{secret} in {s}");
        }
    }
}
