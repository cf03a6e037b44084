//! Putting the original values back into what the model wrote.
//!
//! Models copy placeholders imperfectly: `[email_1]`, `[ EMAIL 1 ]`, `[Email-1]`, or without the
//! brackets (`PERSON_1`). Any bracketed kind label and number is accepted, whatever its case and
//! separators; without brackets, the upper-case label joined to its number by `_`. A placeholder of a
//! known kind that this request never handed out was invented by the model: it is left as it
//! is and counted, so the audit event can show it.

use std::sync::LazyLock;

use regex::{Captures, Regex};

use super::{PiiKind, Vault};

static PLACEHOLDER: LazyLock<Regex> = LazyLock::new(|| {
    let labels: Vec<&str> = PiiKind::ALL.iter().map(|kind| kind.label()).collect();
    Regex::new(&format!(
        r"\[\s*([A-Za-z]+(?:[ _-]+[A-Za-z]+)*)[ _-]*(\d{{1,6}})\s*\]|\b({})_(\d{{1,6}})\b",
        labels.join("|")
    ))
    .expect("placeholder pattern compiles")
});

/// The kind label and number of a placeholder match, bracketed or bare.
fn parts<'c>(captures: &'c Captures<'_>) -> (&'c str, &'c str) {
    match (captures.get(1), captures.get(2)) {
        (Some(label), Some(number)) => (label.as_str(), number.as_str()),
        _ => (
            captures.get(3).map_or("", |m| m.as_str()),
            captures.get(4).map_or("", |m| m.as_str()),
        ),
    }
}

/// Longest text a placeholder as written by a model can take; a streaming restorer holds back
/// at most this much while waiting for a `]`.
const MAX_PLACEHOLDER_LEN: usize = 48;

/// An answer with its placeholders replaced.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Restored {
    pub text: String,
    /// Placeholders replaced by their original values.
    pub restored: u32,
    /// Placeholders of a known kind this request never handed out (left as they are).
    pub invented: u32,
}

fn kind_of(label: &str) -> Option<PiiKind> {
    let label = label
        .split([' ', '_', '-'])
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join("_")
        .to_uppercase();
    PiiKind::from_label(&label)
}

/// Whether `text` holds a placeholder of a known kind (in any spelling a model may use): an
/// answer that does can only be restored by the vault of the request it was written for.
pub fn holds_placeholders(text: &str) -> bool {
    PLACEHOLDER
        .captures_iter(text)
        .any(|captures| kind_of(parts(&captures).0).is_some())
}

/// Replaces every placeholder of `vault` in `text`.
pub fn restore(text: &str, vault: &Vault) -> Restored {
    let mut restored = 0;
    let mut invented = 0;
    let text = PLACEHOLDER
        .replace_all(text, |captures: &Captures| {
            let whole = captures[0].to_owned();
            let (label, number) = parts(captures);
            let Some(kind) = kind_of(label) else {
                return whole;
            };
            let original = number.parse::<u32>().ok().and_then(|n| vault.original(kind, n));
            match original {
                Some(original) => {
                    restored += 1;
                    original.to_owned()
                }
                None => {
                    invented += 1;
                    whole
                }
            }
        })
        .into_owned();
    Restored {
        text,
        restored,
        invented,
    }
}

/// Restores a streamed answer piece by piece: text after an unclosed `[` is held back until
/// the `]` arrives (or it is clearly not a placeholder), so a placeholder split across chunks
/// is still replaced.
#[derive(Debug, Default)]
pub struct StreamRestorer {
    pending: String,
    pub restored: u32,
    pub invented: u32,
}

impl StreamRestorer {
    /// Adds a streamed piece; returns the restored text that can be shown now.
    pub fn push(&mut self, piece: &str, vault: &Vault) -> String {
        self.pending.push_str(piece);
        let hold_from = match self.pending.rfind('[') {
            Some(open) if !self.pending[open..].contains(']') && self.pending.len() - open <= MAX_PLACEHOLDER_LEN => {
                open
            }
            _ => self.pending.len(),
        };
        // A bare placeholder may be cut anywhere (`PERS` + `ON_1`): a trailing word of
        // upper-case letters, digits and `_` waits for the next piece.
        let word_start = self
            .pending
            .trim_end_matches(|c: char| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            .len();
        let hold_from = if self.pending.len() - word_start <= MAX_PLACEHOLDER_LEN {
            hold_from.min(word_start)
        } else {
            hold_from
        };
        let ready: String = self.pending.drain(..hold_from).collect();
        self.emit(&ready, vault)
    }

    /// The rest, at the end of the stream.
    pub fn finish(&mut self, vault: &Vault) -> String {
        let rest = std::mem::take(&mut self.pending);
        self.emit(&rest, vault)
    }

    fn emit(&mut self, text: &str, vault: &Vault) -> String {
        let restored = restore(text, vault);
        self.restored += restored.restored;
        self.invented += restored.invented;
        restored.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vault() -> Vault {
        let mut vault = Vault::default();
        assert_eq!(vault.placeholder(PiiKind::Email, "jane@example.com"), "[EMAIL_1]");
        assert_eq!(
            vault.placeholder(PiiKind::UrlCredentials, "https://u:p@h"),
            "[URL_CREDENTIALS_1]"
        );
        vault
    }

    #[test]
    fn tolerates_case_and_spacing_and_keeps_invented_ones() {
        let text = "Write to [email_1], [ EMAIL 1 ], [Email-1], EMAIL_1 or [url credentials 1]; [EMAIL_2] and [PERSON_1] are made up; [1] is a citation.";
        let restored = restore(text, &vault());
        assert_eq!(
            restored.text,
            "Write to jane@example.com, jane@example.com, jane@example.com, jane@example.com or https://u:p@h; [EMAIL_2] and [PERSON_1] are made up; [1] is a citation."
        );
        assert_eq!(restored.restored, 5);
        assert_eq!(restored.invented, 2);
    }

    #[test]
    fn placeholders_are_recognised_in_any_spelling() {
        assert!(holds_placeholders("Ask [person_2] or [ URL 1 ]."));
        assert!(!holds_placeholders("See [1] and [2], [note 3]."));
    }

    #[test]
    fn a_placeholder_split_across_chunks_is_restored() {
        let vault = vault();
        let mut stream = StreamRestorer::default();
        let mut shown = String::new();
        for piece in [
            "Mail [EM",
            "AIL",
            "_1",
            "] now [",
            "1], EM",
            "AIL_1 and [not closed ",
            "at all",
        ] {
            shown.push_str(&stream.push(piece, &vault));
        }
        assert_eq!(shown, "Mail jane@example.com now [1], jane@example.com and ");
        shown.push_str(&stream.finish(&vault));
        assert_eq!(
            shown,
            "Mail jane@example.com now [1], jane@example.com and [not closed at all"
        );
        assert_eq!(stream.restored, 2);
    }
}
