//! The placeholder vault: which original value each placeholder stands for, for one request.
//!
//! A vault lives in the message context of one question and is dropped with it: it is never
//! serialized, produced, logged or counted in metrics, and its `Debug` output shows counts only.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};

use super::restore::{restore, Restored};
use super::{Detector, PiiKind, Span};

struct Entry {
    kind: PiiKind,
    number: u32,
    original: String,
}

/// Placeholders handed out for one request, numbered per kind from 1.
#[derive(Default)]
pub struct Vault {
    entries: Vec<Entry>,
    /// (kind, normalised value) → index into `entries`, so the same value written differently
    /// (`Jane.Doe@x.com` / `jane.doe@x.com`, `+44 20…` / `+4420…`) gets the same placeholder.
    by_value: HashMap<(PiiKind, String), usize>,
    per_kind: BTreeMap<PiiKind, u32>,
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the values: a Debug print of a context must not leak them into logs.
        f.debug_struct("Vault").field("placeholders", &self.per_kind).finish()
    }
}

fn normalized(kind: PiiKind, value: &str) -> String {
    match kind {
        PiiKind::Phone | PiiKind::Card | PiiKind::Iban | PiiKind::Ssn => value
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect::<String>()
            .to_uppercase(),
        _ => value.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase(),
    }
}

impl Vault {
    /// The placeholder for `value`: the same one every time the same value comes back.
    pub fn placeholder(&mut self, kind: PiiKind, value: &str) -> String {
        let key = (kind, normalized(kind, value));
        let index = match self.by_value.get(&key) {
            Some(index) => *index,
            None => {
                let number = self.per_kind.entry(kind).or_default();
                *number += 1;
                self.entries.push(Entry {
                    kind,
                    number: *number,
                    original: value.to_owned(),
                });
                self.by_value.insert(key, self.entries.len() - 1);
                self.entries.len() - 1
            }
        };
        format!("[{}_{}]", kind.label(), self.entries[index].number)
    }

    /// The original value of placeholder `kind` number `number`, if this vault handed it out.
    pub fn original(&self, kind: PiiKind, number: u32) -> Option<&str> {
        self.entries
            .iter()
            .find(|entry| entry.kind == kind && entry.number == number)
            .map(|entry| entry.original.as_str())
    }

    /// `text` with every span replaced by its placeholder.
    pub fn mask(&mut self, text: &str, spans: &[Span]) -> String {
        let mut masked = String::with_capacity(text.len());
        let mut at = 0;
        for span in spans {
            masked.push_str(&text[at..span.start]);
            masked.push_str(&self.placeholder(span.kind, &text[span.start..span.end]));
            at = span.end;
        }
        masked.push_str(&text[at..]);
        masked
    }
}

/// What a request knows about personal data: the detector its tenant's policy chose and the
/// vault of placeholders. Set on the message context by `mask_pii`; `retrieve` masks the
/// passages with it and `restore_pii` reads it.
#[derive(Debug)]
pub struct PiiScope {
    detector: Arc<Detector>,
    vault: Mutex<Vault>,
}

/// Occurrences per kind found in one text.
pub type KindCounts = BTreeMap<PiiKind, u32>;

impl PiiScope {
    pub fn new(detector: Arc<Detector>) -> Self {
        Self {
            detector,
            vault: Mutex::new(Vault::default()),
        }
    }

    fn vault(&self) -> std::sync::MutexGuard<'_, Vault> {
        self.vault.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `text` with its personal data replaced, and how many of each kind were replaced.
    pub fn mask(&self, text: &str) -> (String, KindCounts) {
        let spans = self.detector.detect(text);
        let mut counts = KindCounts::new();
        for span in &spans {
            *counts.entry(span.kind).or_default() += 1;
        }
        (self.vault().mask(text, &spans), counts)
    }

    /// `text` with every placeholder of this request replaced by its original value.
    pub fn restore(&self, text: &str) -> Restored {
        restore(text, &self.vault())
    }

    /// Runs `f` with the vault (for streaming restoration).
    pub fn with_vault<T>(&self, f: impl FnOnce(&Vault) -> T) -> T {
        f(&self.vault())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_value_gets_the_same_placeholder() {
        let scope = PiiScope::new(Arc::new(Detector::default()));
        let (masked, counts) =
            scope.mask("Mail Jane.Doe@example.com or jane.doe@example.com, not bob@example.org; card 4111-1111-1111-1111 = 4111111111111111.");
        assert_eq!(
            masked,
            "Mail [EMAIL_1] or [EMAIL_1], not [EMAIL_2]; card [CARD_1] = [CARD_1]."
        );
        assert_eq!(counts[&PiiKind::Email], 3);
        assert_eq!(counts[&PiiKind::Card], 2);
        scope.with_vault(|vault| {
            assert_eq!(vault.original(PiiKind::Email, 2), Some("bob@example.org"));
            assert_eq!(vault.original(PiiKind::Email, 3), None);
            assert_eq!(vault.original(PiiKind::Email, 0), None);
            let debug = format!("{vault:?}");
            assert!(!debug.contains("example"), "{debug}");
        });
    }
}
