//! The `optimism_syncStatus` wire format and blocks read from `eth_getBlockByNumber`.
//!
//! Parsing is lenient where nodes differ (unknown keys, missing optional refs) and strict
//! everywhere else: every error names the offending field by its JSON path.

use alloy_primitives::B256;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// A parse failure, naming the JSON path of the field that was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {reason}")]
pub struct ParseError {
    /// JSON path of the offending field, e.g. `safe_l2.l1origin.hash`.
    pub field: String,
    /// What was wrong with it.
    pub reason: String,
}

impl ParseError {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { field: field.into(), reason: reason.into() }
    }
}

/// A block identifier: hash and number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct BlockId {
    /// Block hash as returned by the node.
    pub hash: B256,
    /// Block number.
    pub number: u64,
}

impl BlockId {
    /// True when this is the all-zero "unset" reference.
    pub fn is_unset(&self) -> bool {
        self.number == 0 && self.hash == B256::ZERO
    }
}

impl std::fmt::Display for BlockId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{} {}", self.number, self.hash)
    }
}

/// An L1 block reference (`{hash, number, parentHash, timestamp}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct L1BlockRef {
    /// Block hash.
    pub hash: B256,
    /// Block number.
    pub number: u64,
    /// Parent block hash.
    pub parent_hash: B256,
    /// Block timestamp (seconds).
    pub timestamp: u64,
}

impl L1BlockRef {
    /// The block's id.
    pub fn id(&self) -> BlockId {
        BlockId { hash: self.hash, number: self.number }
    }

    /// True when this is the all-zero "unset" reference.
    pub fn is_unset(&self) -> bool {
        self.id().is_unset()
    }
}

/// An L2 block reference: the L1 fields plus its L1 origin and sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct L2BlockRef {
    /// Block hash.
    pub hash: B256,
    /// Block number.
    pub number: u64,
    /// Parent block hash.
    pub parent_hash: B256,
    /// Block timestamp (seconds).
    pub timestamp: u64,
    /// The L1 block this L2 block was derived from (its epoch).
    #[serde(rename = "l1origin")]
    pub l1origin: BlockId,
    /// Position of the block within its epoch.
    pub sequence_number: u64,
}

impl L2BlockRef {
    /// The block's id.
    pub fn id(&self) -> BlockId {
        BlockId { hash: self.hash, number: self.number }
    }

    /// True when this is the all-zero "unset" reference.
    pub fn is_unset(&self) -> bool {
        self.id().is_unset()
    }
}

/// The result of `optimism_syncStatus`.
///
/// Required: `current_l1`, `unsafe_l2`, `safe_l2`, `finalized_l2`. The other L1 refs default to
/// unset when missing; the optional L2 refs are `None` when missing.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize)]
pub struct SyncStatus {
    /// The L1 block the source's derivation has read up to.
    pub current_l1: L1BlockRef,
    /// Deprecated alias of `finalized_l1` on op-node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_l1_finalized: Option<L1BlockRef>,
    /// The source's L1 head.
    pub head_l1: L1BlockRef,
    /// The source's L1 safe block.
    pub safe_l1: L1BlockRef,
    /// The source's L1 finalized block.
    pub finalized_l1: L1BlockRef,
    /// The unsafe (tip) L2 head.
    pub unsafe_l2: L2BlockRef,
    /// The (cross-)safe L2 head.
    pub safe_l2: L2BlockRef,
    /// The finalized L2 head.
    pub finalized_l2: L2BlockRef,
    /// Pending-safe L2 head (optional).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_safe_l2: Option<L2BlockRef>,
    /// Cross-unsafe L2 head (optional).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cross_unsafe_l2: Option<L2BlockRef>,
    /// Local-safe L2 head (optional; missing means "same as `safe_l2`").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_safe_l2: Option<L2BlockRef>,
}

impl SyncStatus {
    /// The local-safe head, falling back to `safe_l2` when the source did not report one.
    pub fn local_safe(&self) -> L2BlockRef {
        self.local_safe_l2.unwrap_or(self.safe_l2)
    }

    /// Parse the `result` of an `optimism_syncStatus` call.
    pub fn from_value(v: &Value) -> Result<Self, ParseError> {
        let obj = as_object(v, "result")?;
        let l1 = |name: &str| -> Result<Option<L1BlockRef>, ParseError> {
            field(obj, name).map(|v| parse_l1_ref(v, name)).transpose()
        };
        let l2 = |name: &str| -> Result<Option<L2BlockRef>, ParseError> {
            field(obj, name).map(|v| parse_l2_ref(v, name)).transpose()
        };
        let required = |name: &str, v: Option<L2BlockRef>| {
            v.ok_or_else(|| ParseError::new(name, "missing (required)"))
        };
        Ok(Self {
            current_l1: l1("current_l1")?
                .ok_or_else(|| ParseError::new("current_l1", "missing (required)"))?,
            current_l1_finalized: l1("current_l1_finalized")?,
            head_l1: l1("head_l1")?.unwrap_or_default(),
            safe_l1: l1("safe_l1")?.unwrap_or_default(),
            finalized_l1: l1("finalized_l1")?.unwrap_or_default(),
            unsafe_l2: required("unsafe_l2", l2("unsafe_l2")?)?,
            safe_l2: required("safe_l2", l2("safe_l2")?)?,
            finalized_l2: required("finalized_l2", l2("finalized_l2")?)?,
            pending_safe_l2: l2("pending_safe_l2")?,
            cross_unsafe_l2: l2("cross_unsafe_l2")?,
            local_safe_l2: l2("local_safe_l2")?,
        })
    }

    /// Parse the `result` of an `optimism_syncStatus` call from JSON text.
    pub fn from_json(text: &str) -> Result<Self, ParseError> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| ParseError::new("result", format!("not JSON: {e}")))?;
        Self::from_value(&v)
    }
}

impl<'de> Deserialize<'de> for SyncStatus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        Self::from_value(&v).map_err(serde::de::Error::custom)
    }
}

/// A block as returned by `eth_getBlockByNumber` (any client version): only `hash`, `number`,
/// `parentHash` and `timestamp` are read; numbers are hex quantities.
///
/// Returns `Ok(None)` for a JSON `null` (block not found).
pub fn parse_rpc_block(v: &Value) -> Result<Option<L1BlockRef>, ParseError> {
    if v.is_null() {
        return Ok(None);
    }
    block_fields(as_object(v, "block")?).map(Some)
}

/// The four fields of a block object.
fn block_fields(obj: &Map<String, Value>) -> Result<L1BlockRef, ParseError> {
    let get = |name: &str| field(obj, name).ok_or_else(|| ParseError::new(name, "missing"));
    Ok(L1BlockRef {
        hash: parse_hash(get("hash")?, "hash")?,
        number: parse_quantity(get("number")?, "number")?,
        parent_hash: parse_hash(get("parentHash")?, "parentHash")?,
        timestamp: parse_quantity(get("timestamp")?, "timestamp")?,
    })
}

/// An `eth_getBlockByNumber` answer as it comes off the wire, keeping only the four fields
/// [`parse_rpc_block`] reads: deserializing into it skips everything else (logs bloom,
/// transaction hashes, …) without building JSON values for it. [`RpcBlock::parse`] then gives
/// exactly what [`parse_rpc_block`] gives for the whole answer, errors included.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcBlock(RpcBlockShape);

#[derive(Debug, Clone, PartialEq)]
enum RpcBlockShape {
    Null,
    /// An object, with the read fields only (the last of duplicate keys wins, as in `Value`).
    Object(Map<String, Value>),
    /// Anything else, by its kind ("a string", …).
    Other(&'static str),
}

impl RpcBlock {
    /// The block, as [`parse_rpc_block`] reads it.
    pub fn parse(&self) -> Result<Option<L1BlockRef>, ParseError> {
        match &self.0 {
            RpcBlockShape::Null => Ok(None),
            RpcBlockShape::Object(m) => block_fields(m).map(Some),
            RpcBlockShape::Other(kind) => {
                Err(ParseError::new("block", format!("expected an object, got {kind}")))
            }
        }
    }
}

impl<'de> Deserialize<'de> for RpcBlock {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};

        /// A key of the block object: one of the read fields, or one to skip.
        struct Key(Option<&'static str>);
        impl<'de> Deserialize<'de> for Key {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct K;
                impl Visitor<'_> for K {
                    type Value = Key;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str("a key")
                    }
                    fn visit_str<E: serde::de::Error>(self, k: &str) -> Result<Key, E> {
                        Ok(Key(["hash", "number", "parentHash", "timestamp"]
                            .into_iter()
                            .find(|f| *f == k)))
                    }
                }
                d.deserialize_identifier(K)
            }
        }

        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RpcBlockShape;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a block, null or any JSON value")
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(RpcBlockShape::Null)
            }
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(RpcBlockShape::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                d.deserialize_any(self)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(RpcBlockShape::Other("a boolean"))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(RpcBlockShape::Other("a number"))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(RpcBlockShape::Other("a number"))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(RpcBlockShape::Other("a number"))
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(RpcBlockShape::Other("a string"))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                while a.next_element::<IgnoredAny>()?.is_some() {}
                Ok(RpcBlockShape::Other("an array"))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                let mut m = Map::new();
                while let Some(Key(k)) = a.next_key()? {
                    match k {
                        Some(k) => {
                            m.insert(k.to_owned(), a.next_value()?);
                        }
                        None => {
                            a.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(RpcBlockShape::Object(m))
            }
        }
        d.deserialize_any(V).map(RpcBlock)
    }
}

/// Formats a number as an Ethereum JSON-RPC hex quantity (`0x1a`).
pub fn to_quantity(n: u64) -> String {
    format!("{n:#x}")
}

fn field<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.get(name).filter(|v| !v.is_null())
}

fn as_object<'a>(v: &'a Value, path: &str) -> Result<&'a Map<String, Value>, ParseError> {
    v.as_object()
        .ok_or_else(|| ParseError::new(path, format!("expected an object, got {}", kind(v))))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn sub(path: &str, name: &str) -> String {
    format!("{path}.{name}")
}

fn req<'a>(obj: &'a Map<String, Value>, path: &str, name: &str) -> Result<&'a Value, ParseError> {
    field(obj, name).ok_or_else(|| ParseError::new(sub(path, name), "missing"))
}

fn parse_l1_ref(v: &Value, path: &str) -> Result<L1BlockRef, ParseError> {
    let obj = as_object(v, path)?;
    Ok(L1BlockRef {
        hash: parse_hash(req(obj, path, "hash")?, &sub(path, "hash"))?,
        number: parse_u64(req(obj, path, "number")?, &sub(path, "number"))?,
        parent_hash: parse_hash(req(obj, path, "parentHash")?, &sub(path, "parentHash"))?,
        timestamp: parse_u64(req(obj, path, "timestamp")?, &sub(path, "timestamp"))?,
    })
}

fn parse_l2_ref(v: &Value, path: &str) -> Result<L2BlockRef, ParseError> {
    let base = parse_l1_ref(v, path)?;
    let obj = as_object(v, path)?;
    let origin_path = sub(path, "l1origin");
    let origin = as_object(req(obj, path, "l1origin")?, &origin_path)?;
    Ok(L2BlockRef {
        hash: base.hash,
        number: base.number,
        parent_hash: base.parent_hash,
        timestamp: base.timestamp,
        l1origin: BlockId {
            hash: parse_hash(req(origin, &origin_path, "hash")?, &sub(&origin_path, "hash"))?,
            number: parse_u64(req(origin, &origin_path, "number")?, &sub(&origin_path, "number"))?,
        },
        sequence_number: parse_u64(
            req(obj, path, "sequenceNumber")?,
            &sub(path, "sequenceNumber"),
        )?,
    })
}

/// Parses a 0x-prefixed 32-byte hex hash.
pub fn parse_hash(v: &Value, path: &str) -> Result<B256, ParseError> {
    let s = v
        .as_str()
        .ok_or_else(|| ParseError::new(path, format!("expected a hex string, got {}", kind(v))))?;
    let hex = s.strip_prefix("0x").ok_or_else(|| {
        ParseError::new(path, format!("hash {:?} lacks the 0x prefix", excerpt(s)))
    })?;
    if hex.len() != 64 {
        return Err(ParseError::new(
            path,
            format!("hash must be 32 bytes (64 hex digits), got {} digits", hex.len()),
        ));
    }
    hex.parse::<B256>().map_err(|_| ParseError::new(path, format!("invalid hex in {s:?}")))
}

/// At most 80 characters of a network-supplied string, so an error stays one short line
/// whatever the peer sent.
fn excerpt(s: &str) -> String {
    match s.char_indices().nth(80) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

fn parse_u64(v: &Value, path: &str) -> Result<u64, ParseError> {
    match v {
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                Ok(u)
            } else if n.as_i64().is_some_and(|i| i < 0) {
                Err(ParseError::new(path, format!("negative number {n}")))
            } else if n.as_f64().is_some_and(|f| f >= 18_446_744_073_709_551_616.0) {
                Err(ParseError::new(path, format!("number {n} overflows u64")))
            } else {
                Err(ParseError::new(path, format!("expected an unsigned integer, got {n}")))
            }
        }
        other => Err(ParseError::new(path, format!("expected an integer, got {}", kind(other)))),
    }
}

fn parse_quantity(v: &Value, path: &str) -> Result<u64, ParseError> {
    let s = v.as_str().ok_or_else(|| {
        ParseError::new(path, format!("expected a hex quantity, got {}", kind(v)))
    })?;
    let hex = s.strip_prefix("0x").ok_or_else(|| {
        ParseError::new(path, format!("quantity {:?} lacks the 0x prefix", excerpt(s)))
    })?;
    if hex.is_empty() || hex.len() > 16 {
        return Err(ParseError::new(
            path,
            format!("quantity {:?} is empty or over 64 bits", excerpt(s)),
        ));
    }
    // `from_str_radix` would accept a leading sign ("0x+1f").
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ParseError::new(path, format!("invalid hex quantity {s:?}")));
    }
    u64::from_str_radix(hex, 16)
        .map_err(|_| ParseError::new(path, format!("invalid hex quantity {s:?}")))
}
