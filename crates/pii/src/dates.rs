//! Dates of birth: a date in any common format with a birth cue shortly before it.

use std::sync::LazyLock;

use regex::Regex;

use super::text::regex;

pub(super) const MONTH: &str = r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)\.?";

/// The date formats a date of birth is written in.
static DATE: LazyLock<Regex> = LazyLock::new(|| {
    regex(&format!(
        r"(?i)(?-u:\b)(?:\d{{4}}[-/.]\d{{1,2}}[-/.]\d{{1,2}}|\d{{1,2}}[-\s]{MONTH}[-\s]\d{{2,4}}|\d{{1,2}}[/.-]\d{{1,2}}[/.-]\d{{2,4}}|\d{{1,2}}(?:st|nd|rd|th)?(?:\s+of)?\s+{MONTH},?\s+\d{{4}}|{MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}})(?-u:\b)"
    ))
});

/// Words that make a nearby date a date of birth.
static BIRTH_CUE: LazyLock<Regex> = LazyLock::new(|| {
    regex(
        r"(?i)(?-u:\b)(?:born|birth|birthday|birthdate|dob|d\.o\.b|geboren|geb|née?|naissance|nacimiento|nascita|nascimento|urodzon[ya]|urodzenia|fødselsdato|födelsedatum|syntymäaika)(?-u:\b)",
    )
});

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
        crate::text::slices(text, found)
    }

    #[test]
    fn only_dates_near_a_birth_cue() {
        let text = "Born on 4 March 1985; the meeting is on 12/03/2024. DOB: 1990-07-21.";
        assert_eq!(spans(dates_of_birth(text), text), vec!["4 March 1985", "1990-07-21"]);
        let text = "geboren am 04.03.1985, date of birth 1985/03/04, DOB 4-Mar-1985";
        assert_eq!(
            spans(dates_of_birth(text), text),
            vec!["04.03.1985", "1985/03/04", "4-Mar-1985"]
        );
    }
}
