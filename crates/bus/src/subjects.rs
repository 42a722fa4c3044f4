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
/// The stream JetStream keeps [`ENGINE_BUCKET`] in (`KV_<bucket>`).
pub const ENGINE_BUCKET_STREAM: &str = "KV_lightcl-engine";

/// Subjects of [`STATUS_STREAM`]: every chain and source.
pub const STATUS_SUBJECTS: &str = "lightcl.status.>";
/// Subjects of [`TARGETS_STREAM`]: every chain.
pub const TARGET_SUBJECTS: &str = "lightcl.target.>";
/// Subjects of [`REJECTED_STREAM`]: every chain.
pub const REJECTED_SUBJECTS: &str = "lightcl.rejected.>";

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

/// KV key filter of [`ENGINE_BUCKET`]: every driver of `chain_id` (`<chain>.>`), or every key
/// (`>`).
pub fn engine_key_filter(chain_id: Option<u64>) -> String {
    chain_id.map_or_else(|| ">".to_owned(), |c| format!("{c}.>"))
}

/// The node id in an [`ENGINE_BUCKET`] key of `chain_id` (`None`: a key of another chain).
pub fn engine_key_node(chain_id: u64, key: &str) -> Option<&str> {
    key.strip_prefix(&format!("{chain_id}."))
}

/// KV key `lease.<chain>.<el_id>` of [`ENGINE_BUCKET`]: the single-writer lease of one execution
/// client (`el_id`: [`crate::el_lease_id`]). Engine-state keys start with the chain id, a number,
/// so the two never collide ([`is_lease_key`]).
pub fn lease_key(chain_id: u64, el_id: &str) -> String {
    format!("{LEASE_KEY_PREFIX}{chain_id}.{el_id}")
}

/// The prefix of every lease key ([`lease_key`]).
pub const LEASE_KEY_PREFIX: &str = "lease.";

/// True when an [`ENGINE_BUCKET`] key is a lease ([`lease_key`]), not an engine state.
pub fn is_lease_key(key: &str) -> bool {
    key.starts_with(LEASE_KEY_PREFIX)
}

/// Durable consumer name shared by every validator replica of `chain_id`.
pub fn validator_durable(chain_id: u64) -> String {
    format!("lightcl-validator-{chain_id}")
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
        assert_eq!(engine_key_filter(Some(10)), "10.>");
        assert_eq!(engine_key_filter(None), ">");
        assert_eq!(engine_key_node(10, &engine_key(10, "n1")), Some("n1"));
        assert_eq!(engine_key_node(1, &engine_key(10, "n1")), None);
        assert_eq!(validator_durable(10), "lightcl-validator-10");
        assert_eq!(lease_key(10, "0123abcd"), "lease.10.0123abcd");
        assert!(is_lease_key(&lease_key(10, "x")) && !is_lease_key(&engine_key(10, "n1")));
        // A lease key is no engine-state key of any chain.
        assert_eq!(engine_key_node(10, &lease_key(10, "x")), None);
        assert_eq!(ENGINE_BUCKET_STREAM, format!("KV_{ENGINE_BUCKET}"));
        // Every subject of a chain falls in its stream's subjects.
        for (one, all) in [
            (status(10, "a"), STATUS_SUBJECTS),
            (target(10), TARGET_SUBJECTS),
            (rejected(10), REJECTED_SUBJECTS),
        ] {
            assert!(one.starts_with(all.trim_end_matches('>')), "{one} in {all}");
        }
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
