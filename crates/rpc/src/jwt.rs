//! The Engine API JWT secret file: 64 hex characters, optional `0x`, surrounding whitespace
//! ignored. The secret never appears in an error message.

use std::path::{Path, PathBuf};

use alloy_rpc_types_engine::JwtSecret;

/// A failure to load a JWT secret file.
#[derive(Debug, thiserror::Error)]
pub enum JwtFileError {
    /// The file could not be read.
    #[error("cannot read JWT secret file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not 64 hex digits.
    #[error(
        "JWT secret file {path}: expected 64 hex characters (optionally 0x-prefixed), found {found}"
    )]
    Length {
        /// The file.
        path: PathBuf,
        /// Number of characters found (after trimming and removing `0x`).
        found: usize,
    },
    /// Contains a non-hex character.
    #[error("JWT secret file {path}: not hex: {reason}")]
    Hex {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
}

/// Load an Engine API JWT secret: 64 hex characters, optional `0x`, surrounding whitespace
/// ignored. The secret itself never appears in an error message.
pub fn load_jwt_secret(path: &Path) -> Result<JwtSecret, JwtFileError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| JwtFileError::Read { path: path.to_owned(), source })?;
    parse_jwt_secret(&text).map_err(|e| match e {
        SecretParse::Length(found) => JwtFileError::Length { path: path.to_owned(), found },
        SecretParse::Hex(reason) => JwtFileError::Hex { path: path.to_owned(), reason },
    })
}

enum SecretParse {
    Length(usize),
    Hex(String),
}

fn parse_jwt_secret(text: &str) -> Result<JwtSecret, SecretParse> {
    let t = text.trim();
    let hex = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")).unwrap_or(t);
    let found = hex.chars().count();
    if found != 64 {
        return Err(SecretParse::Length(found));
    }
    if let Some((i, c)) = hex.char_indices().find(|(_, c)| !c.is_ascii_hexdigit()) {
        return Err(SecretParse::Hex(format!("invalid character {c:?} at position {i}")));
    }
    JwtSecret::from_hex(hex).map_err(|e| SecretParse::Hex(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_parsing() {
        let hex = "ab".repeat(32);
        assert!(parse_jwt_secret(&hex).is_ok());
        assert!(parse_jwt_secret(&format!("  0x{hex}\n")).is_ok());
        assert!(matches!(parse_jwt_secret(&hex[..62]), Err(SecretParse::Length(62))));
        let bad_hex = format!("zz{}", &hex[2..]);
        assert!(matches!(parse_jwt_secret(&bad_hex), Err(SecretParse::Hex(_))));
    }

    #[test]
    fn errors_never_show_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwt.hex");
        let secret = format!("{}zz", "cd".repeat(31));
        std::fs::write(&path, &secret).unwrap();
        let e = load_jwt_secret(&path).unwrap_err().to_string();
        assert!(e.contains("not hex"), "{e}");
        assert!(!e.contains(&secret[..20]), "{e}");
    }
}
