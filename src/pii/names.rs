//! Heuristic detectors: people, street addresses and dates of birth have no checksum, so they
//! are found by dictionaries and the words around them.

use std::collections::HashSet;
use std::sync::LazyLock;

use regex::Regex;

fn regex(pattern: &str) -> Regex {
    Regex::new(pattern).expect("PII pattern compiles")
}

/// Frequent first names and surnames (US Census, public domain; `src/pii/data/README.md`),
/// without the ones that are also common English words.
static FIRST_NAMES: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    include_str!("data/first_names.txt")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect()
});
static SURNAMES: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    include_str!("data/surnames.txt")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect()
});

/// A capitalised word: the shape of a name (also hyphenated or with an apostrophe: O'Neil).
const NAME_WORD: &str = r"\p{Lu}[\p{Ll}'’]+(?:-\p{Lu}[\p{Ll}]+)?";

/// Up to three capitalised words after a title (`Dr. Lindqvist`, `Ms Aisha Bello`).
static TITLED: LazyLock<Regex> = LazyLock::new(|| {
    regex(&format!(
        r"\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir|Madam|Mme|Herr|Frau)\.?\s+({NAME_WORD}(?:\s+{NAME_WORD}){{0,2}})"
    ))
});

/// Capitalised words after a phrase that introduces a person.
static CUED: LazyLock<Regex> = LazyLock::new(|| {
    regex(&format!(
        r"(?i:\bmy name is|\bname:|\bi am|\bi'm|\bthis is|\bcalled|\bnamed|\bcontact|\bsigned|\bregards,|\bthanks,|\bcustomer|\bemployee|\bpatient|\bmanager|\bcolleague|\bspeak (?:to|with)|\bassigned to|\bfrom)\s+({NAME_WORD}(?:\s+{NAME_WORD}){{0,2}})"
    ))
});

/// Two or three capitalised words in a row: a name when the words are in the dictionaries.
static WORD_RUN: LazyLock<Regex> = LazyLock::new(|| regex(&format!(r"\b{NAME_WORD}(?:\s+{NAME_WORD}){{1,2}}\b")));

fn is_first_name(word: &str) -> bool {
    FIRST_NAMES.contains(word.to_lowercase().as_str())
}

fn is_surname(word: &str) -> bool {
    SURNAMES.contains(word.to_lowercase().as_str())
}

/// Words that start with a capital in prose without being names.
fn is_common_capitalised(word: &str) -> bool {
    const COMMON: &[&str] = &[
        "the",
        "a",
        "an",
        "i",
        "my",
        "our",
        "your",
        "we",
        "he",
        "she",
        "they",
        "it",
        "please",
        "hello",
        "hi",
        "dear",
        "thanks",
        "thank",
        "can",
        "could",
        "would",
        "should",
        "what",
        "when",
        "where",
        "why",
        "how",
        "who",
        "which",
        "is",
        "are",
        "was",
        "do",
        "does",
        "did",
        "if",
        "and",
        "or",
        "but",
        "for",
        "to",
        "in",
        "on",
        "at",
        "by",
        "with",
        "from",
        "this",
        "that",
        "these",
        "those",
        "there",
        "here",
        "yes",
        "no",
        "ok",
        "also",
        "then",
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
        "january",
        "february",
        "march",
        "april",
        "may",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
        "street",
        "road",
        "avenue",
        "lane",
        "customer",
        "support",
        "team",
        "account",
        "bank",
        "order",
        "invoice",
        "iban",
        "email",
        "phone",
        "card",
        "ssn",
        "dob",
        "address",
        "name",
        "regards",
        "best",
        "kind",
        "sincerely",
        "inc",
        "ltd",
        "llc",
        "gmbh",
        "corp",
        "company",
        "service",
        "services",
        "manager",
        "department",
        "hr",
    ];
    COMMON.contains(&word.to_lowercase().as_str())
}

/// The capitalised words of `run` that form a name, trimmed of leading and trailing common
/// words; `None` if nothing name-like is left.
fn trim_run(run: &str, offset: usize) -> Option<(usize, usize)> {
    let words: Vec<(usize, &str)> = run
        .split_whitespace()
        .map(|word| (word.as_ptr() as usize - run.as_ptr() as usize, word))
        .collect();
    let first = words.iter().position(|(_, w)| !is_common_capitalised(w))?;
    let last = words.iter().rposition(|(_, w)| !is_common_capitalised(w))?;
    if first > last {
        return None;
    }
    let start = words[first].0;
    let end = words[last].0 + words[last].1.len();
    Some((offset + start, offset + end))
}

/// People: a title or an introducing phrase followed by capitalised words, or a run of
/// capitalised words whose first is a known first name and whose others are known names or at
/// least not common words.
pub(super) fn people(text: &str) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    for pattern in [&*TITLED, &*CUED] {
        for captures in pattern.captures_iter(text) {
            if let Some(name) = captures.get(1) {
                found.extend(trim_run(name.as_str(), name.start()));
            }
        }
    }
    for run in WORD_RUN.find_iter(text) {
        let words: Vec<&str> = run.as_str().split_whitespace().collect();
        // Longest name-shaped stretch: first name, then surnames or uncommon capitalised words.
        for start in 0..words.len().saturating_sub(1) {
            if !is_first_name(words[start]) || is_common_capitalised(words[start]) {
                continue;
            }
            let rest = &words[start + 1..];
            let taken = rest
                .iter()
                .take_while(|w| !is_common_capitalised(w) && (is_surname(w) || is_first_name(w) || w.len() > 2))
                .count();
            // A first name alone is too weak (sentence starts, product names): it needs at
            // least one more name-like word after it.
            if taken == 0 {
                continue;
            }
            let offset = run.start();
            let first_start = word_offset(run.as_str(), start);
            let last = start + taken;
            let last_end = word_offset(run.as_str(), last) + words[last].len();
            found.push((offset + first_start, offset + last_end));
            break;
        }
    }
    found.sort();
    merge_overlapping(found)
}

fn word_offset(run: &str, index: usize) -> usize {
    let word = run.split_whitespace().nth(index).unwrap_or("");
    word.as_ptr() as usize - run.as_ptr() as usize
}

fn merge_overlapping(spans: Vec<(usize, usize)>) -> Vec<(usize, usize)> {
    let mut merged: Vec<(usize, usize)> = Vec::with_capacity(spans.len());
    for (start, end) in spans {
        match merged.last_mut() {
            Some(last) if start < last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    merged
}

const STREET_SUFFIX: &str = r"(?:Street|St|Avenue|Ave|Road|Rd|Lane|Ln|Boulevard|Blvd|Drive|Dr|Court|Ct|Place|Pl|Way|Parkway|Pkwy|Terrace|Close|Square|Sq|Highway|Hwy|Crescent|Row|Gardens|Grove|Circle|Walk|Hill|Mews)\.?";

/// `[Flat 3, ]14 Rosewood Lane[, Leeds][ LS6 2QT]`, `1600 Amphitheatre Parkway, Mountain View,
/// CA 94043`, and the German-style `Hauptstraße 5, 10115 Berlin`.
static ADDRESS: LazyLock<Regex> = LazyLock::new(|| {
    let unit = r"(?:(?:Flat|Apt\.?|Apartment|Suite|Unit)\s+\w+,?\s+)?";
    let street = format!(r"\b{unit}\d{{1,5}}[A-Za-z]?\s+(?:\p{{Lu}}[\p{{L}}'-]+\s+){{1,3}}{STREET_SUFFIX}");
    let after_unit = r"(?:,?\s+(?:Apt\.?|Apartment|Suite|Unit|Flat)\s+\w+)?";
    let city = r"(?:,\s*\p{Lu}[\p{L}'-]+(?:\s+\p{Lu}[\p{L}'-]+){0,2})?";
    let region =
        r"(?:,?\s+[A-Z]{2}(?:\s+\d{5}(?:-\d{4})?)?|,?\s+\d{5}(?:-\d{4})?|,?\s+[A-Z]{1,2}\d[A-Z\d]?\s+\d[A-Z]{2})?";
    let german = r"\b\p{Lu}[\p{Ll}]+(?:straße|strasse|str\.|weg|gasse|platz|allee|ring|damm)\s+\d{1,4}[a-z]?(?:,\s*\d{5}\s+\p{Lu}[\p{Ll}]+)?";
    regex(&format!(r"{street}{after_unit}{city}{region}|{german}"))
});

pub(super) fn addresses(text: &str) -> Vec<(usize, usize)> {
    ADDRESS.find_iter(text).map(|m| (m.start(), m.end())).collect()
}

const MONTH: &str = r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)\.?";

/// The date formats a date of birth is written in.
static DATE: LazyLock<Regex> = LazyLock::new(|| {
    regex(&format!(
        r"(?i)\b(?:\d{{4}}-\d{{2}}-\d{{2}}|\d{{1,2}}[/.-]\d{{1,2}}[/.-]\d{{2,4}}|\d{{1,2}}(?:st|nd|rd|th)?(?:\s+of)?\s+{MONTH},?\s+\d{{4}}|{MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}})\b"
    ))
});

/// Words that make a nearby date a date of birth.
static BIRTH_CUE: LazyLock<Regex> = LazyLock::new(|| regex(r"(?i)\b(?:born|birth|birthday|birthdate|dob|d\.o\.b)\b"));

/// How far before a date (in bytes) a birth cue is looked for.
const CUE_WINDOW: usize = 48;

/// Dates with a birth cue shortly before them (`born on 4 March 1985`, `DOB: 1985-03-04`).
pub(super) fn dates_of_birth(text: &str) -> Vec<(usize, usize)> {
    DATE.find_iter(text)
        .filter(|m| {
            let mut from = m.start().saturating_sub(CUE_WINDOW);
            while !text.is_char_boundary(from) {
                from += 1;
            }
            BIRTH_CUE.is_match(&text[from..m.start()])
        })
        .map(|m| (m.start(), m.end()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spans<'a>(found: Vec<(usize, usize)>, text: &'a str) -> Vec<&'a str> {
        found.into_iter().map(|(s, e)| &text[s..e]).collect()
    }

    #[test]
    fn people_by_title_cue_and_dictionary() {
        let text = "Dr. Lindqvist said that Mary Johnson and my colleague Aisha Bello will call. My name is Priya Raghunathan.";
        assert_eq!(
            spans(people(text), text),
            vec!["Lindqvist", "Mary Johnson", "Aisha Bello", "Priya Raghunathan"]
        );
        let text = "The Customer Support Team in New York opened on Monday.";
        assert!(people(text).is_empty(), "{:?}", spans(people(text), text));
    }

    #[test]
    fn street_addresses() {
        let text = "Send it to 221 Baker Street, London NW1 6XE or 1600 Amphitheatre Parkway, Mountain View, CA 94043.";
        assert_eq!(
            spans(addresses(text), text),
            vec![
                "221 Baker Street, London NW1 6XE",
                "1600 Amphitheatre Parkway, Mountain View, CA 94043"
            ]
        );
        let text = "Wir wohnen in der Hauptstraße 5, 10115 Berlin.";
        assert_eq!(spans(addresses(text), text), vec!["Hauptstraße 5, 10115 Berlin"]);
    }

    #[test]
    fn only_dates_near_a_birth_cue() {
        let text = "Born on 4 March 1985; the meeting is on 12/03/2024. DOB: 1990-07-21.";
        assert_eq!(spans(dates_of_birth(text), text), vec!["4 March 1985", "1990-07-21"]);
    }
}
