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

/// A capitalised word: the shape of a name, also `O'Neil`, `McCarty`, `Min-jun`, `Ní`.
const NAME_WORD: &str = r"\p{Lu}\p{Ll}*(?:(?:['’]|-)?\p{Lu}?\p{Ll}+)*\b";

/// Lower-case words inside names (`Ludwig van Beethoven`, `Ms. van Dijk`, `Saoirse Ní Bhriain`).
const PARTICLE: &str = r"(?:van|von|de|da|di|du|del|der|den|le|la|bin|al|ní|nic)";

/// Up to three capitalised words after a title (`Dr. Lindqvist`, `Ms Aisha Bello`, `Ms. van Dijk`).
static TITLED: LazyLock<Regex> = LazyLock::new(|| {
    regex(&format!(
        r"\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir|Madam|Mme|Herr|Frau)\.?\s+((?:{PARTICLE}\s+)?{NAME_WORD}(?:\s+(?:{PARTICLE}\s+)?{NAME_WORD}){{0,2}})"
    ))
});

/// Capitalised words after a phrase that introduces a person.
static CUED: LazyLock<Regex> = LazyLock::new(|| {
    regex(&format!(
        r"(?i:\bmy name is|\bname:|\bi am|\bi'm|\bthis is|\bcalled|\bnamed|\bcontact|\bsigned|\bregards,|\bthanks,|\bcustomer|\bemployee|\bpatient|\bmanager|\bcolleague|\bspeak (?:to|with)|\bassigned to)\s+({NAME_WORD}(?:\s+{NAME_WORD}){{0,2}})"
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
        // Titles: they introduce a name without being part of it.
        "mr",
        "mrs",
        "ms",
        "miss",
        "mx",
        "dr",
        "prof",
        "sir",
        "madam",
        "mme",
        "herr",
        "frau",
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
    let mut found: Vec<(usize, usize)> = found
        .into_iter()
        .filter_map(|span| without_possessive(text, span))
        .filter(|&(start, end)| !names_an_organisation(&text[start..end]))
        .collect();
    found.sort();
    merge_overlapping(found)
}

/// `Kelly Carrol` of `Kelly Carrol's`.
fn without_possessive(text: &str, (start, end): (usize, usize)) -> Option<(usize, usize)> {
    let span = &text[start..end];
    let trimmed = span
        .strip_suffix("'s")
        .or_else(|| span.strip_suffix("’s"))
        .unwrap_or(span);
    (!trimmed.is_empty()).then_some((start, start + trimmed.len()))
}

/// Capitalised words that end like a company, shop or institution (`Northwind Traders`).
fn names_an_organisation(candidate: &str) -> bool {
    const ORGANISATION_WORDS: &[&str] = &[
        "traders",
        "toys",
        "inc",
        "ltd",
        "llc",
        "gmbh",
        "corp",
        "group",
        "bank",
        "airlines",
        "airways",
        "foods",
        "systems",
        "solutions",
        "labs",
        "partners",
        "industries",
        "holdings",
        "insurance",
        "logistics",
        "motors",
        "energy",
        "consulting",
        "media",
        "studios",
        "ventures",
        "capital",
        "technologies",
        "software",
        "networks",
        "hotel",
        "hotels",
        "university",
        "college",
        "school",
        "hospital",
        "clinic",
        "cafe",
        "café",
        "restaurant",
        "store",
        "shop",
        "market",
        "bakery",
        "pharmacy",
        "electronics",
        "outfitters",
        "supplies",
        "company",
    ];
    candidate
        .split_whitespace()
        .last()
        .is_some_and(|word| ORGANISATION_WORDS.contains(&word.to_lowercase().as_str()))
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

/// Full words, then abbreviations; only an abbreviation takes a dot (a sentence's full stop
/// after `Cedar Street.` is not part of the address).
const STREET_SUFFIX: &str = r"(?:(?:Street|Avenue|Road|Lane|Boulevard|Drive|Court|Place|Way|Parkway|Terrace|Close|Square|Highway|Crescent|Row|Gardens|Grove|Circle|Walk|Hill|Mews)\b|(?:St|Ave|Rd|Ln|Blvd|Dr|Ct|Pl|Pkwy|Sq|Hwy)\b\.?)";

/// `[Flat 3, ]14 Rosewood Lane[, Leeds][ LS6 2QT][, United Kingdom]`, `1600 Amphitheatre
/// Parkway, Mountain View, CA 94043`, and the continental styles: `Hauptstraße 5, 10115
/// Berlin`, `Keizersgracht 249, 7884 HJ Eindhoven`, `Calle de Alcalá 136, 08008 Barcelona`,
/// `50 bis rue Pasteur, 69007 Lyon`.
static ADDRESS: LazyLock<Regex> = LazyLock::new(|| {
    let unit = r"(?:(?:Flat|Apt\.?|Apartment|Suite|Unit)\s+\w+,?\s+)?";
    let street = format!(r"\b{unit}\d{{1,5}}[A-Za-z]?\s+(?:\p{{Lu}}[\p{{L}}'-]+\s+){{1,3}}{STREET_SUFFIX}");
    let after_unit = r"(?:,?\s+(?:Apt\.?|Apartment|Suite|Unit|Flat)\s+\w+)?";
    // City words have a lower-case letter, so a postcode's `NW1` is not taken for one.
    let city = r"(?:,\s*\p{Lu}\p{Ll}[\p{L}'-]*(?:\s+\p{Lu}\p{Ll}[\p{L}'-]*){0,2})?";
    // A UK postcode first: the alternatives are tried in order, and a US state would take its
    // first two letters (`NW` of `NW1 6XE`).
    let region =
        r"(?:,?\s+[A-Z]{1,2}\d[A-Z\d]?\s+\d[A-Z]{2}\b|,?\s+[A-Z]{2}(?:\s+\d{5}(?:-\d{4})?)?\b|,?\s+\d{5}(?:-\d{4})?)?";
    let country = r"(?:,\s*(?:USA|United States|United Kingdom|UK|Germany|Deutschland|France|Spain|España|Netherlands|Nederland|Ireland|Canada|Australia|Italy|Belgium|Austria|Switzerland)\b)?";
    // Street name, then number (German, Dutch, Spanish, Italian), or number then street (French).
    let germanic = r"\b(?:Am\s+\p{Lu}\p{Ll}+|\p{Lu}\p{Ll}+(?:straße|strasse|str\.|weg|gasse|platz|allee|ring|damm|straat|gracht|laan|plein|kade|singel|dijk|steeg))\s+\d{1,4}[a-z]?";
    let southern = r"\b(?:Calle|Avenida|Plaza|Paseo|Carrer|Camino|Via|Viale|Piazza|Corso|Rua)\s+(?:(?:de la|del|de|dei|della|di)\s+)?\p{Lu}[\p{L}'-]+(?:\s+\p{Lu}[\p{L}'-]+){0,2},?\s+\d{1,4}";
    let french = r"\b\d{1,4}(?:\s+(?:bis|ter))?,?\s+(?:rue|avenue|boulevard|bd|place|chemin|allée|impasse|quai|route)\s+(?:(?:de la|des|du|de)\s+)?\p{Lu}[\p{L}'-]+(?:\s+\p{Lu}[\p{L}'-]+){0,2}";
    // `10115 Berlin`, `7884 HJ Eindhoven`, `Frankfurt am Main`, `Den Haag`.
    let postcode_city =
        r"(?:,\s*(?:\d{4}\s?[A-Z]{2}|\d{5})\s+\p{Lu}\p{Ll}+(?:\s+(?:am|an|der|sur|\p{Lu}\p{Ll}+)){0,3})?";
    regex(&format!(
        r"{street}{after_unit}{city}{region}{country}|(?:{germanic}|{southern}|{french}){postcode_city}{country}"
    ))
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

/// How far before a date (in bytes) a birth cue is looked for: the sentence before counts
/// (`My date of birth is wrong. It should be 2002-05-28.`).
const CUE_WINDOW: usize = 96;

/// Dates with a birth cue shortly before them and no other date between (`born on 4 March
/// 1985`, `DOB: 1985-03-04`; not the second date of `born on 4 March 1985; the meeting is on
/// 12/03/2024`, whose cue belongs to the first).
pub(super) fn dates_of_birth(text: &str) -> Vec<(usize, usize)> {
    let mut previous_date_end = 0;
    DATE.find_iter(text)
        .filter(|m| {
            let mut from = m.start().saturating_sub(CUE_WINDOW).max(previous_date_end);
            previous_date_end = m.end();
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

    fn spans(found: Vec<(usize, usize)>, text: &str) -> Vec<&str> {
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
