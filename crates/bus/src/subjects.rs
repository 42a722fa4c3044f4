//! Subject, stream and bucket names (docs/bus.md#subjects).

use crate::BusError;

/// Stream of raw statuses.
pub const STATUS_STREAM: &str = "LIGHTCL_STATUS";
/// Stream of validated targets.
pub const TARGETS_STREAM: &str = "LIGHTCL_TARGETS";
/// Stream of rejections.
pub const REJECTED_STREAM: &str = "LIGHTCL_REJECTED";
/// KV bucket of engine states.
pub const ENGINE_BUCKET: &str = "lightcl-engine";

/// `lightcl.status.<chain>.<source>`.
pub fn status(chain_id: u64, source_id: &str) -> String {
    format!("lightcl.status.{chain_id}.{source_id}")
}

/// `lightcl.status.<chain>.*`: every source of a chain.
pub fn status_filter(chain_id: u64) -> String {
    format!("lightcl.status.{chain_id}.*")
}

/// `lightcl.target.<chain>`.
pub fn target(chain_id: u64) -> String {
    format!("lightcl.target.{chain_id}")
}

/// `lightcl.rejected.<chain>`.
pub fn rejected(chain_id: u64) -> String {
    format!("lightcl.rejected.{chain_id}")
}

/// KV key `<chain>.<node>` of one engine-driver.
pub fn engine_key(chain_id: u64, node_id: &str) -> String {
    format!("{chain_id}.{node_id}")
}

/// Checks that `value` can be one subject token (a source or node id).
pub fn check_token(what: &'static str, value: &str) -> Result<(), BusError> {
    let bad = value.is_empty()
        || value.len() > 128
        || value
            .chars()
            .any(|c| matches!(c, '.' | '*' | '>') || c.is_whitespace() || c.is_control());
    if bad { Err(BusError::InvalidToken { what, value: value.to_owned() }) } else { Ok(()) }
}

/// Turns any string (e.g. `host:port`) into a valid subject token.
pub fn sanitize_token(value: &str) -> String {
    let s: String = value
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
        .take(128)
        .collect();
    if s.is_empty() { "_".to_owned() } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_contract() {
        assert_eq!(status(10, "op1"), "lightcl.status.10.op1");
        assert_eq!(status_filter(10), "lightcl.status.10.*");
        assert_eq!(target(10), "lightcl.target.10");
        assert_eq!(rejected(10), "lightcl.rejected.10");
        assert_eq!(engine_key(10, "n1"), "10.n1");
    }

    #[test]
    fn tokens_are_checked_and_sanitized() {
        assert!(check_token("source id", "op-node_1").is_ok());
        for bad in ["", "a.b", "a*", ">", "a b"] {
            assert!(check_token("source id", bad).is_err(), "{bad:?}");
        }
        assert_eq!(sanitize_token("op-node.local:9545"), "op-node_local_9545");
        assert!(check_token("x", &sanitize_token("a.b c>*")).is_ok());
        assert_eq!(sanitize_token(""), "_");
    }
}
