//! API keys of `ragstream serve`: each key belongs to one tenant, and only its SHA-256 is kept
//! (in the keys file, or in Vault's KV v2 engine), so a leaked file or secret reveals no key.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::secrets::{read_vault, VaultKey};

/// The keys file: `keys: [{tenant: acme, sha256: <64 hex digits>}]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    keys: Vec<KeyEntry>,
}

/// One key: the tenant it acts for and the SHA-256 of the key (`printf %s KEY | sha256sum`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    tenant: String,
    sha256: String,
}

/// Why the keys could not be read.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("{path}: keys[{index}].{field}: {reason}")]
    Entry {
        path: PathBuf,
        index: usize,
        field: &'static str,
        reason: String,
    },
    #[error("no API key is configured: give --keys FILE or --keys-vault")]
    None,
}

/// Which tenant each key hash acts for.
#[derive(Debug, Clone, Default)]
pub struct ApiKeys {
    tenants: HashMap<String, String>,
}

/// The hex SHA-256 of `key`, as the keys file holds it.
pub fn key_hash(key: &str) -> String {
    format!("{:x}", Sha256::digest(key.as_bytes()))
}

impl ApiKeys {
    /// Reads the keys file at `path`; a faulty entry is reported with its index and field.
    pub fn from_file(path: &Path) -> Result<Self, KeysError> {
        let text = std::fs::read_to_string(path).map_err(|error| KeysError::File {
            path: path.to_owned(),
            reason: error.to_string(),
        })?;
        Self::parse(&text, path)
    }

    /// Reads the keys document (the keys file's format) from a field of a Vault KV v2 secret.
    pub async fn from_vault(key: &VaultKey) -> Result<Self, KeysError> {
        let source = PathBuf::from(format!("vault:{}/{}#{}", key.mount, key.path, key.field));
        let text = read_vault(key).await.map_err(|error| KeysError::File {
            path: source.clone(),
            reason: error.reason,
        })?;
        Self::parse(text.expose(), &source)
    }

    /// The keys of a keys document read from `source`.
    fn parse(text: &str, source: &Path) -> Result<Self, KeysError> {
        let file: KeysFile = serde_yaml::from_str(text).map_err(|error| KeysError::File {
            path: source.to_owned(),
            reason: error.to_string(),
        })?;
        let mut keys = Self::default();
        for (index, entry) in file.keys.into_iter().enumerate() {
            let entry_error = |field, reason: &str| KeysError::Entry {
                path: source.to_owned(),
                index,
                field,
                reason: reason.to_owned(),
            };
            if entry.tenant.trim().is_empty() {
                return Err(entry_error("tenant", "must not be empty"));
            }
            let hash = entry.sha256.to_ascii_lowercase();
            if hash.len() != 64 || !hash.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(entry_error(
                    "sha256",
                    "must be 64 hex digits (printf %s KEY | sha256sum)",
                ));
            }
            keys.tenants.insert(hash, entry.tenant);
        }
        Ok(keys)
    }

    /// Adds `other`'s keys.
    pub fn extend(&mut self, other: ApiKeys) {
        self.tenants.extend(other.tenants);
    }

    pub fn is_empty(&self) -> bool {
        self.tenants.is_empty()
    }

    /// The tenant `key` acts for, if it is one of the keys.
    pub fn tenant_of(&self, key: &str) -> Option<&str> {
        self.tenants.get(&key_hash(key)).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_acts_for_its_tenant_and_faults_name_the_entry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.yaml");
        let hash = key_hash("secret-acme");
        std::fs::write(
            &path,
            format!("keys:\n  - tenant: acme\n    sha256: {}\n", hash.to_uppercase()),
        )
        .unwrap();
        let keys = ApiKeys::from_file(&path).unwrap();
        assert_eq!(keys.tenant_of("secret-acme"), Some("acme"));
        assert_eq!(keys.tenant_of("secret-globex"), None);

        std::fs::write(&path, "keys:\n  - tenant: acme\n    sha256: abc\n").unwrap();
        let error = ApiKeys::from_file(&path).unwrap_err().to_string();
        assert!(error.contains("keys[0].sha256"), "{error}");
        std::fs::write(&path, "keys:\n  - tenant: acme\n    sha: abc\n").unwrap();
        let error = ApiKeys::from_file(&path).unwrap_err().to_string();
        assert!(error.contains("unknown field `sha`"), "{error}");
    }
}
