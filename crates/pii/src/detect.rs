//! Pattern detectors, each confirmed by a validator where the format has one.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::LazyLock;

use regex::Regex;

use super::text::{regex, words_before};
use super::{address, dates, people, phone, url};
use super::{resolve_overlaps, KindSet, PiiKind, Span};

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    regex(
        r"(?i)\b[a-z0-9][a-z0-9._%+-]*@[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*\.[a-z]{2,}\b",
    )
});
static URL_CREDENTIALS: LazyLock<Regex> =
    LazyLock::new(|| regex(r"(?i)\b[a-z][a-z0-9+.-]*://[^\s:/@]+:[^\s/@]+@[^\s]+"));
/// 13–19 digits, optionally grouped by single spaces or dashes.
static CARD: LazyLock<Regex> = LazyLock::new(|| regex(r"\b\d(?:[ -]?\d){12,18}\b"));
/// Country code, check digits, then 11–30 alphanumerics, optionally in groups of four.
static IBAN: LazyLock<Regex> = LazyLock::new(|| regex(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b"));
/// `AAA-GG-SSSS`, `AAA GG SSSS` or `AAAGGSSSS` (the same separator twice).
static SSN: LazyLock<Regex> = LazyLock::new(|| regex(r"\b(\d{3})([- ]?)(\d{2})([- ]?)(\d{4})\b"));
/// Words that make a nine-digit number a social security number.
static SSN_CUE: LazyLock<Regex> = LazyLock::new(|| {
    regex(
        r"(?i)(?:\bssn|\bss#|\bss no|social security|social sec|\bsoc\.? ?sec|\bsocial insurance|\btaxpayer id|\btin\b)",
    )
});
static IPV4: LazyLock<Regex> = LazyLock::new(|| regex(r"\b\d{1,3}(?:\.\d{1,3}){3}\b"));
static IPV6: LazyLock<Regex> = LazyLock::new(|| regex(r"(?i)(?:[0-9a-f]{0,4}:){2,7}[0-9a-f]{0,4}"));

/// Finds personal data in text.
#[derive(Debug, Clone)]
pub struct Detector {
    kinds: KindSet,
    /// Region national phone numbers (without `+`) are read in first, e.g. `US`; a list of
    /// likely regions is tried after it.
    phone_region: Option<phonenumber::country::Id>,
}

impl Default for Detector {
    fn default() -> Self {
        Self::new(PiiKind::ALL.into_iter().collect(), None)
    }
}

impl Detector {
    /// A detector for `kinds`, reading national phone numbers in `phone_region` first if given.
    pub fn new(kinds: KindSet, phone_region: Option<phonenumber::country::Id>) -> Self {
        Self { kinds, phone_region }
    }

    /// Every piece of personal data in `text`, non-overlapping, in text order.
    pub fn detect(&self, text: &str) -> Vec<Span> {
        let mut spans = Vec::new();
        for kind in &self.kinds {
            let found: Vec<(usize, usize)> = match kind {
                PiiKind::Email => matches(&EMAIL, text),
                PiiKind::UrlCredentials => urls_with_credentials(text),
                PiiKind::Card => validated(&CARD, text, luhn_valid)
                    .into_iter()
                    // `+39 0461 9304082` is a phone number whose digits happen to pass Luhn.
                    .filter(|&(start, _)| !text[..start].ends_with('+'))
                    .collect(),
                PiiKind::Iban => ibans(text),
                PiiKind::Ssn => ssns(text),
                PiiKind::Phone => phone::phones(text, self.phone_region),
                PiiKind::Ip => ips(text),
                PiiKind::Url => url::person_urls(text),
                PiiKind::Dob => dates::dates_of_birth(text),
                PiiKind::Address => address::addresses(text),
                PiiKind::Person => people::people(text),
            };
            spans.extend(found.into_iter().map(|(start, end)| Span {
                kind: *kind,
                start,
                end,
            }));
        }
        resolve_overlaps(spans)
    }
}

fn matches(pattern: &Regex, text: &str) -> Vec<(usize, usize)> {
    pattern.find_iter(text).map(|m| (m.start(), m.end())).collect()
}

fn validated(pattern: &Regex, text: &str, valid: impl Fn(&str) -> bool) -> Vec<(usize, usize)> {
    pattern
        .find_iter(text)
        .filter(|m| valid(m.as_str()))
        .map(|m| (m.start(), m.end()))
        .collect()
}

fn luhn_valid(candidate: &str) -> bool {
    let digits: String = candidate.chars().filter(char::is_ascii_digit).collect();
    (13..=19).contains(&digits.len()) && luhn::valid(&digits)
}

/// A URL with `user:password@`, without the punctuation that usually follows a URL in prose.
fn urls_with_credentials(text: &str) -> Vec<(usize, usize)> {
    URL_CREDENTIALS
        .find_iter(text)
        .map(|m| {
            let trimmed = m
                .as_str()
                .trim_end_matches(['.', ',', ';', ':', '!', '?', ')', ']', '"', '\'']);
            (m.start(), m.start() + trimmed.len())
        })
        .collect()
}

/// IBANs pass the mod-97 check. The pattern may run into a following code-like word, so the
/// longest valid prefix ending on a character boundary is taken.
fn ibans(text: &str) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    for m in IBAN.find_iter(text) {
        let candidate = m.as_str();
        let mut end = candidate.len();
        while end >= 15 {
            let prefix = candidate[..end].trim_end();
            let compact: String = prefix.chars().filter(|c| !c.is_whitespace()).collect();
            if compact.parse::<iban::Iban>().is_ok() {
                found.push((m.start(), m.start() + prefix.len()));
                break;
            }
            end -= 1;
        }
    }
    found
}

/// US social security numbers: `AAA-GG-SSSS` anywhere, the spaced and undashed forms only
/// with a cue shortly before them; never the areas that are not issued (000, 666, 900–999),
/// group 00 or serial 0000.
fn ssns(text: &str) -> Vec<(usize, usize)> {
    SSN.captures_iter(text)
        .filter(|c| {
            let area = &c[1];
            let issued = area != "000" && area != "666" && !area.starts_with('9') && &c[3] != "00" && &c[5] != "0000";
            let dashed = &c[2] == "-" && &c[4] == "-";
            let consistent = c[2] == c[4];
            let start = c.get(0).map_or(0, |m| m.start());
            issued && consistent && (dashed || SSN_CUE.is_match(words_before(text, start, 48)))
        })
        .filter_map(|c| c.get(0).map(|m| (m.start(), m.end())))
        .collect()
}

fn ips(text: &str) -> Vec<(usize, usize)> {
    let mut found = validated(&IPV4, text, |m| m.parse::<Ipv4Addr>().is_ok());
    found.extend(validated(&IPV6, text, |m| {
        m.matches(':').count() >= 2 && m.chars().any(|c| c.is_ascii_hexdigit()) && m.parse::<Ipv6Addr>().is_ok()
    }));
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(text: &str) -> Vec<(PiiKind, &str)> {
        Detector::new(PiiKind::ALL.into_iter().collect(), Some(phonenumber::country::Id::US))
            .detect(text)
            .into_iter()
            .map(|span| (span.kind, &text[span.start..span.end]))
            .collect()
    }

    #[test]
    fn validated_formats() {
        assert_eq!(
            found("mail jane.doe+x@mail.example.co.uk now"),
            vec![(PiiKind::Email, "jane.doe+x@mail.example.co.uk")]
        );
        assert_eq!(
            found("card 4111 1111 1111 1111."),
            vec![(PiiKind::Card, "4111 1111 1111 1111")]
        );
        assert_eq!(found("card 4111 1111 1111 1112."), vec![]);
        assert_eq!(
            found("iban DE89 3704 0044 0532 0130 00 please"),
            vec![(PiiKind::Iban, "DE89 3704 0044 0532 0130 00")]
        );
        assert_eq!(
            found("iban GB82WEST12345698765432"),
            vec![(PiiKind::Iban, "GB82WEST12345698765432")]
        );
        assert_eq!(found("iban DE88 3704 0044 0532 0130 00"), vec![]);
        assert_eq!(
            found("ssn 123-45-6789 but not 666-45-6789"),
            vec![(PiiKind::Ssn, "123-45-6789")]
        );
        assert_eq!(
            found("call +44 20 7946 0958 today"),
            vec![(PiiKind::Phone, "+44 20 7946 0958")]
        );
        assert_eq!(found("call (415) 555-2671"), vec![(PiiKind::Phone, "(415) 555-2671")]);
        assert_eq!(
            found("from 192.168.1.20 and 2001:db8::8a2e:370:7334"),
            vec![(PiiKind::Ip, "192.168.1.20"), (PiiKind::Ip, "2001:db8::8a2e:370:7334")]
        );
        assert_eq!(found("version 300.1.2.3 at 10:30"), vec![]);
        assert_eq!(
            found("use https://admin:s3cret@db.example.com/x."),
            vec![(PiiKind::UrlCredentials, "https://admin:s3cret@db.example.com/x")]
        );
    }

    #[test]
    fn order_numbers_are_not_personal_data() {
        assert_eq!(
            found("Order 12345678 shipped; invoice INV-2024-0042, SKU AB-1234."),
            vec![]
        );
    }
}
