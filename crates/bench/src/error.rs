//! The one error type of the benchmark modules (`eyre` stays in `main.rs`).

/// A benchmark could not be set up or run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Something failed; the text names what was being done.
    #[error("{what}: {reason}")]
    Failed {
        /// What was being done.
        what: String,
        /// Why it failed.
        reason: String,
    },
    /// A wait timed out.
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(std::time::Duration, String),
}

/// Attaches "what was being done" to any displayable error.
pub trait Ctx<T> {
    /// Maps the error into [`BenchError::Failed`].
    fn ctx(self, what: &str) -> Result<T, BenchError>;
}

impl<T, E: std::fmt::Display> Ctx<T> for Result<T, E> {
    fn ctx(self, what: &str) -> Result<T, BenchError> {
        self.map_err(|e| BenchError::Failed { what: what.to_owned(), reason: e.to_string() })
    }
}

/// A [`BenchError::Failed`] with a message.
pub fn failed(what: &str, reason: impl std::fmt::Display) -> BenchError {
    BenchError::Failed { what: what.to_owned(), reason: reason.to_string() }
}
