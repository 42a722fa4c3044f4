//! How an I/O failure is handled.

/// What a caller does about a failed I/O operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Severity {
    /// Transient (timeout, connection refused, 5xx): retry with backoff.
    Temporary,
    /// The peer's state disagrees with ours: re-read it and re-plan.
    Reset,
    /// Misconfiguration or a broken invariant: stop and tell the operator.
    Fatal,
}
