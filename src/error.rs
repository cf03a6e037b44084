//! Errors that say whose fault they are and whether a retry can help.
//!
//! The fault domain decides what the engine does with a message whose processing failed:
//! the input's fault sends it to the dead-letter topic, an external service's fault is retried
//! with backoff (and dead-lettered once retries are exhausted, so one poisoned dependency cannot
//! stall a partition forever), and our own fault stops the pipeline without committing the
//! offset, so the message is redelivered after the bug is fixed.
//!
//! Configuration problems ([`ConfigError`]) live here too, beside the stage errors: every layer
//! validates its own settings, so the type must sit below all of them.

use std::fmt;
use std::time::Duration;

/// Who caused a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fault {
    /// The message itself is bad (undecodable, schema violation, oversize…). Retrying cannot help.
    Input,
    /// A service we depend on failed (timeouts, 5xx, connection errors). Retrying may help.
    External,
    /// A bug or broken invariant in ragstream. Stop rather than risk losing data.
    Internal,
}

impl Fault {
    /// The lower-case name used in dead-letter headers, metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::Input => "input",
            Fault::External => "external",
            Fault::Internal => "internal",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A model file that cannot be used: missing, unreadable, or not what it should be. A
/// deployment problem (`deploy/local/models.sh` fetches the models), never the input's fault.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot load {}: {reason}", file.display())]
pub struct ModelFileError {
    pub file: std::path::PathBuf,
    pub reason: String,
}

impl ModelFileError {
    /// `file` cannot be used because of `reason`.
    pub fn new(file: impl Into<std::path::PathBuf>, reason: impl fmt::Display) -> Self {
        Self {
            file: file.into(),
            reason: reason.to_string(),
        }
    }
}

impl From<ModelFileError> for StageError {
    fn from(error: ModelFileError) -> Self {
        StageError::internal(error.to_string())
    }
}

/// A failure inside a stage.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{fault} fault: {reason}")]
pub struct StageError {
    /// Whose fault it is; decides dead-letter vs retry vs stop.
    pub fault: Fault,
    /// Human-readable reason; ends up in the dead-letter `ragstream.dlq.reason` header.
    pub reason: String,
    /// How long the failing service asked us to wait before trying again (HTTP `Retry-After`);
    /// the retry waits at least this long, up to the pipeline's `max_backoff_ms`.
    pub retry_after: Option<Duration>,
}

impl StageError {
    /// The message is bad: dead-letter it.
    pub fn input(reason: impl Into<String>) -> Self {
        Self {
            fault: Fault::Input,
            reason: reason.into(),
            retry_after: None,
        }
    }

    /// A dependency failed: retry with backoff.
    pub fn external(reason: impl Into<String>) -> Self {
        Self {
            fault: Fault::External,
            reason: reason.into(),
            retry_after: None,
        }
    }

    /// Our bug: stop the pipeline.
    pub fn internal(reason: impl Into<String>) -> Self {
        Self {
            fault: Fault::Internal,
            reason: reason.into(),
            retry_after: None,
        }
    }

    /// The same error with the service's requested wait before a retry.
    pub fn with_retry_after(mut self, retry_after: Option<Duration>) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// Whether retrying the same call may succeed.
    pub fn is_retryable(&self) -> bool {
        self.fault == Fault::External
    }
}

/// One problem in a topology file, located by the path of the offending field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where the problem is, e.g. `pipelines[1].stages[2].max_in_flight` or `line 4`.
    pub path: String,
    /// What is wrong and, where possible, what is expected.
    pub message: String,
}

impl ConfigError {
    /// An error at `path`.
    pub fn new(path: &str, message: impl Into<String>) -> Self {
        Self {
            path: path.to_owned(),
            message: message.into(),
        }
    }
}

/// Where validation collects its findings: every problem is reported, not just the first.
pub trait Findings {
    /// A problem with the setting `field` of the settings at `path`.
    fn report(&mut self, path: impl fmt::Display, field: &str, message: impl Into<String>);

    /// `value` must lie in `range`, both ends included.
    fn require_within<T: PartialOrd + fmt::Display>(
        &mut self,
        path: impl fmt::Display,
        field: &str,
        value: T,
        range: std::ops::RangeInclusive<T>,
    ) {
        if !range.contains(&value) {
            let (low, high) = range.into_inner();
            self.report(path, field, format!("must be between {low} and {high}, got {value}"));
        }
    }

    /// `value` must not be zero (a count, a size or an interval).
    fn require_nonzero<T: PartialEq + Default>(&mut self, path: impl fmt::Display, field: &str, value: T) {
        if value == T::default() {
            self.report(path, field, "must be at least 1");
        }
    }

    /// `name` becomes part of metric labels, store keys, table or tool names: 1 to 64 ASCII
    /// letters, digits, `_` or `-`, which every one of those accepts.
    fn require_name(&mut self, path: impl fmt::Display, field: &str, name: &str) {
        if !is_plain_name(name) {
            self.report(
                path,
                field,
                format!("`{name}` is not a valid name: use 1 to 64 ASCII letters, digits, '_' or '-'"),
            );
        }
    }
}

/// 1 to 64 ASCII letters, digits, `_` or `-`.
pub fn is_plain_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// `message` (a decoding error about a message) with the values it quotes replaced by `value`:
/// serde quotes the offending string (`invalid type: string "ada@example.org"`), variant
/// (`` unknown variant `x` ``), unknown field name or number (`` floating point `4915112345678.0` ``),
/// and such reasons end up in dead-letter headers and logs, where personal data must not. The
/// kind of value, field names the contract declares (`` missing field `tenant` ``) and what was
/// expected stay.
pub fn without_values(message: &str) -> String {
    static QUOTED: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(
            r#""(?:[^"\\]|\\.)*"|(variant|unknown field|integer|floating point|boolean|character) `[^`]*`"#,
        )
        .expect("a valid pattern")
    });
    QUOTED
        .replace_all(message, |found: &regex::Captures<'_>| match found.get(1) {
            Some(kind) => format!("{} value", kind.as_str()),
            None => "value".to_owned(),
        })
        .into_owned()
}

impl Findings for Vec<ConfigError> {
    fn report(&mut self, path: impl fmt::Display, field: &str, message: impl Into<String>) {
        self.push(ConfigError::new(&format!("{path}.{field}"), message));
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_errors_lose_the_values_they_quote_and_keep_the_rest() {
        let typed = serde_json::from_str::<u64>(r#""ada@example.org""#)
            .unwrap_err()
            .to_string();
        assert!(typed.contains("ada@example.org"), "serde quotes it: {typed}");
        let cleaned = without_values(&typed);
        assert!(!cleaned.contains("ada"), "{cleaned}");
        assert!(cleaned.starts_with("invalid type: string value"), "{cleaned}");
        assert_eq!(
            without_values(r#"unknown variant `ada@example.org`, expected `qa` at line 1 column 9"#),
            "unknown variant value, expected `qa` at line 1 column 9"
        );
        assert_eq!(
            without_values(r#"invalid value: string "a \"quoted\" ada", expected x"#),
            "invalid value: string value, expected x"
        );
        assert_eq!(
            without_values("missing field `tenant` at line 3"),
            "missing field `tenant` at line 3"
        );
    }

    #[test]
    fn numbers_and_unknown_field_names_are_values_too() {
        // A phone number sent as a number, where the contract wants a small integer.
        let float = serde_json::from_value::<u32>(serde_json::json!(4_915_112_345_678.0_f64))
            .unwrap_err()
            .to_string();
        assert!(float.contains("4915112345678"), "serde quotes it: {float}");
        assert_eq!(
            without_values(&float),
            "invalid type: floating point value, expected u32"
        );
        let integer = serde_json::from_value::<bool>(serde_json::json!(4_915_112_345_678_u64))
            .unwrap_err()
            .to_string();
        assert_eq!(
            without_values(&integer),
            "invalid type: integer value, expected a boolean"
        );
        assert_eq!(
            without_values("unknown field `ada@example.org`, expected `tenant` or `doc_id`"),
            "unknown field value, expected `tenant` or `doc_id`"
        );
        assert_eq!(
            without_values("expected `,` or `}` at line 1 column 9"),
            "expected `,` or `}` at line 1 column 9"
        );
    }
}
