//! Is a model's reply an answer? Small models often reply with nothing, with bare citation
//! markers (`[1] [2]`), with a frame and no content ("The answer to your question is:"), with the
//! question said again, or with words the passages do not contain. Such a reply must not be
//! reported `ok`: the generate stage answers from the passages instead (`extractive`) or says the
//! answer is `low_confidence`, and the audit event records why.

use std::collections::HashSet;
use std::sync::LazyLock;

use regex::Regex;

/// Why a reply is not an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NonAnswer {
    /// Nothing but whitespace, punctuation and citation markers.
    Empty,
    /// A frame ("The answer is:", "According to the documents") with no content in it.
    NoContent,
    /// Only words of the question.
    RestatesTheQuestion,
    /// A list of the passages' markers and titles (`[1] (leave policy) Leave Policy`), as the
    /// prompt shows them, instead of an answer.
    ListsSources,
    /// Nothing in it comes from the passages, or most of its words are in neither the passages
    /// nor the question.
    Unsupported { supported_share: u32 },
}

impl NonAnswer {
    /// The reason given in the answer and the audit event.
    pub fn reason(&self) -> String {
        match self {
            NonAnswer::Empty => "the model's reply was empty or only citation markers".to_owned(),
            NonAnswer::NoContent => {
                "the model's reply had no content (only a frame such as \"The answer is:\")".to_owned()
            }
            NonAnswer::RestatesTheQuestion => "the model's reply only restated the question".to_owned(),
            NonAnswer::ListsSources => "the model's reply only listed the sources".to_owned(),
            NonAnswer::Unsupported { supported_share } => {
                format!(
                    "the model's reply is not supported by the passages ({supported_share}% of its words are in them)"
                )
            }
        }
    }
}

/// A pattern written in this module: a typo in one is a bug the unit tests catch, not input.
pub(super) fn pattern(source: &str) -> Regex {
    Regex::new(source).expect("a valid pattern")
}

static CITATION: LazyLock<Regex> = LazyLock::new(|| pattern(r"\[\s*\d+(?:\s*[,\-–]\s*\d+)*\s*\]"));
/// Phrases that frame an answer without being one.
static FRAME: LazyLock<Regex> = LazyLock::new(|| {
    pattern(
        r"(?i)\b(?:the\s+)?(?:short\s+)?answer(?:\s+to\s+(?:your|the|this)\s+question)?(?:\s+is)?|according\s+to\s+the\s+(?:documents|passages|context|sources)|based\s+on\s+the\s+(?:documents|passages|context|sources)|(?:the\s+)?(?:documents|passages|context)\s+(?:say|says|state|states)|corrected|question|here\s+is|i\s+(?:think|believe)|(?:^|\s)\d+\.\s",
    )
});
static LIST_NUMBER: LazyLock<Regex> = LazyLock::new(|| pattern(r"\b\d{1,2}[.)](?:\s|$)"));
static WORD: LazyLock<Regex> = LazyLock::new(|| pattern(r"\[[A-Z_]+_\d+\]|[\p{L}\p{N}]+"));

const STOPWORDS: &[&str] = &[
    "the", "a", "an", "and", "or", "but", "of", "to", "in", "on", "at", "for", "with", "by", "from", "is", "are",
    "was", "were", "be", "been", "it", "its", "this", "that", "these", "those", "as", "if", "then", "than", "so", "do",
    "does", "did", "can", "could", "will", "would", "should", "may", "might", "must", "you", "your", "we", "our",
    "they", "their", "he", "she", "his", "her", "i", "my", "me", "what", "which", "who", "whom", "when", "where",
    "why", "how", "there", "here", "not", "no", "yes", "also", "all", "any", "each", "some", "about", "into", "over",
    "after", "before", "per", "up", "out", "has", "have", "had", "one", "them", "us", "him", "few", "get", "gets",
];

/// Content words (lower case; placeholders as written; numbers kept).
pub(crate) fn content_words(text: &str) -> Vec<String> {
    WORD.find_iter(text)
        .map(|m| m.as_str().to_lowercase())
        .filter(|w| {
            !STOPWORDS.contains(&w.as_str()) && (w.chars().count() > 1 || w.chars().all(|c| c.is_ascii_digit()))
        })
        .collect()
}

/// A crude stem, so `refunds`/`refund`, `approves`/`approved` meet.
pub(crate) fn stem(word: &str) -> &str {
    for suffix in ["ing", "ed", "es", "s"] {
        if word.len() > suffix.len() + 3 {
            if let Some(stripped) = word.strip_suffix(suffix) {
                return stripped;
            }
        }
    }
    word
}

/// At least this share of an answer's content words must appear in the passages or the question.
const SUPPORTED_SHARE: f64 = 0.3;

/// Judges `reply` to `question` over `passages`: `None` when it is an answer.
pub fn judge(reply: &str, question: &str, passages: &[&str]) -> Option<NonAnswer> {
    let without_citations = CITATION.replace_all(reply, " ");
    // `1. [1] 2. [2]`: list numbers around the markers are no content either.
    let numbers = LIST_NUMBER.find_iter(&without_citations).count();
    let bare = if numbers >= 2 {
        LIST_NUMBER.replace_all(&without_citations, " ")
    } else {
        without_citations.clone()
    };
    if !bare.chars().any(char::is_alphanumeric) {
        return Some(NonAnswer::Empty);
    }
    if lists_sources(reply) {
        return Some(NonAnswer::ListsSources);
    }
    let content = content_words(&FRAME.replace_all(&without_citations, " "));
    if content.is_empty() {
        return Some(NonAnswer::NoContent);
    }
    let question_words: HashSet<String> = content_words(question).iter().map(|w| stem(w).to_owned()).collect();
    let passage_words: HashSet<String> = passages
        .iter()
        .flat_map(|p| content_words(p))
        .map(|w| stem(&w).to_owned())
        .collect();
    let stems: Vec<&str> = content.iter().map(|w| stem(w)).collect();
    let new_from_passages = stems
        .iter()
        .filter(|w| passage_words.contains(**w) && !question_words.contains(**w))
        .count();
    let supported = stems
        .iter()
        .filter(|w| passage_words.contains(**w) || question_words.contains(**w))
        .count();
    let share = supported as f64 / stems.len() as f64;
    // An answer brings at least one word of the passages that the question did not have: the
    // asker's own words, placeholders included (`I'm [PERSON_1] and I'm a customer of
    // [PERSON_1]`), answer nothing.
    if new_from_passages == 0 {
        return Some(if stems.iter().all(|w| question_words.contains(*w)) {
            NonAnswer::RestatesTheQuestion
        } else {
            NonAnswer::Unsupported {
                supported_share: (share * 100.0).round() as u32,
            }
        });
    }
    if share < SUPPORTED_SHARE {
        return Some(NonAnswer::Unsupported {
            supported_share: (share * 100.0).round() as u32,
        });
    }
    None
}

/// Most lines open with a citation marker followed by a few words (a title), the way the
/// prompt lists the passages; an answer's markers follow its statements (`… 30 days [1]`).
fn lists_sources(reply: &str) -> bool {
    static SOURCE_LINE: LazyLock<Regex> = LazyLock::new(|| pattern(r"^\s*(?:\d{1,2}[.)]\s*)?\[\s*\d+\s*\]"));
    let lines: Vec<&str> = reply.lines().filter(|line| !line.trim().is_empty()).collect();
    let listing = lines
        .iter()
        .filter(|line| SOURCE_LINE.is_match(line) && content_words(&CITATION.replace_all(line, " ")).len() <= 6)
        .count();
    lines.len() >= 2 && listing * 5 >= lines.len() * 4
}

/// The passages (0-based, best first, at most three) that share the most content words with an
/// answer that cites none: what it rests on, so the asker sees its sources.
pub fn supporting_passages(reply: &str, passages: &[&str]) -> Vec<usize> {
    let answer: HashSet<String> = content_words(reply).iter().map(|w| stem(w).to_owned()).collect();
    let mut shared: Vec<(usize, usize)> = passages
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let words: HashSet<String> = content_words(p).iter().map(|w| stem(w).to_owned()).collect();
            (i, answer.intersection(&words).count())
        })
        .filter(|&(_, n)| n > 0)
        .collect();
    shared.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    shared.into_iter().take(3).map(|(i, _)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSAGES: [&str; 2] = [
        "Refunds are accepted within 30 days of delivery when the item is unused.",
        "Passwords must be at least 14 characters long and are rotated every 90 days.",
    ];

    #[test]
    fn an_answer_without_markers_rests_on_the_passages_it_shares_words_with() {
        assert_eq!(supporting_passages("Passwords need 14 characters.", &PASSAGES), vec![1]);
        assert!(supporting_passages("Nothing related.", &PASSAGES).is_empty());
    }

    #[test]
    fn answers_pass() {
        for reply in [
            "Refunds are accepted within 30 days of delivery [1].",
            "At least 14 characters [2].",
            "14",
            "Yes: unused items can be refunded within 30 days [1].",
            "[PERSON_1] can get a refund within 30 days [1].",
            "- Refunds: within 30 days [1]\n- Passwords: 14 characters [2]",
        ] {
            assert_eq!(
                judge(reply, "How long do I have to return an item?", &PASSAGES),
                None,
                "{reply}"
            );
        }
    }

    #[test]
    fn non_answers_are_caught() {
        let question = "How long must a password be?";
        for (reply, expected) in [
            ("", NonAnswer::Empty),
            ("  [1] [2]  ", NonAnswer::Empty),
            ("1. [1] 2. [2] 3. [3] 4. [4]", NonAnswer::Empty),
            ("The answer to your question is:", NonAnswer::NoContent),
            ("The answer to the question", NonAnswer::NoContent),
            ("How long must a password be?", NonAnswer::RestatesTheQuestion),
            (
                "1. [1] (returns) Returns Policy\n2. [2] (security policy) Security Policy\n\n[3] (Pay",
                NonAnswer::ListsSources,
            ),
            ("A password must be long.", NonAnswer::RestatesTheQuestion),
        ] {
            assert_eq!(judge(reply, question, &PASSAGES), Some(expected), "{reply:?}");
        }
        for reply in [
            "Bananas ripen quickly in tropical climates.",
            "[PERSON_1] (2023-01-01)\n\nI'm [PERSON_1] and I'm a customer of [PERSON_1] at [PERSON",
        ] {
            let question = "I am [PERSON_1]. How long must a password be?";
            assert!(
                matches!(judge(reply, question, &PASSAGES), Some(NonAnswer::Unsupported { .. })),
                "{reply}"
            );
        }
    }
}
