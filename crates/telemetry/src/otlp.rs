//! Where and how spans are exported: the OTLP exporter settings of the OpenTelemetry spec
//! (protocol, endpoint, timeout) resolved from the environment, and the exporter built from
//! them.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine as _;
use lightcl_rpc::Endpoint;
use lightcl_rpc::tls::TrustRoots;
use opentelemetry_otlp::tonic_types::metadata::MetadataMap;
use opentelemetry_otlp::tonic_types::transport::ClientTlsConfig;
use opentelemetry_otlp::{
    Protocol, SpanExporter, WithExportConfig, WithHttpConfig, WithTonicConfig,
};
use url::Url;

use crate::error::TelemetryError;
use crate::http_client::OtlpHttpClient;

/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`: the traces URL, used as is.
pub(crate) const TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
/// `OTEL_EXPORTER_OTLP_ENDPOINT`: the base URL (`/v1/traces` is appended for HTTP).
pub(crate) const ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`.
pub(crate) const TRACES_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL";
/// `OTEL_EXPORTER_OTLP_PROTOCOL`.
pub(crate) const PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
const TRACES_TIMEOUT: &str = "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT";
const TIMEOUT: &str = "OTEL_EXPORTER_OTLP_TIMEOUT";
const TRACES_INSECURE: &str = "OTEL_EXPORTER_OTLP_TRACES_INSECURE";
const INSECURE: &str = "OTEL_EXPORTER_OTLP_INSECURE";
/// How [`TelemetryConfig::otlp_endpoint`](crate::TelemetryConfig::otlp_endpoint) is named in
/// errors.
const CONFIG_ENDPOINT: &str = "otlp_endpoint";

/// The spec's default export timeout.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The OTLP transport spans are exported with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OtlpProtocol {
    /// OTLP/gRPC (`grpc`), the default.
    #[default]
    Grpc,
    /// OTLP/HTTP with protobuf bodies (`http/protobuf`).
    HttpProtobuf,
}

impl OtlpProtocol {
    /// The spec's name: `grpc` or `http/protobuf`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Grpc => "grpc",
            Self::HttpProtobuf => "http/protobuf",
        }
    }
}

impl std::fmt::Display for OtlpProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for OtlpProtocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "grpc" => Ok(Self::Grpc),
            "http/protobuf" => Ok(Self::HttpProtobuf),
            _ => Err(format!(
                "unsupported OTLP protocol {:?}; accepted values: grpc, http/protobuf",
                s.trim()
            )),
        }
    }
}

/// Resolved export settings.
#[derive(Debug, Clone)]
pub(crate) struct OtlpTarget {
    pub(crate) protocol: OtlpProtocol,
    /// The full URL the exporter is given (secrets included; displays redacted).
    pub(crate) endpoint: Endpoint,
    /// The variable (or config field) the endpoint came from, for error messages.
    pub(crate) source: &'static str,
    /// Bound on one export.
    pub(crate) timeout: Duration,
}

/// The export settings from `config_endpoint`/`config_protocol` (when given) and the
/// environment as read by `env`; `Ok(None)` when export is off. Pure: `env` is the only input.
///
/// - Endpoint: `config_endpoint`, else (unless `OTEL_SDK_DISABLED=true` or
///   `OTEL_TRACES_EXPORTER=none`) `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, else
///   `OTEL_EXPORTER_OTLP_ENDPOINT`. For `http/protobuf` the latter is a base URL that gets
///   `/v1/traces` appended; the others are used as is. A gRPC endpoint without a scheme gets
///   `http://` when `OTEL_EXPORTER_OTLP_(TRACES_)INSECURE=true`, else `https://`.
/// - Protocol: `config_protocol`, else `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, else
///   `OTEL_EXPORTER_OTLP_PROTOCOL`, else `grpc`; any value but `grpc` and `http/protobuf` is an
///   error naming the variable. Only checked when export is on.
/// - Timeout: `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`, else `OTEL_EXPORTER_OTLP_TIMEOUT`
///   (milliseconds), else 10 s; a value that is not a number is ignored, as the exporter does.
pub(crate) fn resolve(
    env: &dyn Fn(&str) -> Option<String>,
    config_endpoint: Option<&str>,
    config_protocol: Option<OtlpProtocol>,
) -> Result<Option<OtlpTarget>, TelemetryError> {
    let get = |k: &str| env(k).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    let is = |k: &str, want: &str| get(k).is_some_and(|v| v.eq_ignore_ascii_case(want));

    // (value, where it came from, is it a base URL)
    let chosen = match config_endpoint.map(str::trim).filter(|v| !v.is_empty()) {
        Some(v) => Some((v.to_owned(), CONFIG_ENDPOINT, false)),
        None if is("OTEL_SDK_DISABLED", "true") || is("OTEL_TRACES_EXPORTER", "none") => None,
        None => get(TRACES_ENDPOINT)
            .map(|v| (v, TRACES_ENDPOINT, false))
            .or_else(|| get(ENDPOINT).map(|v| (v, ENDPOINT, true))),
    };
    let Some((raw, source, is_base)) = chosen else { return Ok(None) };

    let protocol = match config_protocol {
        Some(p) => p,
        None => {
            match [TRACES_PROTOCOL, PROTOCOL].into_iter().find_map(|k| get(k).map(|v| (k, v))) {
                Some((var, v)) => v
                    .parse()
                    .map_err(|e: String| TelemetryError::Exporter(format!("{var}: {e}")))?,
                None => OtlpProtocol::Grpc,
            }
        }
    };

    let url = match protocol {
        OtlpProtocol::Grpc if !raw.contains("://") => {
            let insecure = [TRACES_INSECURE, INSECURE].into_iter().find_map(get);
            let scheme = if insecure.is_some_and(|v| v.eq_ignore_ascii_case("true")) {
                "http"
            } else {
                "https"
            };
            format!("{scheme}://{raw}")
        }
        OtlpProtocol::Grpc => raw,
        OtlpProtocol::HttpProtobuf if !raw.contains("://") => {
            return Err(TelemetryError::Exporter(format!(
                "{source}: {}: no scheme; expected http:// or https://",
                lightcl_rpc::redact_url(&raw)
            )));
        }
        OtlpProtocol::HttpProtobuf if is_base => {
            if raw.ends_with('/') {
                format!("{raw}v1/traces")
            } else {
                format!("{raw}/v1/traces")
            }
        }
        OtlpProtocol::HttpProtobuf => raw,
    };
    let endpoint =
        Endpoint::parse(source, &url).map_err(|e| TelemetryError::Exporter(e.to_string()))?;

    let timeout = [TRACES_TIMEOUT, TIMEOUT]
        .into_iter()
        .find_map(|k| get(k).and_then(|v| v.parse::<u64>().ok()))
        .map_or(DEFAULT_TIMEOUT, Duration::from_millis);

    Ok(Some(OtlpTarget { protocol, endpoint, source, timeout }))
}

/// The span exporter for `target`. `https://` is verified against `roots` for both protocols;
/// userinfo in the URL becomes an `Authorization: Basic` header (so it is never part of a
/// request line or a log). `OTEL_EXPORTER_OTLP_(TRACES_)HEADERS` are read by the
/// opentelemetry-otlp builders themselves. Needs a tokio runtime.
pub(crate) fn build_exporter(
    target: &OtlpTarget,
    roots: &TrustRoots,
) -> Result<SpanExporter, TelemetryError> {
    let (url, basic_auth) = split_userinfo(target.endpoint.url());
    let built = match target.protocol {
        OtlpProtocol::Grpc => {
            let mut b = SpanExporter::builder()
                .with_tonic()
                .with_endpoint(url.as_str())
                .with_timeout(target.timeout);
            if target.endpoint.is_https() {
                // The store itself (not tonic's `with_native_roots`): the same trust as every
                // other HTTPS client of lightcl (SSL_CERT_FILE/SSL_CERT_DIR honoured), and an
                // empty store fails the handshake with a clear error instead of the start-up.
                let store = roots.store();
                b = b.with_tls_config(
                    ClientTlsConfig::new()
                        .trust_anchors(store.roots.iter().cloned())
                        .timeout(target.timeout),
                );
            }
            if let Some(auth) = basic_auth {
                let mut md = MetadataMap::new();
                if let Ok(v) = auth.parse() {
                    md.insert("authorization", v);
                }
                b = b.with_metadata(md);
            }
            b.build()
        }
        OtlpProtocol::HttpProtobuf => {
            let client = OtlpHttpClient::new(
                target.endpoint.clone(),
                roots,
                target.timeout,
                tokio::runtime::Handle::try_current().map_err(|_| TelemetryError::NoRuntime)?,
            );
            let mut b = SpanExporter::builder()
                .with_http()
                .with_http_client(client)
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(url.as_str())
                .with_timeout(target.timeout);
            if let Some(auth) = basic_auth {
                b = b.with_headers(HashMap::from([("authorization".to_owned(), auth)]));
            }
            b.build()
        }
    };
    built.map_err(|e| {
        TelemetryError::Exporter(format!(
            "{}: cannot build the OTLP exporter for {}: {}",
            target.source,
            target.endpoint,
            target.endpoint.scrub(&e.to_string())
        ))
    })
}

/// `url` without userinfo, and that userinfo as an `Authorization: Basic` value.
fn split_userinfo(url: &Url) -> (Url, Option<String>) {
    if url.username().is_empty() && url.password().is_none() {
        return (url.clone(), None);
    }
    let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
    let user = decode(url.username());
    let pass = url.password().map(decode).unwrap_or_default();
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    let mut bare = url.clone();
    let _ = bare.set_username("");
    let _ = bare.set_password(None);
    (bare, Some(format!("Basic {token}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> =
            pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |k| map.get(k).cloned()
    }

    fn target(pairs: &[(&str, &str)]) -> Result<Option<OtlpTarget>, TelemetryError> {
        resolve(&env(pairs), None, None)
    }

    fn pick(pairs: &[(&str, &str)]) -> (OtlpProtocol, String, &'static str) {
        let t = target(pairs).unwrap().expect("export on");
        (t.protocol, t.endpoint.url().to_string(), t.source)
    }

    fn err(pairs: &[(&str, &str)]) -> String {
        target(pairs).unwrap_err().to_string()
    }

    #[test]
    fn no_endpoint_no_export() {
        assert!(target(&[]).unwrap().is_none());
        assert!(target(&[(ENDPOINT, "  ")]).unwrap().is_none());
        // A bad protocol does not matter while nothing is exported.
        assert!(target(&[(PROTOCOL, "http/json")]).unwrap().is_none());
        assert!(
            target(&[(ENDPOINT, "http://c:4317"), ("OTEL_SDK_DISABLED", "TRUE")])
                .unwrap()
                .is_none()
        );
        assert!(
            target(&[(ENDPOINT, "http://c:4317"), ("OTEL_TRACES_EXPORTER", "none")])
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn grpc_is_the_default_and_uses_the_endpoint_as_is() {
        assert_eq!(
            pick(&[(ENDPOINT, "http://c:4317")]),
            (OtlpProtocol::Grpc, "http://c:4317/".to_owned(), ENDPOINT)
        );
        assert_eq!(
            pick(&[(ENDPOINT, "http://base:4317"), (TRACES_ENDPOINT, "https://traces:4317")]),
            (OtlpProtocol::Grpc, "https://traces:4317/".to_owned(), TRACES_ENDPOINT)
        );
        assert_eq!(pick(&[(ENDPOINT, "c:4317"), (PROTOCOL, "grpc")]).1, "https://c:4317/");
        assert_eq!(pick(&[(ENDPOINT, "c:4317"), (INSECURE, "true")]).1, "http://c:4317/");
    }

    #[test]
    fn http_protobuf_appends_v1_traces_to_the_base_endpoint_only() {
        let http = [(PROTOCOL, "http/protobuf")];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut v = http.to_vec();
            v.extend_from_slice(extra);
            pick(&v)
        };
        assert_eq!(
            with(&[(ENDPOINT, "https://c:4318")]),
            (OtlpProtocol::HttpProtobuf, "https://c:4318/v1/traces".to_owned(), ENDPOINT)
        );
        assert_eq!(with(&[(ENDPOINT, "http://c:4318/")]).1, "http://c:4318/v1/traces");
        assert_eq!(with(&[(ENDPOINT, "http://c/otlp")]).1, "http://c/otlp/v1/traces");
        assert_eq!(
            with(&[(ENDPOINT, "http://c:4318"), (TRACES_ENDPOINT, "http://t:9/custom")]),
            (OtlpProtocol::HttpProtobuf, "http://t:9/custom".to_owned(), TRACES_ENDPOINT)
        );
        // The config endpoint is used as is, like the signal-specific variable.
        let t = resolve(&env(&http), Some("http://x:1/v1/traces"), None).unwrap().unwrap();
        assert_eq!(t.endpoint.url().as_str(), "http://x:1/v1/traces");
    }

    #[test]
    fn traces_protocol_wins_and_config_wins_over_env() {
        assert_eq!(
            pick(&[(ENDPOINT, "http://c"), (PROTOCOL, "grpc"), (TRACES_PROTOCOL, "HTTP/protobuf")])
                .0,
            OtlpProtocol::HttpProtobuf
        );
        assert_eq!(
            pick(&[(ENDPOINT, "http://c"), (PROTOCOL, "http/protobuf"), (TRACES_PROTOCOL, "grpc")])
                .0,
            OtlpProtocol::Grpc
        );
        let t = resolve(
            &env(&[(ENDPOINT, "http://c"), (PROTOCOL, "http/json")]),
            None,
            Some(OtlpProtocol::Grpc),
        )
        .unwrap()
        .unwrap();
        assert_eq!(t.protocol, OtlpProtocol::Grpc);
    }

    #[test]
    fn bad_protocol_names_the_variable_and_the_accepted_values() {
        let e = err(&[(ENDPOINT, "http://c:4318"), (PROTOCOL, "http/json")]);
        assert_eq!(
            e,
            "OTEL_EXPORTER_OTLP_PROTOCOL: unsupported OTLP protocol \"http/json\"; accepted \
             values: grpc, http/protobuf"
        );
        let e = err(&[(ENDPOINT, "http://c:4318"), (TRACES_PROTOCOL, "thrift")]);
        assert!(e.starts_with("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: "), "{e}");
        assert!(e.contains("\"thrift\""), "{e}");
        // Handled as an exporter configuration error (the services exit 64 on it).
        assert!(matches!(
            target(&[(ENDPOINT, "http://c"), (PROTOCOL, "zipkin")]),
            Err(TelemetryError::Exporter(_))
        ));
    }

    #[test]
    fn bad_endpoints_name_the_variable_and_hide_secrets() {
        let e = err(&[(TRACES_ENDPOINT, "ftp://u:s3cr3tpass@c/k3y-0123456789")]);
        assert!(e.starts_with("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "), "{e}");
        assert!(!e.contains("s3cr3t") && !e.contains("k3y-0123456789"), "{e}");
        let e = err(&[(ENDPOINT, "c:4318/k3y-0123456789"), (PROTOCOL, "http/protobuf")]);
        assert!(e.starts_with("OTEL_EXPORTER_OTLP_ENDPOINT: "), "{e}");
        assert!(e.contains("no scheme") && !e.contains("k3y-0123456789"), "{e}");
    }

    #[test]
    fn timeout_follows_the_spec_variables() {
        let t = |pairs: &[(&str, &str)]| {
            let mut v = vec![(ENDPOINT, "http://c")];
            v.extend_from_slice(pairs);
            target(&v).unwrap().unwrap().timeout
        };
        assert_eq!(t(&[]), DEFAULT_TIMEOUT);
        assert_eq!(t(&[(TIMEOUT, "2500")]), Duration::from_millis(2500));
        assert_eq!(t(&[(TIMEOUT, "2500"), (TRACES_TIMEOUT, "700")]), Duration::from_millis(700));
        assert_eq!(t(&[(TIMEOUT, "10s")]), DEFAULT_TIMEOUT);
    }

    #[test]
    fn userinfo_becomes_basic_auth() {
        let url = Url::parse("https://al%40ice:p%3Ass@c:4318/v1/traces").unwrap();
        let (bare, auth) = split_userinfo(&url);
        assert_eq!(bare.as_str(), "https://c:4318/v1/traces");
        let expected = base64::engine::general_purpose::STANDARD.encode("al@ice:p:ss");
        assert_eq!(auth.unwrap(), format!("Basic {expected}"));
        assert_eq!(split_userinfo(&Url::parse("http://c/").unwrap()).1, None);
    }
}
