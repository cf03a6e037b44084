//! Small text helpers the detectors share.

use regex::Regex;

/// Compiles one of the detectors' constant patterns (each covered by unit tests).
///
/// The lazy DFA gets room for the large, Unicode-aware patterns of names and addresses: with the
/// default cache it gives up on them and the search falls back to the PikeVM, ten times slower.
pub(super) fn regex(pattern: &str) -> Regex {
    regex::RegexBuilder::new(pattern)
        .size_limit(64 << 20)
        .dfa_size_limit(64 << 20)
        .build()
        .expect("PII pattern compiles")
}

/// Up to `window` bytes of `text` before `at`, on the same line, starting on a character
/// boundary: where cue words for a value at `at` are looked for.
pub(super) fn words_before(text: &str, at: usize, window: usize) -> &str {
    let mut from = at.saturating_sub(window);
    while !text.is_char_boundary(from) {
        from += 1;
    }
    let before = &text[from..at];
    match before.rfind('\n') {
        Some(newline) => &before[newline + 1..],
        None => before,
    }
}

/// The text of each span, for the detectors' tests.
#[cfg(test)]
pub(super) fn slices(text: &str, spans: Vec<(usize, usize)>) -> Vec<&str> {
    spans.into_iter().map(|(start, end)| &text[start..end]).collect()
}
