//! Pseudonyms for the people who ask: audit events and cost-control keys name a user without
//! naming them. Below every module that needs one (audit, cost control), so neither depends on
//! the other for it.
//!
//! A pseudonym is an HMAC-SHA256 of tenant and user under a secret key, so nobody without the
//! key can recover an e-mail-style user id by hashing a list of candidates. The key comes from
//! the topology's `pseudonyms:` (an environment variable, a file or Vault); during a rotation
//! the retiring key is given as `previous_key_*` and events also carry `user_ref_previous`, the
//! pseudonym under that key, so analysts can join rows from before the rotation to rows after.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use crate::error::{ConfigError, StageError};
use crate::secrets::{read_vault, Secret, VaultKey};

/// Where the key of the user pseudonyms comes from (topology `pseudonyms:`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PseudonymConfig {
    /// Environment variable holding the key.
    pub key_env: Option<String>,
    /// A file holding the key (a mounted Kubernetes Secret). With no source set at all:
    /// `data/pseudonym.key`.
    pub key_file: Option<PathBuf>,
    /// The key in Vault's KV v2 engine.
    pub key_vault: Option<VaultKey>,
    /// When the key file does not exist, write a new random key into it (mode 0600) instead of
    /// failing: replicas on one machine then share it. Turn it off where replicas run on
    /// several machines: they must all read the same key.
    pub create_key_file: bool,
    /// The retiring key during a rotation, from one of these three.
    pub previous_key_env: Option<String>,
    pub previous_key_file: Option<PathBuf>,
    pub previous_key_vault: Option<VaultKey>,
}

impl Default for PseudonymConfig {
    fn default() -> Self {
        Self {
            key_env: None,
            key_file: None,
            key_vault: None,
            create_key_file: true,
            previous_key_env: None,
            previous_key_file: None,
            previous_key_vault: None,
        }
    }
}

/// The key file used when the topology names no key source.
pub const DEFAULT_KEY_FILE: &str = "data/pseudonym.key";

/// Shortest key accepted, in bytes: a short key could be guessed along with the user ids.
const MIN_KEY_BYTES: usize = 16;

/// One of the places a key is read from.
enum KeySource<'a> {
    Env(&'a str),
    File(&'a Path),
    Vault(&'a VaultKey),
}

impl KeySource<'_> {
    /// The key, or why it cannot be read (naming the source, never the key).
    async fn read(&self) -> Result<Secret, StageError> {
        match self {
            KeySource::Env(variable) => std::env::var(variable)
                .map(Secret::new)
                .map_err(|_| StageError::internal(format!("environment variable `{variable}` is not set"))),
            KeySource::File(file) => std::fs::read_to_string(file)
                // Secret mounts often end with a newline; a key never does.
                .map(|text| Secret::new(text.trim_end_matches(['\n', '\r'])))
                .map_err(|error| StageError::internal(format!("cannot read {}: {error}", file.display()))),
            KeySource::Vault(vault) => read_vault(vault).await,
        }
    }
}

/// The one source of `env`, `file` and `vault` that is set, if any; more than one: an error
/// naming the fields.
fn one_source<'a>(
    env: &'a Option<String>,
    file: &'a Option<PathBuf>,
    vault: &'a Option<VaultKey>,
) -> Result<Option<KeySource<'a>>, usize> {
    let mut sources: Vec<KeySource<'a>> = Vec::new();
    sources.extend(env.as_deref().map(KeySource::Env));
    sources.extend(file.as_deref().map(KeySource::File));
    sources.extend(vault.as_ref().map(KeySource::Vault));
    match sources.len() {
        0 | 1 => Ok(sources.pop()),
        many => Err(many),
    }
}

impl PseudonymConfig {
    /// Reports more than one source for either key as an error at `path`.
    pub fn validate(&self, path: &str, errors: &mut Vec<ConfigError>) {
        if one_source(&self.key_env, &self.key_file, &self.key_vault).is_err() {
            errors.push(ConfigError::new(
                path,
                "set at most one of key_env, key_file and key_vault",
            ));
        }
        if one_source(
            &self.previous_key_env,
            &self.previous_key_file,
            &self.previous_key_vault,
        )
        .is_err()
        {
            errors.push(ConfigError::new(
                path,
                "set at most one of previous_key_env, previous_key_file and previous_key_vault",
            ));
        }
    }

    /// Reads the keys (creating the key file first where allowed). Errors name the source,
    /// never a key.
    pub async fn load(&self) -> Result<Pseudonyms, StageError> {
        let several = |_| StageError::internal("pseudonyms: more than one key source");
        let default_file = PathBuf::from(DEFAULT_KEY_FILE);
        let current = one_source(&self.key_env, &self.key_file, &self.key_vault)
            .map_err(several)?
            .unwrap_or(KeySource::File(&default_file));
        if let KeySource::File(file) = current {
            if self.create_key_file {
                create_key_file(file)?;
            }
        }
        let current = read_key(current, "key").await?;
        let previous = match one_source(
            &self.previous_key_env,
            &self.previous_key_file,
            &self.previous_key_vault,
        )
        .map_err(several)?
        {
            Some(source) => Some(read_key(source, "previous key").await?),
            None => None,
        };
        Ok(Pseudonyms { current, previous })
    }
}

async fn read_key(source: KeySource<'_>, which: &str) -> Result<PseudonymKey, StageError> {
    let key = source
        .read()
        .await
        .map_err(|error| StageError::internal(format!("pseudonyms: the {which}: {}", error.reason)))?;
    checked(key, which)
}

fn checked(key: Secret, which: &str) -> Result<PseudonymKey, StageError> {
    if key.expose().len() < MIN_KEY_BYTES {
        return Err(StageError::internal(format!(
            "pseudonyms: the {which} is shorter than {MIN_KEY_BYTES} bytes"
        )));
    }
    Ok(PseudonymKey(key))
}

/// Writes 32 random bytes (hex) to `file` unless it exists; only the owner may read it. The
/// key is written to a file of this process's own and then linked into place, which fails if
/// another replica got there first: nobody ever reads a half-written key.
fn create_key_file(file: &Path) -> Result<(), StageError> {
    if file.exists() {
        return Ok(());
    }
    let failed = |error: std::io::Error| {
        StageError::internal(format!(
            "pseudonyms: cannot create the key file {}: {error}",
            file.display()
        ))
    };
    if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(failed)?;
    }
    let key = random_key();
    let staged = file.with_extension(format!("{}.{}.tmp", std::process::id(), rand::random::<u32>()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options
        .open(&staged)
        .and_then(|mut handle| handle.write_all(key.as_bytes()).and_then(|_| handle.sync_all()));
    let linked = written.and_then(|_| std::fs::hard_link(&staged, file));
    let _ = std::fs::remove_file(&staged);
    match linked {
        Ok(()) => Ok(()),
        // Another replica on this machine made it first: use theirs.
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(failed(error)),
    }
}

/// 32 random bytes as 64 hex digits.
fn random_key() -> String {
    rand::random::<[u8; 32]>().iter().map(|b| format!("{b:02x}")).collect()
}

/// A pseudonym key; never printed.
#[derive(Clone)]
struct PseudonymKey(Secret);

impl PseudonymKey {
    fn user_ref(&self, tenant: &str, user: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.0.expose().as_bytes()).expect("HMAC takes any key length");
        mac.update(tenant.as_bytes());
        mac.update(&[0u8]);
        mac.update(user.as_bytes());
        let digest = mac.finalize().into_bytes();
        digest[..8].iter().map(|byte| format!("{byte:02x}")).collect()
    }
}

/// The keys pseudonyms are made with.
#[derive(Clone)]
pub struct Pseudonyms {
    current: PseudonymKey,
    previous: Option<PseudonymKey>,
}

impl std::fmt::Debug for Pseudonyms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pseudonyms")
            .field("rotating", &self.previous.is_some())
            .finish_non_exhaustive()
    }
}

impl Pseudonyms {
    /// Pseudonyms under `key` (and `previous`, during a rotation).
    pub fn new(key: &str, previous: Option<&str>) -> Result<Self, StageError> {
        Ok(Self {
            current: checked(Secret::new(key), "key")?,
            previous: previous
                .map(|key| checked(Secret::new(key), "previous key"))
                .transpose()?,
        })
    }

    /// The pseudonym of `user` of `tenant`: 16 hex digits, stable while the key is.
    pub fn user_ref(&self, tenant: &str, user: &str) -> String {
        self.current.user_ref(tenant, user)
    }

    /// The pseudonym under the retiring key, during a rotation.
    pub fn previous_user_ref(&self, tenant: &str, user: &str) -> Option<String> {
        self.previous.as_ref().map(|key| key.user_ref(tenant, user))
    }
}

static INSTALLED: OnceLock<Arc<Pseudonyms>> = OnceLock::new();

/// Makes `pseudonyms` the process's keys (once, at start, before any message is read).
/// Returns false when keys were installed already.
pub fn install(pseudonyms: Pseudonyms) -> bool {
    INSTALLED.set(Arc::new(pseudonyms)).is_ok()
}

/// The process's keys. A process that installed none (a unit test, a library user) gets a
/// random key of its own: its pseudonyms are stable only within the process, never unkeyed.
pub fn installed() -> &'static Pseudonyms {
    INSTALLED.get_or_init(|| Arc::new(Pseudonyms::new(&random_key(), None).expect("a 64-character key")))
}

/// The pseudonym of `user` of `tenant` under the process's key ([`installed`]).
pub fn user_ref(tenant: &str, user: &str) -> String {
    installed().user_ref(tenant, user)
}

/// The pseudonym under the process's retiring key, during a rotation.
pub fn previous_user_ref(tenant: &str, user: &str) -> Option<String> {
    installed().previous_user_ref(tenant, user)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn a_pseudonym_is_keyed_stable_and_separates_tenant_from_user() {
        let pseudonyms = Pseudonyms::new(KEY, None).unwrap();
        let alice = pseudonyms.user_ref("acme", "alice@example.com");
        assert_eq!(alice.len(), 16);
        assert_eq!(alice, pseudonyms.user_ref("acme", "alice@example.com"));
        assert_ne!(alice, pseudonyms.user_ref("acme", "bob@example.com"));
        // `acme` + `x@y` and `acmex` + `@y` must not meet.
        assert_ne!(pseudonyms.user_ref("acme", "x@y"), pseudonyms.user_ref("acmex", "@y"));
        let other_key = Pseudonyms::new("another key of enough length", None).unwrap();
        assert_ne!(alice, other_key.user_ref("acme", "alice@example.com"));
        // The unkeyed SHA-256 pseudonym of earlier builds, which a dictionary reverses.
        assert_ne!(alice, "2ea5ba6d6d2c8f3e");
        // RFC 4231 test case 2's construction, to show this is HMAC-SHA256 and not a home-made
        // keyed hash: HMAC("Jefe", "what do ya want for nothing?").
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        let expected = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        let digest: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(digest, expected);
    }

    #[test]
    fn during_a_rotation_the_previous_pseudonym_is_the_one_the_old_key_made() {
        let old = Pseudonyms::new("the key used until the rotation", None).unwrap();
        let rotating = Pseudonyms::new(KEY, Some("the key used until the rotation")).unwrap();
        assert_eq!(old.previous_user_ref("acme", "alice"), None);
        assert_eq!(
            rotating.previous_user_ref("acme", "alice"),
            Some(old.user_ref("acme", "alice"))
        );
        assert_ne!(rotating.user_ref("acme", "alice"), old.user_ref("acme", "alice"));
    }

    #[test]
    fn short_keys_are_refused_without_showing_them() {
        let error = Pseudonyms::new("short", None).unwrap_err();
        assert!(error.reason.contains("shorter than 16 bytes"), "{}", error.reason);
        assert!(!error.reason.contains("short,"), "{}", error.reason);
        assert!(format!("{:?}", Pseudonyms::new(KEY, None).unwrap()).contains("rotating: false"));
    }

    #[tokio::test]
    async fn a_missing_key_file_is_created_once_and_read_by_every_later_start() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keys/pseudonym.key");
        let config = PseudonymConfig {
            key_file: Some(file.clone()),
            create_key_file: true,
            ..PseudonymConfig::default()
        };
        let first = config.load().await.unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let second = config.load().await.unwrap();
        assert_eq!(first.user_ref("acme", "alice"), second.user_ref("acme", "alice"));
        let refuses = PseudonymConfig {
            key_file: Some(dir.path().join("absent.key")),
            create_key_file: false,
            ..PseudonymConfig::default()
        };
        let error = refuses.load().await.unwrap_err();
        assert!(error.reason.contains("absent.key"), "{}", error.reason);
    }

    #[test]
    fn two_sources_for_one_key_are_a_configuration_error() {
        let config = PseudonymConfig {
            key_env: Some("K".into()),
            key_file: Some("k".into()),
            previous_key_env: Some("P".into()),
            previous_key_file: Some("p".into()),
            ..PseudonymConfig::default()
        };
        let mut errors = Vec::new();
        config.validate("pseudonyms", &mut errors);
        assert_eq!(errors.len(), 2, "{errors:?}");
    }
}
