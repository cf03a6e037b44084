//! Phone numbers: international ones (`+44 20 7946 0958`, `0044…`) and national ones without a
//! country code (`020 7946 0958`, `(030) 1234567`, `06 12 34 56 78`), validated by
//! libphonenumber in the configured region first, then in a list of likely regions.
//!
//! A national number has no country code to prove it is a phone number, and many ids are valid
//! numbers somewhere, so the words around it decide: a cue (`call`, `tel`, `mobile`…) accepts any
//! valid number; an id cue (`order`, `invoice`, `ticket`…) rejects it; without either, only a
//! number written the way phone numbers are (grouped, with a trunk `0` or an area code in
//! parentheses) counts. An extension (`ext. 204`, `x204`) is part of the number.

use std::sync::LazyLock;

use phonenumber::country::Id;
use regex::Regex;

use super::text::{regex, words_before};

mod numbering;

/// Digits in groups joined by one separator, with an optional `+`/`00` prefix, area code in
/// parentheses and `(0)` trunk marker.
static CANDIDATE: LazyLock<Regex> =
    LazyLock::new(|| regex(r"(?:\+\s?|(?-u:\b)00|\(\+?)?\d+(?:(?:[ .\-/]|\)[ .\-/]?| ?\(| ?\(0\) ?)\d+){0,7}\)?"));

static EXTENSION: LazyLock<Regex> = LazyLock::new(|| regex(r"^\s*,?\s*(?i:ext\.?|extension|x|#)\s?\d{1,6}(?-u:\b)"));

/// Words shortly before a number that say it is a phone number, or an e-mail address just
/// before it (`jane@example.com or 0327 158363`: contact details come together).
static PHONE_CUE: LazyLock<Regex> = LazyLock::new(|| {
    regex(
        r"(?i)(?:phone|tel|tél|telephone|telefon|teléfono|telefone|telefono|téléphone|mobile|mobil|móvil|cellulare|celular|portable|handy|cell|call|ring|fax|whatsapp|sms|text me|reach|contact|dial|hotline|landline|requester|caller|(?-u:\b)line:?|i'?m (?:at|on)|i am (?:at|on)|number is|number we have|number on file|(?:my|the|your|our) number|(?-u:\b)m:|(?-u:\b)t:|(?-u:\b)p:|(?-u:\b)ph(?-u:\b)|(?-u:\b)ph\.|(?-u:\b)tlf|(?-u:\b)nr(?-u:\b)|(?-u:\b)mob(?-u:\b)|@[\w.-]+\.[a-z]{2,}\s*(?:,|/|or|and)\s*$)",
    )
});

/// Words right after a number that say someone can be reached on it (`0813 572968 works
/// until 6 pm`, `… all day`).
static PHONE_CUE_AFTER: LazyLock<Regex> = LazyLock::new(|| {
    regex(
        r"(?i)^\s*(?:works (?:until|till|after|before|best)|is best|all day|any ?time|(?:during|after|before) (?:office|business|work)|is my (?:number|mobile|cell|phone))",
    )
});

/// A name and an opening parenthesis right before a number: `my neighbour Ivar Sæther
/// (40435044)` gives the number a person can be reached on.
static NAME_BEFORE: LazyLock<Regex> = LazyLock::new(|| regex(r"\p{Lu}[\p{Ll}\p{M}]+[ \t]*\($"));

/// Words shortly before a number that say it is an identifier, not a phone number.
static ID_CUE: LazyLock<Regex> = LazyLock::new(|| {
    regex(
        r"(?i)(?-u:\b)(?:order|invoice|inv|ticket|case|ref|reference|account|acct|sku|po|tracking|serial|part|id|member|policy|contract|transaction|confirmation|booking|reservation|batch|lot|item|version|build|upgrade|update|firmware|release|kernel|patch|iban|bic|swift|routing|sort code|postcode|zip|amount|total|qty|quantity)(?-u:\b)[^\d]{0,12}$",
    )
});

/// Regions tried for a national number after the configured one: where most users of a
/// European and North-American support desk are, plus the largest other markets.
const LIKELY_REGIONS: &[Id] = &[
    Id::US,
    Id::GB,
    Id::DE,
    Id::FR,
    Id::ES,
    Id::IT,
    Id::NL,
    Id::IN,
    Id::BR,
    Id::AU,
    Id::CA,
    Id::MX,
    Id::PL,
    Id::SE,
    Id::JP,
    Id::CH,
    Id::AT,
    Id::BE,
    Id::IE,
    Id::DK,
    Id::NO,
    Id::FI,
    Id::PT,
    Id::CZ,
    Id::TR,
    Id::RO,
    Id::HU,
    Id::ZA,
    Id::NZ,
    Id::AR,
    Id::CO,
    Id::CL,
    Id::ID,
    Id::PH,
    Id::VN,
    Id::NG,
    Id::IL,
    Id::GR,
    Id::KR,
    Id::CN,
    Id::SG,
    Id::UA,
];

/// How far before a number (in bytes) cues are looked for.
const CUE_WINDOW: usize = 40;

/// Every phone number in `text`, as byte ranges.
pub(super) fn phones(text: &str, preferred: Option<Id>) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    for m in CANDIDATE.find_iter(text) {
        let mut start = m.start();
        let mut candidate = m.as_str();
        // Parentheses are kept only in pairs: `(030) 1234567`, not the `)` closing a remark.
        while candidate.ends_with(')') && candidate.matches('(').count() < candidate.matches(')').count() {
            candidate = &candidate[..candidate.len() - 1];
        }
        // A whole number in parentheses, `(0456 025 234)`: the parentheses are not its own.
        let wrapped = candidate.starts_with('(')
            && candidate.ends_with(')')
            && candidate.matches('(').count() == 1
            && candidate.matches(')').count() == 1
            && candidate.len() > 2;
        if wrapped {
            candidate = &candidate[1..candidate.len() - 1];
            start += 1;
        } else if candidate.starts_with('(') && candidate.matches('(').count() > candidate.matches(')').count() {
            candidate = &candidate[1..];
            start += 1;
        }
        let candidate = candidate.trim_end();
        let end = start + candidate.len();
        if !stands_alone(text, start, end) {
            continue;
        }
        let digits = candidate.chars().filter(char::is_ascii_digit).count();
        if !(7..=15).contains(&digits) || looks_like_something_else(candidate.trim_matches(['(', ')'])) {
            continue;
        }
        let before = words_before(text, start, CUE_WINDOW);
        let cued = PHONE_CUE.is_match(before)
            || PHONE_CUE_AFTER.is_match(&text[end..])
            || wrapped && NAME_BEFORE.is_match(&text[..start])
            || alone_in_a_contact_block(text, start, end);
        if ID_CUE.is_match(before) && !cued {
            continue;
        }
        let digits: String = candidate.chars().filter(char::is_ascii_digit).collect();
        let valid = match international_digits(candidate, &digits) {
            Some(international) => numbering::valid_international(international),
            None => (cued || written_like_a_phone(candidate)) && valid_national(&digits, preferred),
        };
        if valid {
            let end = end + EXTENSION.find(&text[end..]).map_or(0, |e| e.end());
            found.push((start, end));
        }
    }
    found
}

/// The digits after `+` or `00` (country code first); `None` for a national number.
fn international_digits<'a>(candidate: &str, digits: &'a str) -> Option<&'a str> {
    if candidate.trim_start_matches('(').starts_with('+') {
        Some(digits)
    } else if candidate.starts_with("00") {
        Some(&digits[2..])
    } else {
        None
    }
}

/// A number on a line of its own within a block of lines (under an address, an e-mail, a
/// signature's name and title): contact details, unless the line above labels an id.
fn alone_in_a_contact_block(text: &str, start: usize, end: usize) -> bool {
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[end..].find('\n').map_or(text.len(), |i| end + i);
    if !text[line_start..start].trim().is_empty() || !text[end..line_end].trim().is_empty() || line_start == 0 {
        return false;
    }
    let above = text[..line_start - 1].rsplit('\n').next().unwrap_or("").trim();
    !above.is_empty() && !above.ends_with(':') && !ID_CUE.is_match(above)
}

/// Valid as a national number of the preferred region or of a likely one.
fn valid_national(digits: &str, preferred: Option<Id>) -> bool {
    preferred
        .into_iter()
        .chain(LIKELY_REGIONS.iter().copied())
        .any(|region| numbering::valid_in_region(digits, region.as_ref()))
}

/// Not glued to a word, an id or a longer number (`INV-2024-0042`, `v1.2.3`, `AB1234567`).
fn stands_alone(text: &str, start: usize, end: usize) -> bool {
    let before = text[..start].chars().next_back();
    let after = text[end..].chars().next();
    let glued_before =
        before.is_some_and(|c| c.is_alphanumeric() || matches!(c, '-' | '/' | '_' | '.' | '#' | '$' | '€' | '£'));
    // `x204` right after the number is its extension, not a longer id.
    let extension = EXTENSION.is_match(&text[end..]);
    // A time after a date (`2025-01-12 01:54`), a version's suffix (`5.15.0-126-generic`).
    let time_or_suffix = text[end..].starts_with(':')
        || text[end..].starts_with('-') && text[end + 1..].starts_with(char::is_alphabetic);
    let glued_after = time_or_suffix
        || !extension && after.is_some_and(|c| c.is_alphanumeric() || matches!(c, '_' | '%' | '€'))
        || text[end..].starts_with(['-', '/', '.']) && text[end + 1..].starts_with(|c: char| c.is_ascii_digit());
    !glued_before && !glued_after
}

/// Dates, IPs, version numbers and SSN-shaped numbers have the digits of a phone number.
fn looks_like_something_else(candidate: &str) -> bool {
    static OTHER: LazyLock<Regex> = LazyLock::new(|| {
        regex(
            r"^(?:\d{4}-\d{2}-\d{2}\s.*|\d{3}-\d{2}-\d{4}|\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}|\d{1,3}(?:\.\d{1,3}){3}|\d+(?:\.\d+){3,})$",
        )
    });
    OTHER.is_match(candidate)
}

/// Grouped the way people write phone numbers: an area code in parentheses, or a trunk `0`
/// and at least one separator, or three or more groups.
fn written_like_a_phone(candidate: &str) -> bool {
    let groups = candidate
        .split(|c: char| !c.is_ascii_digit())
        .filter(|g| !g.is_empty())
        .count();
    candidate.contains('(') || (candidate.starts_with('0') && groups >= 2) || groups >= 3
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(text: &str) -> Vec<&str> {
        crate::text::slices(text, phones(text, None))
    }

    #[test]
    fn international_and_national_numbers() {
        assert_eq!(found("call +44 20 7946 0958 today"), vec!["+44 20 7946 0958"]);
        assert_eq!(found("Tel: 020 7946 0958"), vec!["020 7946 0958"]);
        assert_eq!(found("Handy 0151 23456789 oder"), vec!["0151 23456789"]);
        assert_eq!(found("mobile 06 12 34 56 78."), vec!["06 12 34 56 78"]);
        assert_eq!(found("(415) 555-2671"), vec!["(415) 555-2671"]);
        assert_eq!(
            found("ring me on +1 415-555-0132 ext. 204"),
            vec!["+1 415-555-0132 ext. 204"]
        );
        assert_eq!(found("call 0044 20 7946 0958"), vec!["0044 20 7946 0958"]);
        assert_eq!(found("Puh. (+358) 968186164"), vec!["(+358) 968186164"]);
        assert_eq!(found("(call me: 0456.025.234)"), vec!["0456.025.234"]);
    }

    #[test]
    fn numbers_people_can_be_reached_on_without_a_cue_word() {
        assert_eq!(found("I'm on 0813572968 all day"), vec!["0813572968"]);
        assert_eq!(
            found("If it's easier, 04452807239 works until 6 pm."),
            vec!["04452807239"]
        );
        assert_eq!(
            found("Rachel Daniel\nPort Jasonburgh, ID 53090\n(801)409-1126\nShip to:"),
            vec!["(801)409-1126"]
        );
        assert_eq!(found("Requester: Ngozi Okoro, 017106944\nSummary"), vec!["017106944"]);
        assert!(found("Tracking number:\n4155552671\n").is_empty());
        // The number in parentheses after a person's name.
        assert_eq!(found("my sister Ingrid Dahl (91234567) has a key"), vec!["91234567"]);
    }

    #[test]
    fn ids_dates_and_versions_are_not_numbers() {
        assert!(found("Order 4155552671 shipped").is_empty());
        assert!(found("invoice 2024-0042-7731, SKU AB-1234567").is_empty());
        assert!(found("on 2024-03-01 from 192.168.1.20 running 10.0.19045.3803").is_empty());
        assert!(found("we paid 4155552671 units").is_empty());
    }
}
