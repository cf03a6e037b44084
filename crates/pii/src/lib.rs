//! Personal data: finding it, replacing it with placeholders before anything leaves the
//! process, and putting it back into the answer.
//!
//! Detection is rule-based: patterns checked by validators where a format has a checksum or a
//! registry (Luhn for cards, mod-97 for IBANs, libphonenumber's metadata for phones in 42 likely
//! regions, the IP parsers), cues for dates of birth and spaced SSNs, profile and user-id shapes
//! for person-identifying URLs, the place a name stands in (title, greeting, sign-off, chat
//! speaker, field) plus world name lists for people, and street, postcode and city patterns of the
//! US, the UK and continental Europe for addresses. [`evaluation`] scores it on labeled sets:
//! `ragstream pii evaluate FILE`, `cargo test --test integration pii_labeled -- --nocapture`.

mod address;
mod dates;
mod detect;
mod dictionary;
pub mod evaluation;
mod people;
mod phone;
mod restore;
mod text;
mod url;
mod vault;

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

pub use detect::Detector;
pub use restore::{holds_placeholders, restore, Restored, StreamRestorer};
pub use vault::{PiiScope, Vault};

/// The kinds of personal data ragstream recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PiiKind {
    Email,
    Phone,
    Card,
    Iban,
    Ssn,
    Ip,
    UrlCredentials,
    /// A URL that identifies a person: a profile link, a user id or a name in its path or query.
    Url,
    Dob,
    Person,
    Address,
}

impl PiiKind {
    /// Every kind, in the order overlapping matches are resolved: the more specific, validated
    /// formats win over the heuristic ones.
    pub const ALL: [PiiKind; 11] = [
        PiiKind::UrlCredentials,
        PiiKind::Url,
        PiiKind::Email,
        PiiKind::Iban,
        PiiKind::Card,
        PiiKind::Ssn,
        PiiKind::Phone,
        PiiKind::Ip,
        PiiKind::Dob,
        PiiKind::Address,
        PiiKind::Person,
    ];

    /// The label used in placeholders (`[EMAIL_1]`), audit counts and the labeled set.
    pub fn label(self) -> &'static str {
        match self {
            PiiKind::Email => "EMAIL",
            PiiKind::Phone => "PHONE",
            PiiKind::Card => "CARD",
            PiiKind::Iban => "IBAN",
            PiiKind::Ssn => "SSN",
            PiiKind::Ip => "IP",
            PiiKind::UrlCredentials => "URL_CREDENTIALS",
            PiiKind::Url => "URL",
            PiiKind::Dob => "DOB",
            PiiKind::Person => "PERSON",
            PiiKind::Address => "ADDRESS",
        }
    }

    /// The kind whose label is `label` (upper case, underscores).
    pub fn from_label(label: &str) -> Option<PiiKind> {
        PiiKind::ALL.into_iter().find(|kind| kind.label() == label)
    }

    fn priority(self) -> usize {
        PiiKind::ALL.iter().position(|kind| *kind == self).unwrap_or(usize::MAX)
    }
}

impl fmt::Display for PiiKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// One piece of personal data found in a text: byte offsets into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub kind: PiiKind,
    pub start: usize,
    pub end: usize,
}

/// Keeps the spans that do not overlap a more specific or longer one, in text order.
fn resolve_overlaps(mut spans: Vec<Span>) -> Vec<Span> {
    spans.sort_by_key(|span| {
        (
            span.kind.priority(),
            std::cmp::Reverse(span.end - span.start),
            span.start,
        )
    });
    let mut kept: Vec<Span> = Vec::with_capacity(spans.len());
    for span in spans {
        if kept.iter().all(|k| span.end <= k.start || span.start >= k.end) {
            kept.push(span);
        }
    }
    kept.sort_by_key(|span| span.start);
    kept
}

/// Which kinds a detector looks for.
pub type KindSet = BTreeSet<PiiKind>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip() {
        for kind in PiiKind::ALL {
            assert_eq!(PiiKind::from_label(kind.label()), Some(kind));
        }
    }

    #[test]
    fn specific_kinds_win_overlaps() {
        let spans = vec![
            Span {
                kind: PiiKind::Person,
                start: 0,
                end: 10,
            },
            Span {
                kind: PiiKind::Email,
                start: 5,
                end: 20,
            },
            Span {
                kind: PiiKind::Ip,
                start: 30,
                end: 40,
            },
        ];
        let kept = resolve_overlaps(spans);
        assert_eq!(
            kept.iter().map(|s| s.kind).collect::<Vec<_>>(),
            vec![PiiKind::Email, PiiKind::Ip]
        );
    }
}
