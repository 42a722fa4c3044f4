//! gRPC connections to the services: address normalisation, TLS, the bearer token on every
//! call, timeouts, and [`CallError`]: what went wrong, classified for the exit code.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lightcl_proto::v1::engine_driver_control_client::EngineDriverControlClient;
use lightcl_proto::v1::poller_control_client::PollerControlClient;
use lightcl_proto::v1::validator_control_client::ValidatorControlClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Status};
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

use crate::cli::Kind;
use crate::config::{ConfigError, Setup, read_token};
use crate::exit_code;

/// Why a call to a service failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The service said it is unavailable, or the connection broke mid-call (the text is the
    /// service's or tonic's message).
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The address is not a valid URI.
    #[error("unreachable: invalid address {url:?}: {source}")]
    InvalidAddress {
        /// The address as tried (`http://` or `https://` added).
        url: String,
        /// Why.
        #[source]
        source: Arc<tonic::transport::Error>,
    },
    /// Could not connect (TCP, TLS, HTTP/2), or the TLS settings are unusable.
    #[error("unreachable: {}", error_chain(.0.as_ref()))]
    Connect(#[source] Arc<tonic::transport::Error>),
    /// No answer within the timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The service refused our token (or has mutations disabled).
    #[error("unauthenticated: {0} (check --token-file)")]
    Unauthenticated(String),
    /// The address serves gRPC but not the expected control service.
    #[error("does not serve {0} (wrong address or kind of service?)")]
    WrongService(&'static str),
    /// The service answered with another error.
    #[error("{code:?}: {message}")]
    Failed {
        /// The gRPC code.
        code: Code,
        /// The service's message.
        message: String,
    },
}

impl CallError {
    /// Stable machine-readable kind for JSON: `unreachable`, `timeout`, `unauthenticated`,
    /// `wrong_service`, `failed`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unreachable(_) | Self::InvalidAddress { .. } | Self::Connect(_) => "unreachable",
            Self::Timeout(_) => "timeout",
            Self::Unauthenticated(_) => "unauthenticated",
            Self::WrongService(_) => "wrong_service",
            Self::Failed { .. } => "failed",
        }
    }

    /// The exit code this error leads to.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Unauthenticated(_) => exit_code::UNAUTHENTICATED,
            _ => exit_code::PARTIAL,
        }
    }

    /// Classify a gRPC status from a call to `service`.
    pub fn from_status(status: &Status, service: &'static str) -> Self {
        let message = status.message().to_owned();
        match status.code() {
            Code::Unauthenticated | Code::PermissionDenied => Self::Unauthenticated(message),
            Code::Unimplemented => Self::WrongService(service),
            Code::Unavailable => Self::Unreachable(if message.is_empty() {
                "service unavailable".into()
            } else {
                message
            }),
            Code::DeadlineExceeded => Self::Unreachable(format!("deadline exceeded: {message}")),
            code => Self::Failed { code, message },
        }
    }
}

/// The full cause chain of an error on one line (tonic's transport errors say little at the
/// top level).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

/// Adds `authorization: Bearer <token>` to every call when a token is configured.
#[derive(Clone)]
pub struct TokenInterceptor {
    header: Option<MetadataValue<Ascii>>,
}

impl std::fmt::Debug for TokenInterceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenInterceptor")
            .field("header", &self.header.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Interceptor for TokenInterceptor {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(h) = &self.header {
            req.metadata_mut().insert("authorization", h.clone());
        }
        Ok(req)
    }
}

/// A channel with the token interceptor.
pub type Authed = InterceptedService<Channel, TokenInterceptor>;

/// Opens connections to services with the configured TLS, token and timeout.
#[derive(Debug, Clone)]
pub struct Connector {
    ca: Option<Certificate>,
    tls_domain: Option<String>,
    token: TokenInterceptor,
    timeout: Duration,
}

impl Connector {
    /// From the resolved setup: reads the token and CA files (errors name the flag).
    pub fn from_setup(setup: &Setup) -> Result<Self, ConfigError> {
        let token = setup.token_file.as_deref().map(read_token).transpose()?;
        let ca = setup.tls_ca.as_deref().map(read_ca).transpose()?;
        Self::new(token, ca, setup.tls_domain.clone(), setup.timeout)
    }

    /// A connector from a token, a PEM CA, a TLS name override and the timeout.
    pub fn new(
        token: Option<String>,
        ca_pem: Option<Vec<u8>>,
        tls_domain: Option<String>,
        timeout: Duration,
    ) -> Result<Self, ConfigError> {
        let header = token
            .map(|t| {
                format!("Bearer {t}").parse::<MetadataValue<Ascii>>().map_err(|_| {
                    ConfigError::Flag {
                        flag: "--token-file",
                        reason: "the token is not a valid header value".into(),
                    }
                })
            })
            .transpose()?;
        Ok(Self {
            ca: ca_pem.map(Certificate::from_pem),
            tls_domain,
            token: TokenInterceptor { header },
            timeout,
        })
    }

    /// The call/connect timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// True when a token will be sent.
    pub fn has_token(&self) -> bool {
        self.token.header.is_some()
    }

    /// `host:port` → `http://host:port` (`https://` when a CA is configured); URLs are kept.
    pub fn normalize(&self, address: &str) -> String {
        let address = address.trim();
        if address.contains("://") {
            address.to_owned()
        } else if self.ca.is_some() {
            format!("https://{address}")
        } else {
            format!("http://{address}")
        }
    }

    /// The endpoint for `address` (see [`Connector::normalize`]), with TLS for `https://`.
    pub fn endpoint(&self, address: &str) -> Result<Endpoint, CallError> {
        let url = self.normalize(address);
        let mut ep = Endpoint::from_shared(url.clone())
            .map_err(|e| CallError::InvalidAddress { url: url.clone(), source: Arc::new(e) })?
            .connect_timeout(self.timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_while_idle(true);
        if url.starts_with("https://") {
            lightcl_runtime::grpc::install_crypto_provider();
            let mut tls = ClientTlsConfig::new();
            tls = match &self.ca {
                Some(ca) => tls.ca_certificate(ca.clone()),
                None => tls.with_native_roots(),
            };
            if let Some(d) = &self.tls_domain {
                tls = tls.domain_name(d.clone());
            }
            ep = ep.tls_config(tls).map_err(|e| CallError::Connect(Arc::new(e)))?;
        }
        Ok(ep)
    }

    /// Connect to `address` (bounded by the timeout).
    pub async fn channel(&self, address: &str) -> Result<Channel, CallError> {
        let ep = self.endpoint(address)?;
        match tokio::time::timeout(self.timeout, ep.connect()).await {
            Ok(Ok(ch)) => Ok(ch),
            Ok(Err(e)) => Err(CallError::Connect(Arc::new(e))),
            Err(_) => Err(CallError::Timeout(self.timeout)),
        }
    }

    /// Wrap a channel with the token interceptor.
    pub fn authed(&self, ch: Channel) -> Authed {
        InterceptedService::new(ch, self.token.clone())
    }

    /// A poller client.
    pub async fn poller(&self, address: &str) -> Result<PollerControlClient<Authed>, CallError> {
        Ok(PollerControlClient::new(self.authed(self.channel(address).await?)))
    }

    /// A validator client.
    pub async fn validator(
        &self,
        address: &str,
    ) -> Result<ValidatorControlClient<Authed>, CallError> {
        Ok(ValidatorControlClient::new(self.authed(self.channel(address).await?)))
    }

    /// An engine-driver client.
    pub async fn driver(
        &self,
        address: &str,
    ) -> Result<EngineDriverControlClient<Authed>, CallError> {
        Ok(EngineDriverControlClient::new(self.authed(self.channel(address).await?)))
    }

    /// Run a unary call bounded by the timeout, classifying failures for `kind`.
    pub async fn unary<T, F>(&self, kind: Kind, call: F) -> Result<T, CallError>
    where
        F: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s)) => Err(CallError::from_status(&s, kind.grpc_service())),
            Err(_) => Err(CallError::Timeout(self.timeout)),
        }
    }

    /// Which lightcl control service `address` serves, asked through gRPC server reflection.
    pub async fn detect_kind(&self, address: &str) -> Result<Kind, CallError> {
        let ch = self.channel(address).await?;
        let mut client = ServerReflectionClient::new(self.authed(ch.clone()));
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let call = async {
            let mut answers =
                client.server_reflection_info(futures::stream::iter([req])).await?.into_inner();
            answers.next().await.transpose()
        };
        let answer = match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(Some(a))) => a,
            Ok(Ok(None)) => {
                return Err(CallError::Failed {
                    code: Code::Unknown,
                    message: "reflection gave no answer".into(),
                });
            }
            Ok(Err(s)) => {
                return Err(CallError::from_status(&s, "grpc.reflection.v1.ServerReflection"));
            }
            Err(_) => return Err(CallError::Timeout(self.timeout)),
        };
        let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
            return Err(CallError::Failed {
                code: Code::Unknown,
                message: "unexpected reflection answer".into(),
            });
        };
        let kinds: Vec<Kind> =
            list.service.iter().filter_map(|s| Kind::from_grpc_service(&s.name)).collect();
        match kinds.as_slice() {
            [k] => Ok(*k),
            [] => Err(CallError::WrongService("a lightcl.v1 control service")),
            // Reflection may advertise every service of the lightcl.v1 descriptor set, not
            // only the one served: ask each listed kind for its status; only a served service
            // answers anything but UNIMPLEMENTED (an auth refusal still proves it is there).
            several => {
                for k in several {
                    if self.probe(*k, ch.clone()).await? {
                        return Ok(*k);
                    }
                }
                Err(CallError::WrongService("a lightcl.v1 control service"))
            }
        }
    }

    /// Whether the service behind `ch` is of `kind` (its GetStatus is implemented).
    async fn probe(&self, kind: Kind, ch: Channel) -> Result<bool, CallError> {
        let req = lightcl_proto::v1::GetStatusRequest {};
        let ch = self.authed(ch);
        let result = match kind {
            Kind::Poller => {
                self.unary(kind, PollerControlClient::new(ch).get_status(req)).await.map(drop)
            }
            Kind::Validator => {
                self.unary(kind, ValidatorControlClient::new(ch).get_status(req)).await.map(drop)
            }
            Kind::Driver => {
                self.unary(kind, EngineDriverControlClient::new(ch).get_status(req)).await.map(drop)
            }
        };
        match result {
            Ok(()) | Err(CallError::Unauthenticated(_)) => Ok(true),
            Err(CallError::WrongService(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

fn read_ca(path: &Path) -> Result<Vec<u8>, ConfigError> {
    let pem = std::fs::read(path).map_err(|source| ConfigError::ReadFile {
        flag: "--tls.ca",
        path: path.to_owned(),
        source,
    })?;
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
        return Err(ConfigError::Flag {
            flag: "--tls.ca",
            reason: format!("{} holds no PEM certificate", path.display()),
        });
    }
    Ok(pem)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connector(ca: bool) -> Connector {
        let ca = ca.then(|| b"-----BEGIN CERTIFICATE-----\n".to_vec());
        Connector::new(Some("tok".into()), ca, None, Duration::from_secs(1)).unwrap()
    }

    #[test]
    fn addresses_get_a_scheme() {
        assert_eq!(connector(false).normalize("h:1"), "http://h:1");
        assert_eq!(connector(true).normalize(" h:1 "), "https://h:1");
        assert_eq!(connector(true).normalize("http://h:1"), "http://h:1");
    }

    #[test]
    fn statuses_are_classified() {
        let svc = "lightcl.v1.PollerControl";
        let e = CallError::from_status(&Status::unauthenticated("invalid bearer token"), svc);
        assert_eq!((e.kind(), e.exit_code()), ("unauthenticated", exit_code::UNAUTHENTICATED));
        let e = CallError::from_status(&Status::unimplemented(""), svc);
        assert_eq!(e.kind(), "wrong_service");
        assert!(e.to_string().contains(svc));
        let e = CallError::from_status(&Status::unavailable("shutting down"), svc);
        assert_eq!((e.kind(), e.exit_code()), ("unreachable", exit_code::PARTIAL));
        let e = CallError::from_status(&Status::internal("boom"), svc);
        assert_eq!(e.kind(), "failed");
    }

    #[test]
    fn the_token_is_never_debug_printed() {
        assert!(!format!("{:?}", connector(false)).contains("tok\""));
        assert!(format!("{:?}", connector(false)).contains("redacted"));
    }

    #[test]
    fn bad_token_bytes_are_a_usage_error() {
        let e = Connector::new(Some("a\u{7f}b".into()), None, None, Duration::from_secs(1));
        assert_eq!(e.unwrap_err().flag(), "--token-file");
    }
}
