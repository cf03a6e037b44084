//! The answer without a model: the sentence of the retrieved passages that answers the
//! question best, with its citation. Used when no model is configured, when every model
//! failed, and when a model's reply is not an answer (`grounding`).
//!
//! A sentence scores by the question's content words it contains, each weighted by how rare it
//! is among the passages' sentences (a word every sentence has says nothing), with a bonus for
//! a figure when the question asks for one (`how many`, `how long`, `what is the maximum`) and
//! a small preference for the better-ranked passage. When no sentence shares a word with the
//! question, the best passages are the answer, as before.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use regex::Regex;

use super::grounding::{content_words, pattern, stem};
use super::prompt::{citation, numbered};
use super::Passage;
use crate::contracts::Citation;

/// Questions whose answer is a figure: an amount, a duration, a count, a limit, a date or a time.
static ASKS_FOR_A_FIGURE: LazyLock<Regex> = LazyLock::new(|| {
    pattern(
        r"(?i)\b(?:how (?:many|much|long|often|far|old|large|big|fast|quickly|soon)|what (?:is|are) the (?:maximum|minimum|max|min|limit|cost|price|rate|fee|amount|number|percentage|share)|within how|what percentage|the (?:longest|shortest|earliest|latest))\b",
    )
});
/// The question asks for an amount, a duration, a count or a limit.
fn asks_for_a_figure(question: &str) -> bool {
    ASKS_FOR_A_FIGURE.is_match(question) || FIGURE_KINDS.date_or_time.asked_by.is_match(question)
}

/// The kind of figure a question asks for, when its words say: a sentence with a figure of
/// that kind answers it better than one with any number (`within 10 seconds` answers `how
/// quickly`, `HMAC-SHA256` does not).
struct FigureKind {
    /// The question's words that ask for this kind.
    asked_by: Regex,
    /// A figure of this kind in a sentence.
    figure: Regex,
}

struct FigureKinds {
    duration: FigureKind,
    date_or_time: FigureKind,
    money: FigureKind,
}

impl FigureKinds {
    /// In the order they are tried: `how long until payday` asks for a duration, not a date,
    /// and `when is the fee due` for a date, not an amount.
    fn in_order(&self) -> [&FigureKind; 3] {
        [&self.duration, &self.date_or_time, &self.money]
    }
}

static FIGURE_KINDS: LazyLock<FigureKinds> = LazyLock::new(|| {
    let duration = FigureKind {
        asked_by: pattern(
            r"(?i)\b(?:how (?:long|quickly|soon|fast|old|often|far back)|within how|the (?:longest|shortest)|how many (?:seconds|minutes|hours|days|weeks|months|years))\b",
        ),
        figure: pattern(
            r"(?i)\d\s*(?:-\s*)?(?:business\s+|calendar\s+|working\s+)?(?:seconds?|secs?|minutes?|mins?|hours?|hrs?|days?|weeks?|months?|years?)\b",
        ),
    };
    let date_or_time = FigureKind {
        asked_by: pattern(
            r"(?i)\b(?:(?:until|by|before|on|from) (?:when|what (?:date|time|day))|what (?:date|time|day)|^\s*when)\b",
        ),
        figure: pattern(
            r"(?i)\b(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:tember)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?|monday|tuesday|wednesday|thursday|friday|saturday|sunday)s?\b|\b\d{1,2}:\d{2}\b|\b\d{1,2}\s?(?:am|pm)\b|\b\d{4}-\d{2}-\d{2}\b",
        ),
    };
    let money = FigureKind {
        asked_by: pattern(r"(?i)\b(?:how much|cost|price|fee|charge|pay|budget|allowance|salary)\b"),
        figure: pattern(r"(?i)[$€£]\s?\d|\d\s?(?:usd|eur|gbp|dollars?|euros?|pounds?)\b|\d\s?%"),
    };
    FigureKinds {
        duration,
        date_or_time,
        money,
    }
});

impl FigureKind {
    /// The kind `question` asks for, if its words say.
    fn asked_in(question: &str) -> Option<&'static Self> {
        FIGURE_KINDS
            .in_order()
            .into_iter()
            .find(|kind| kind.asked_by.is_match(question))
    }

    fn is_in(&self, text: &str) -> bool {
        self.figure.is_match(text)
    }
}

/// `how long`, `how much`: what kind of answer is asked for, not what it is about (`long` is in
/// no passage about a probation period).
static INTERROGATIVE: LazyLock<Regex> =
    LazyLock::new(|| pattern(r"(?i)\bhow (?:long|much|many|often|far|old|large|big|fast|quickly|soon|late|early)\b"));

/// `outside the high-cost cities`, `except contractors`: what a question sets aside does not
/// make a sentence an answer (the sentence about the high-cost cities is the one not asked
/// for), and a sentence is not about what it sets aside (`Outside open enrolment you may …`).
/// The two words after the word that sets aside (and an article) are what is set aside.
static EXCLUDED: LazyLock<Regex> = LazyLock::new(|| {
    pattern(
        r"(?i)\b(?:outside(?: of)?|except(?: for)?|other than|apart from|excluding|besides)\s+(?:(?:the|a|an)\s+)?[^\s,.;:?!]+(?:\s+[^\s,.;:?!]+)?",
    )
});

/// A question about what happens under a condition (`what if`, `unless`): then the condition
/// of a sentence is what it asks about.
static ASKS_ABOUT_A_CONDITION: LazyLock<Regex> =
    LazyLock::new(|| pattern(r"(?i)\b(?:if|unless|what happens|otherwise|in case)\b"));
/// A sentence that opens with its condition: `If the engineer does not acknowledge …, X`.
static LEADING_CONDITION: LazyLock<Regex> = LazyLock::new(|| pattern(r"(?i)^(?:if|unless|when|should)\b[^,;:]+,"));

static FIGURE: LazyLock<Regex> = LazyLock::new(|| pattern(r"\d"));
/// Emphasis and code marks, dropped from a sentence.
static MARKS: LazyLock<Regex> = LazyLock::new(|| pattern(r"\*\*|__|`"));
/// What starts a block of its own: a list item or a heading.
static BLOCK_START: LazyLock<Regex> = LazyLock::new(|| pattern(r"^\s*(?:[-*+•]|\d{1,2}[.)])\s+"));
static TABLE_SEPARATOR: LazyLock<Regex> = LazyLock::new(|| pattern(r"^[\s|:\-]+$"));

/// One sentence of a passage and the passage's position (1-based, as cited).
struct Sentence {
    text: String,
    passage: usize,
    words: HashSet<String>,
    /// Words of the heading it stands under that it does not say itself (a table row under
    /// `Rate limits per plan`).
    heading_words: HashSet<String>,
    /// It continues the paragraph or list item of the sentence before it.
    follows: bool,
    /// Words it names only to set them aside (`outside open enrolment`).
    set_aside: HashSet<String>,
    /// Words only its leading condition says (`If …,`): what it answers is what happens then.
    condition_words: HashSet<String>,
    /// Words of the key cell of a table row (`SEV1`, `Enterprise`): the row a question names.
    key_words: HashSet<String>,
}

/// A sentence as read from a passage, before scoring.
struct Piece {
    text: String,
    /// The heading it stands under.
    heading: String,
    /// It continues the paragraph or list item of the sentence before it.
    follows: bool,
    /// The first cell of a table row.
    key: Option<String>,
}

/// Sentences of a paragraph: split where `.`, `!` or `?` is followed by a space and a capital
/// or a digit.
fn split_sentences(paragraph: &str, into: &mut Vec<String>) {
    let chars: Vec<(usize, char)> = paragraph.char_indices().collect();
    let mut start = 0;
    for (i, &(at, c)) in chars.iter().enumerate() {
        let ends = matches!(c, '.' | '!' | '?')
            && chars.get(i + 1).is_some_and(|&(_, next)| next == ' ')
            && chars
                .get(i + 2)
                .is_some_and(|&(_, next)| next.is_uppercase() || next.is_ascii_digit());
        if ends {
            into.push(paragraph[start..at + 1].trim().to_owned());
            start = at + 1;
        }
    }
    into.push(paragraph[start..].trim().to_owned());
}

/// `API Authentication > OAuth 2.0 client credentials`: the section path a chunk opens with.
fn is_heading_path(line: &str) -> bool {
    line.contains(" > ") && !line.ends_with(['.', '!', '?', ':']) && line.split_whitespace().count() <= 16
}

/// The sentences of a passage's text, each with the heading it stands under: paragraphs
/// (soft-wrapped lines joined), list items, and table rows read with their header (`Plan:
/// Enterprise; Monthly uptime: 99.95%`). Headings and the passage's title line are not
/// sentences.
fn sentences(text: &str, title: Option<&str>) -> Vec<Piece> {
    let mut found: Vec<Piece> = Vec::new();
    let mut paragraph = String::new();
    let mut header: Option<Vec<String>> = None;
    let mut heading = String::new();
    let flush = |paragraph: &mut String, found: &mut Vec<Piece>, heading: &str| {
        if !paragraph.trim().is_empty() {
            let mut split = Vec::new();
            split_sentences(paragraph.trim(), &mut split);
            found.extend(split.into_iter().enumerate().map(|(i, text)| Piece {
                text,
                heading: heading.to_owned(),
                follows: i > 0,
                key: None,
            }));
        }
        paragraph.clear();
    };
    for line in text.lines() {
        let line = MARKS.replace_all(line, "");
        let trimmed = line.trim();
        if !trimmed.starts_with('|') {
            header = None;
        }
        if trimmed.starts_with('#') || is_heading_path(trimmed) {
            flush(&mut paragraph, &mut found, &heading);
            heading = trimmed.trim_start_matches('#').trim().to_owned();
        } else if trimmed.is_empty() || Some(trimmed) == title {
            flush(&mut paragraph, &mut found, &heading);
        } else if trimmed.starts_with('|') {
            flush(&mut paragraph, &mut found, &heading);
            let cells: Vec<String> = trimmed
                .trim_matches('|')
                .split('|')
                .map(|cell| cell.trim().to_owned())
                .collect();
            if TABLE_SEPARATOR.is_match(trimmed) {
                continue;
            }
            match &header {
                None => header = Some(cells),
                Some(names) => {
                    let row: Vec<String> = names
                        .iter()
                        .zip(&cells)
                        .filter(|(_, cell)| !cell.is_empty())
                        .map(|(name, cell)| {
                            if name.is_empty() {
                                cell.clone()
                            } else {
                                format!("{name}: {cell}")
                            }
                        })
                        .collect();
                    found.push(Piece {
                        text: row.join("; "),
                        heading: heading.clone(),
                        follows: false,
                        key: cells.first().filter(|cell| !cell.is_empty()).cloned(),
                    });
                }
            }
        } else if BLOCK_START.is_match(trimmed) {
            flush(&mut paragraph, &mut found, &heading);
            paragraph.push_str(&BLOCK_START.replace(trimmed, ""));
        } else {
            if !paragraph.is_empty() {
                paragraph.push(' ');
            }
            paragraph.push_str(trimmed);
        }
    }
    flush(&mut paragraph, &mut found, &heading);
    found
        .into_iter()
        .map(|piece| Piece {
            text: piece
                .text
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .replace(" .", "."),
            ..piece
        })
        .filter(|piece| piece.text.split_whitespace().count() >= 3)
        .collect()
}

fn stems(text: &str) -> HashSet<String> {
    content_words(text)
        .iter()
        .map(|w| {
            let stemmed = stem(w);
            same_sense(stemmed).unwrap_or(stemmed).to_owned()
        })
        .collect()
}

/// The same word, or two words that share their first five letters (`probation`, `probationary`).
fn same_start(a: &str, b: &str) -> bool {
    a == b || a.chars().count() >= 5 && b.chars().count() >= 5 && a.chars().take(5).eq(b.chars().take(5))
}

/// Words that ask for the same thing in policy and product documents, read as one (`What does
/// the Pro plan cost?` is answered by `Price: $99 per month`; `the maximum` by `the cap`).
fn same_sense(word: &str) -> Option<&'static str> {
    Some(match word {
        "price" | "cost" | "fee" | "charge" | "charg" => "cost",
        "maximum" | "max" | "cap" | "capp" | "limit" | "limited" | "most" | "longest" | "highest" | "heaviest" => {
            "maximum"
        }
        "minimum" | "min" | "least" | "shortest" | "lowest" => "minimum",
        "kept" | "keep" | "retain" | "retention" | "stor" | "store" => "keep",
        "valid" | "validity" | "expire" | "expir" | "expiry" => "valid",
        // A measure and the adjective it is named after: `the minimum length` is asked of
        // `at least 14 characters long`, `how heavy` answered by `a weight of 50 lb`.
        "length" | "long" => "long",
        "weight" | "weigh" | "heavy" => "weight",
        "width" | "wide" => "wide",
        "depth" | "deep" => "deep",
        "speed" | "fast" => "speed",
        _ => return None,
    })
}

/// Placeholders of masked personal data (`[PERSON_1]`): the asker's, not what is asked about.
static PLACEHOLDER: LazyLock<Regex> = LazyLock::new(|| pattern(r"\[[A-Z_]+_\d+\]"));
static TOKEN: LazyLock<Regex> = LazyLock::new(|| pattern(r"[\p{L}\p{N}][\p{L}\p{N}'’-]*"));
/// A yes/no question about whether something exists or is offered: what follows the verb is
/// what it asks about (`Does Acme offer pet insurance …?`, `Is there a discount for …?`).
static ASKS_WHETHER_THERE_IS: LazyLock<Regex> = LazyLock::new(|| {
    pattern(
        r"(?i)^\s*(?:does|do|is|are|can|could|will|would|has|have)\b.*?\b(?:offer|offers|provide|provides|have|has|support|supports|include|includes|cover|covers|there)\s+(?:(?:is|are)\s+)?(?:(?:a|an|any|the|some)\s+)?(?P<focus>[\p{L}\p{N}'’-]+(?:\s+[\p{L}\p{N}'’-]+){0,2}?)(?:\s+(?:for|as|on|in|at|to|with|from|of|when|if|after|during|per|that|which|and|or)\b|\s*[?,.;]|\s*$)",
    )
});
/// `What is the dress code for …`: the thing whose value is asked for.
static ASKS_WHAT_THE_THING_IS: LazyLock<Regex> = LazyLock::new(|| {
    pattern(
        r"(?i)^\s*what(?:'s|’s|\s+is|\s+are)\s+(?:the|my|our|your|a|an)\s+(?P<focus>[\p{L}\p{N}'’-]+(?:\s+[\p{L}\p{N}'’-]+){0,2}?)(?:\s+(?:of|for|at|in|on|when|if|per|to|that|which|do|does|is|are|i|we|you)\b|\s*[?,.;]|\s*$)",
    )
});

/// `the actual amount`, `the exact date`: words that qualify the thing asked about, not name it.
#[rustfmt::skip]
const QUALIFIERS: [&str; 16] = [
    "actual", "exact", "current", "usual", "typical", "real", "full", "whole", "entire", "overall", "precise",
    "normal", "standard", "official", "general", "specific",
];

/// `the number of hours`, `the amount of`, `the latest time`: words that ask for a value of the
/// thing, not the thing.
#[rustfmt::skip]
const MEASURE_WORDS: [&str; 20] = [
    "number", "amount", "total", "kind", "type", "sort", "level", "part", "name", "list", "percentage", "share",
    "time", "date", "day", "hour", "minute", "week", "month", "year",
];

/// A word that asks for a value of the thing: a measure (`number`, `time`) or a superlative
/// (`latest`, `cheapest`).
fn asks_for_a_value(word: &str) -> bool {
    MEASURE_WORDS.contains(&word) || word.chars().count() >= 6 && word.ends_with("est")
}

/// Words of the passages as written (lower case), titles included.
fn passage_tokens(passages: &[Passage]) -> HashSet<String> {
    passages
        .iter()
        .flat_map(|p| [p.text.as_str(), p.title.as_deref().unwrap_or("")])
        .flat_map(|text| TOKEN.find_iter(text).map(|m| m.as_str().to_lowercase()))
        .collect()
}

/// Some word of the passages is `word` (stems meet), its plural, a word of the same sense, or shares
/// its first five letters.
fn mentioned(word: &str, tokens: &HashSet<String>) -> bool {
    // `Acme's`, `Logistics'`: the word before its apostrophe.
    let word = word.split(['\'', '’']).next().unwrap_or(word).to_lowercase();
    let word = stem(&word);
    let sense = same_sense(word);
    tokens.iter().any(|token| {
        let token = stem(token);
        token == word
            || same_start(token, word)
            || token.strip_suffix('s') == Some(word)
            || sense.is_some() && same_sense(token) == sense
    })
}

/// The sentences of `question` that ask (those ending in `?`), or all of it when none does:
/// what the asker tells of themselves or their situation (`I'm the CTO of …`, `I left my laptop
/// on the bus.`) is context, not what they ask about.
fn asking_sentences(question: &str) -> Vec<&str> {
    let sentences: Vec<&str> = question
        .split_inclusive(['?', '.', '!'])
        .map(|sentence| sentence.trim_start_matches(|c: char| !c.is_alphanumeric()))
        .collect();
    if sentences.iter().any(|s| s.trim_end().ends_with('?')) {
        sentences.into_iter().filter(|s| s.trim_end().ends_with('?')).collect()
    } else {
        sentences
    }
}

/// What `question` names or asks about that no passage mentions: a capitalised word inside a
/// sentence or a word in capitals (`Toronto`, `GPU`), and the thing a `Does … offer X?` or
/// `What is the X of …?` question asks about (`pet` in `pet insurance`). Qualifiers ending in
/// `-ly` (`yearly`, `daily`) are not the thing.
fn unmentioned_focus(question: &str, tokens: &HashSet<String>) -> Option<String> {
    let question = PLACEHOLDER.replace_all(question, " ");
    for sentence in asking_sentences(&question) {
        let mut last_end = 0;
        for token in TOKEN.find_iter(sentence) {
            let sentence_start = last_end == 0 || sentence[last_end..token.start()].contains([':', ';']);
            last_end = token.end();
            let word = token.as_str();
            let letters = word.chars().filter(|c| c.is_alphabetic()).count();
            let capitals = word.chars().filter(|c| c.is_uppercase()).count();
            let names = !word.chars().any(|c| c.is_ascii_digit())
                && word.chars().next().is_some_and(char::is_uppercase)
                && letters >= 3
                && (capitals >= 2 && capitals == letters || !sentence_start)
                && !word.starts_with("I'")
                && !word.starts_with("I’")
                // `URLs`, `APIs`: a plural is a common noun, not a name.
                && !(capitals >= 2 && capitals + 1 == letters && word.ends_with('s'));
            if names && !mentioned(word, tokens) {
                return Some(word.to_owned());
            }
        }
        for pattern in [&ASKS_WHETHER_THERE_IS, &ASKS_WHAT_THE_THING_IS] {
            let Some(focus) = pattern.captures(sentence).and_then(|c| c.name("focus")) else {
                continue;
            };
            let absent = content_words(focus.as_str())
                .into_iter()
                .filter(|w| {
                    w.chars().count() >= 3
                        && !w.ends_with("ly")
                        && !QUALIFIERS.contains(&w.as_str())
                        && !w.chars().any(|c| c.is_ascii_digit())
                })
                .find(|w| same_sense(stem(w)).is_none() && !asks_for_a_value(w) && !mentioned(w, tokens));
            if absent.is_some() {
                return absent;
            }
        }
    }
    None
}

/// The words `question` asks with: not how it asks (`how long`), not what it sets aside
/// (`outside the high-cost cities`), not the asker's own masked data (`[PERSON_1]`).
fn asked_words(question: &str) -> HashSet<String> {
    stems(&EXCLUDED.replace_all(&INTERROGATIVE.replace_all(question, " "), " "))
        .into_iter()
        .filter(|w| !w.starts_with('['))
        .collect()
}

/// What the passages say to a question.
#[derive(Debug, Clone, PartialEq)]
pub enum Extracted {
    /// The sentences that answer it, each group followed by its citation marker.
    Answer(String, Vec<Citation>),
    /// Words the question turns on are in none of the passages and the best sentence covers
    /// little of it, or the passages never mention what it names or asks about: the documents
    /// do not answer it (`no_context`).
    NotInPassages,
    /// No sentence shares a word with the question: the best passages, listed.
    Passages(String, Vec<Citation>),
}

/// A question word in the heading a sentence stands under counts this much of one in the sentence.
const HEADING_WEIGHT: f64 = 0.5;
/// What a figure adds to a sentence when the question asks for one.
const FIGURE_BONUS: f64 = 1.5;
/// The share of it a figure of another kind than the one asked for adds.
const WRONG_KIND_SHARE: f64 = 1.0 / 3.0;
/// A question word only a sentence's leading condition says counts this much of one.
const CONDITION_WEIGHT: f64 = 0.5;
/// A runner-up sentence joins the answer when it scores at least this share of the best.
const RUNNER_UP_SHARE: f64 = 0.75;
/// Cosine similarity below which a sentence is no closer in meaning to a question than any text
/// of the same domain (all-MiniLM-L6-v2 gives unrelated policy sentences 0.0 to 0.2).
const MEANING_FLOOR: f32 = 0.2;
/// What a sentence gains per unit of similarity above the floor: at 0.8 (a close paraphrase)
/// it gains 3, about what one rare word shared with the question gives. Chosen on the tuning
/// sets (`corpus/qa-benchmark.jsonl`, `corpus/qa-dev.jsonl`): 0.2/5 answered 85 of their 110
/// answerable questions, 0.3/10 and 0.3/5 84, 0.4/10 82, no model 82.
const MEANING_WEIGHT: f64 = 5.0;
/// Cosine similarity at which a sentence says what the question asks in other words.
const MEANING_ANSWERS: f32 = 0.5;
/// Below this share of the question's weight, with more than half of its words (two at least) in
/// no passage, the passages do not answer it.
const MIN_COVERAGE: f64 = 0.5;

/// What the sentences of the passages say to a question, before it is written out.
enum Choice {
    /// The sentences that answer it, in passage order.
    Sentences(Vec<Sentence>),
    /// The question turns on words the passages lack (only when refusing is allowed).
    NotInPassages,
    /// No sentence shares a word with the question.
    NothingShared,
}

/// The sentences that answer `question` best, in passage order: the best one, a runner-up
/// close to it, and what follows a sentence that ends in `:` (the list it introduces).
fn choose(question: &str, passages: &[Passage], may_refuse: bool, meaning: Option<&Meaning>) -> Choice {
    // `How much to Toronto?` over passages that never say Toronto: whatever they say about
    // prices answers another question.
    if may_refuse {
        if let Some(focus) = unmentioned_focus(question, &passage_tokens(passages)) {
            tracing::debug!(question, focus, "extractive: refused, the focus is in no passage");
            return Choice::NotInPassages;
        }
    }
    let asked = asked_words(question);
    let wants_figure = asks_for_a_figure(question);
    let figure_kind = FigureKind::asked_in(question);
    let all: Vec<Sentence> = passages
        .iter()
        .enumerate()
        .flat_map(|(index, passage)| {
            sentences(&passage.text, passage.title.as_deref())
                .into_iter()
                .map(move |piece| {
                    let words = stems(&piece.text);
                    // `Outside open enrolment you may change …` is not about open enrolment.
                    let set_aside_words: HashSet<String> = EXCLUDED
                        .find_iter(&piece.text)
                        .flat_map(|m| stems(m.as_str()))
                        .collect();
                    let set_aside = set_aside_words
                        .difference(&stems(&EXCLUDED.replace_all(&piece.text, " ")))
                        .cloned()
                        .collect();
                    let condition_words = match LEADING_CONDITION.find(&piece.text) {
                        Some(condition) => stems(condition.as_str())
                            .difference(&stems(&piece.text[condition.end()..]))
                            .cloned()
                            .collect(),
                        None => HashSet::new(),
                    };
                    Sentence {
                        heading_words: stems(&piece.heading).difference(&words).cloned().collect(),
                        key_words: piece.key.as_deref().map(stems).unwrap_or_default(),
                        words,
                        set_aside,
                        condition_words,
                        text: piece.text,
                        passage: index + 1,
                        follows: piece.follows,
                    }
                })
        })
        .collect();
    let mut document_frequency: HashMap<&str, usize> = HashMap::new();
    for sentence in &all {
        for word in &sentence.words {
            *document_frequency.entry(word.as_str()).or_default() += 1;
        }
    }
    let n = all.len() as f64;
    let rarity = |word: &str| (1.0 + n / (1.0 + document_frequency.get(word).copied().unwrap_or(0) as f64)).ln();
    let about_a_condition = ASKS_ABOUT_A_CONDITION.is_match(question);
    let shared = |sentence: &Sentence| -> f64 {
        asked
            .iter()
            .filter(|w| sentence.words.contains(*w) && !sentence.set_aside.contains(*w))
            .map(|w| {
                // A word only the sentence's condition says counts half: `If the engineer does
                // not acknowledge the page in 10 minutes, …` says what happens then, not how
                // soon to acknowledge.
                let in_condition = !about_a_condition && sentence.condition_words.contains(w);
                if in_condition {
                    CONDITION_WEIGHT * rarity(w)
                } else {
                    rarity(w)
                }
            })
            .sum()
    };
    // The question names the row (`SEV1`, `On Enterprise`): its key counts again.
    let names_the_row = |sentence: &Sentence| -> f64 {
        let named = !sentence.key_words.is_empty() && sentence.key_words.iter().all(|w| asked.contains(w));
        if named {
            sentence.key_words.iter().map(|w| rarity(w)).sum()
        } else {
            0.0
        }
    };
    let under_heading = |sentence: &Sentence| -> f64 {
        asked
            .iter()
            .filter(|w| sentence.heading_words.contains(*w))
            .map(|w| HEADING_WEIGHT * rarity(w))
            .sum()
    };
    let score = |sentence: &Sentence| {
        let shared = shared(sentence);
        if shared == 0.0 {
            return 0.0;
        }
        let shared = shared + under_heading(sentence) + names_the_row(sentence);
        let figure = match figure_kind {
            _ if !wants_figure || !FIGURE.is_match(&sentence.text) => 0.0,
            Some(kind) if !kind.is_in(&sentence.text) => FIGURE_BONUS * WRONG_KIND_SHARE,
            _ => FIGURE_BONUS,
        };
        (shared + figure) * (1.0 - 0.05 * (sentence.passage - 1) as f64)
    };
    // How close each sentence is to the question in meaning, where a model can tell: it finds
    // the answer a user words differently from the documents (`how big is the fleet` for
    // `Acme runs 320 trucks and vans`), which shared words alone miss.
    let texts: Vec<&str> = all.iter().map(|s| s.text.as_str()).collect();
    let asked_text = PLACEHOLDER.replace_all(question, " ");
    let similarities: Vec<f32> = meaning
        .and_then(|meaning| meaning(&asked_text, &texts))
        .filter(|similarities| similarities.len() == all.len())
        .unwrap_or_else(|| vec![0.0; all.len()]);
    let closeness: Vec<f64> = similarities
        .iter()
        .map(|s| f64::from(s - MEANING_FLOOR).max(0.0) * MEANING_WEIGHT)
        .collect();
    let scores: Vec<f64> = all
        .iter()
        .zip(&closeness)
        .map(|(sentence, close)| {
            let lexical = score(sentence);
            if lexical == 0.0 && *close == 0.0 {
                0.0
            } else {
                lexical + close * (1.0 - 0.05 * (sentence.passage - 1) as f64)
            }
        })
        .collect();
    let best = scores
        .iter()
        .enumerate()
        .filter(|(_, score)| **score > 0.0)
        // On a tie the earlier sentence (the better-ranked passage) wins.
        .max_by(|(i, a), (j, b)| a.total_cmp(b).then(j.cmp(i)))
        .map(|(index, _)| index);
    let Some(best) = best else {
        return Choice::NothingShared;
    };
    // Words of the passages, headings included; `expiry` is in a passage that says `expires`:
    // a shared start of five letters counts.
    let in_passages: HashSet<&str> = document_frequency
        .keys()
        .copied()
        .chain(all.iter().flat_map(|s| s.heading_words.iter().map(String::as_str)))
        .collect();
    // Whether the passages lack what is asked is judged on the asking sentences only: the
    // words of a situation told first (`I left my laptop on the bus this morning.`) are
    // rarely in the documents that answer.
    let asking: HashSet<String> = asked_words(&asking_sentences(question).join(" "));
    let absent = asking
        .iter()
        .filter(|w| w.chars().count() >= 3 && !w.chars().all(|c| c.is_ascii_digit()))
        .filter(|w| !in_passages.iter().any(|word| same_start(word, w)))
        .count();
    let weight: f64 = asking.iter().map(|w| rarity(w)).sum();
    let covered: f64 = asking
        .iter()
        .filter(|w| all[best].words.contains(*w))
        .map(|w| rarity(w))
        .sum();
    // A sentence that says the same in other words answers, whatever words it lacks.
    let close_in_meaning = similarities[best] >= MEANING_ANSWERS;
    if may_refuse && absent >= 2 && 2 * absent > asking.len() && covered < MIN_COVERAGE * weight && !close_in_meaning {
        tracing::debug!(
            question,
            absent,
            best = all[best].text,
            "extractive: refused, the question's words are absent"
        );
        return Choice::NotInPassages;
    }
    tracing::debug!(
        question,
        best = all[best].text,
        score = scores[best],
        similarity = similarities[best],
        "extractive: chosen"
    );
    let mut chosen = vec![best];
    if let Some(runner_up) = scores
        .iter()
        .enumerate()
        .filter(|&(i, score)| i != best && *score >= RUNNER_UP_SHARE * scores[best])
        .max_by(|(i, a), (j, b)| a.total_cmp(b).then(j.cmp(i)))
        .map(|(index, _)| index)
    {
        chosen.push(runner_up);
    }
    // `Same-Day: available only within the Riverton metro area.` answers `how much` only with
    // the rest of its item (`… The flat price is $29.00 per parcel.`).
    if wants_figure && !FIGURE.is_match(&all[best].text) {
        chosen.extend((best + 1..(best + 4).min(all.len())).take_while(|&next| all[next].follows));
    }
    for index in chosen.clone() {
        if all[index].text.ends_with(':') {
            for next in index + 1..(index + 4).min(all.len()) {
                if all[next].passage != all[index].passage {
                    break;
                }
                chosen.push(next);
            }
        }
    }
    chosen.sort_unstable();
    chosen.dedup();
    let mut all: Vec<Option<Sentence>> = all.into_iter().map(Some).collect();
    Choice::Sentences(chosen.into_iter().filter_map(|index| all[index].take()).collect())
}

/// The answer from the passages to `question`: the sentences that answer it with their
/// citations, `NotInPassages` (only when `may_refuse`: the passages are the answerer, not a
/// model's fallback), or the best `max_passages` passages when no sentence shares a
/// word with the question.
pub fn extractive_answer(question: &str, passages: &[Passage], max_passages: usize, may_refuse: bool) -> Extracted {
    extractive_answer_by_meaning(question, passages, max_passages, may_refuse, None)
}

/// How alike in meaning a question and each of some sentences are: cosine similarities of their
/// embeddings, one per sentence, or `None` when they cannot be computed.
pub type Meaning = dyn Fn(&str, &[&str]) -> Option<Vec<f32>> + Send + Sync;

/// [`extractive_answer`] that also ranks sentences by `meaning`, when given.
pub fn extractive_answer_by_meaning(
    question: &str,
    passages: &[Passage],
    max_passages: usize,
    may_refuse: bool,
    meaning: Option<&Meaning>,
) -> Extracted {
    match choose(question, passages, may_refuse, meaning) {
        Choice::Sentences(sentences) => {
            let mut text = String::new();
            let mut cited: Vec<usize> = Vec::new();
            for (i, sentence) in sentences.iter().enumerate() {
                if !text.is_empty() {
                    text.push(' ');
                }
                text.push_str(&sentence.text);
                // One marker after each run of sentences from the same passage.
                if sentences.get(i + 1).is_none_or(|next| next.passage != sentence.passage) {
                    text.push_str(&format!(" [{}]", sentence.passage));
                }
                if !cited.contains(&sentence.passage) {
                    cited.push(sentence.passage);
                }
            }
            let citations = cited.iter().map(|&p| citation(p, &passages[p - 1])).collect();
            Extracted::Answer(text, citations)
        }
        Choice::NotInPassages => Extracted::NotInPassages,
        Choice::NothingShared => {
            let mut text = String::from(
                "No language model answered this question; these are the most relevant passages from your documents:\n",
            );
            let mut citations = Vec::new();
            for (position, passage) in passages.iter().take(max_passages).enumerate() {
                text.push_str(&numbered(position + 1, passage));
                citations.push(citation(position + 1, passage));
            }
            Extracted::Passages(text, citations)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The passages of a question that retrieved one passage.
    fn only(text: &str) -> [Passage; 1] {
        [passage(1, text)]
    }

    fn passage(n: usize, text: &str) -> Passage {
        Passage {
            chunk_id: format!("d{n}:1:0"),
            doc_id: format!("d{n}"),
            title: Some(format!("Doc {n}")),
            text: text.to_owned(),
            score: 0.9 - n as f32 / 100.0,
        }
    }

    /// The text of the passages' answer to `question` (refusing allowed); fails on anything else.
    fn answer_text(question: &str, passages: &[Passage]) -> String {
        match extractive_answer(question, passages, 3, true) {
            Extracted::Answer(text, _) => text,
            other => panic!("no answer to {question:?}: {other:?}"),
        }
    }

    /// What a test expects of the passages' answer to a question.
    #[derive(Debug)]
    enum Expected {
        StartsWith(&'static str),
        Holds(&'static str),
    }
    use Expected::{Holds, StartsWith};

    /// Fails unless the passages' answer to each question is as expected.
    #[track_caller]
    fn assert_answers(passages: &[Passage], cases: &[(&str, Expected)]) {
        for (question, expected) in cases {
            let text = answer_text(question, passages);
            let as_expected = match expected {
                StartsWith(start) => text.starts_with(start),
                Holds(part) => text.contains(part),
            };
            assert!(as_expected, "{question} -> {text} (expected: {expected:?})");
        }
    }

    #[test]
    fn the_sentence_that_answers_with_its_citation() {
        let passages = [
            passage(1, "## Leave\nEmployees get 25 days of annual leave. Carry-over is capped at 5 days."),
            passage(
                2,
                "# Parental leave\n- The primary caregiver gets 16 weeks of paid parental leave. Secondary caregivers get 4 weeks.",
            ),
        ];
        let Extracted::Answer(text, citations) = extractive_answer(
            "How many weeks of paid parental leave does a primary caregiver get?",
            &passages,
            3,
            true,
        ) else {
            panic!("no answer")
        };
        assert_eq!(text, "The primary caregiver gets 16 weeks of paid parental leave. [2]");
        assert_eq!(citations.len(), 1);
        assert_eq!(citations[0].doc_id, "d2");
    }

    #[test]
    fn closeness_in_meaning_finds_the_sentence_a_question_words_differently() {
        let passages = only("Acme was founded in 1987 in Riverton. Acme runs 320 trucks and vans from 14 depots.");
        let question = "How big is our vehicle fleet these days?";
        // Without a model the question shares no word with either sentence.
        assert!(matches!(
            extractive_answer(question, &passages, 3, true),
            Extracted::Passages(..)
        ));
        // A model that finds the second sentence close to the question (as all-MiniLM-L6-v2
        // does, 0.5 against 0.1).
        let meaning = move |asked: &str, sentences: &[&str]| -> Option<Vec<f32>> {
            assert_eq!(asked, question);
            Some(
                sentences
                    .iter()
                    .map(|s| if s.contains("trucks") { 0.5 } else { 0.1 })
                    .collect(),
            )
        };
        let Extracted::Answer(text, _) = extractive_answer_by_meaning(question, &passages, 3, true, Some(&meaning))
        else {
            panic!("no answer");
        };
        assert_eq!(text, "Acme runs 320 trucks and vans from 14 depots. [1]");
    }

    #[test]
    fn a_figure_is_preferred_when_the_question_asks_for_one() {
        let passages =
            only("The on-call engineer acknowledges SEV1 pages. A SEV1 page must be acknowledged within 5 minutes.");
        assert_answers(
            &passages,
            &[(
                "Within how many minutes must a SEV1 page be acknowledged?",
                Holds("A SEV1 page must be acknowledged within 5 minutes."),
            )],
        );
    }

    #[test]
    fn wrapped_lines_are_one_sentence_and_table_rows_keep_their_header() {
        let text = "Service Levels > Uptime\nSLA > Uptime\nThe uptime is measured per region\nand per calendar month. Credits follow.\n\n| Plan | Monthly uptime |\n| --- | --- |\n| Pro | **99.9%** |\n| Enterprise | 99.95% |\n- Support answers **within 4 hours** on\n  business days.";
        let texts: Vec<String> = sentences(text, Some("SLA > Uptime"))
            .into_iter()
            .map(|piece| piece.text)
            .collect();
        assert_eq!(
            texts,
            vec![
                "The uptime is measured per region and per calendar month.",
                "Plan: Pro; Monthly uptime: 99.9%",
                "Plan: Enterprise; Monthly uptime: 99.95%",
                "Support answers within 4 hours on business days.",
            ]
        );
    }

    #[test]
    fn a_table_row_is_read_under_its_heading_and_heading_words_are_in_the_passages() {
        let passages = only("Plans > Support\nThe Pro plan includes priority support and 30 dashboards.\n\n## Backup retention\n\n| Plan | Retention |\n| --- | --- |\n| Pro | 30 days |\n| Free | 7 days |");
        let text = answer_text("How long are backups kept on the Pro plan?", &passages);
        assert!(
            text.starts_with("Plan: Pro; Retention: 30 days") && !text.contains("dashboards"),
            "{text}"
        );
    }

    #[test]
    fn what_the_question_sets_aside_and_the_rest_of_an_item_without_a_figure() {
        let passages = only("- The nightly cap for hotel rooms is $180 per night, including taxes.\n- In designated high-cost cities (New York, Boston) the cap is $250 per night.\n- Same-Day: available only within the Riverton metro area. Orders placed by 11:00 arrive by 20:00. The flat price is $29.00 per parcel.");
        assert_answers(
            &passages,
            &[
                (
                    "What is the maximum hotel cost per night outside the high-cost cities?",
                    StartsWith("The nightly cap for hotel rooms is $180"),
                ),
                (
                    "How much does Same-Day delivery cost in the Riverton metro area?",
                    Holds("$29.00"),
                ),
            ],
        );
    }

    #[test]
    fn the_row_a_question_names_beats_a_sentence_about_what_happens_otherwise() {
        let passages = only("## Severity levels\n\n| Severity | Definition | Acknowledge within |\n| --- | --- | --- |\n| SEV1 | Site down | 5 minutes |\n| SEV2 | Degraded | 15 minutes |\n\nIf the on-call engineer does not acknowledge a SEV1 page within 10 minutes, the pager escalates to the secondary.");
        assert_answers(
            &passages,
            &[
                (
                    "Within how many minutes must the on-call engineer acknowledge a SEV1 page?",
                    StartsWith("Severity: SEV1; Definition: Site down; Acknowledge within: 5 minutes"),
                ),
                (
                    "What happens if the on-call engineer does not acknowledge a SEV1 page?",
                    Holds("escalates to the secondary"),
                ),
            ],
        );
    }

    #[test]
    fn a_sentence_about_the_exception_does_not_answer_the_rule_and_when_asks_for_a_time() {
        let passages = only("- Open enrolment runs every year from November 1 to November 21.\n- Outside open enrolment you may change your benefit elections only after a life event.\n\nThe platform needs a short maintenance window now and then. Maintenance windows are on Sundays from 02:00 to 04:00.");
        assert_answers(
            &passages,
            &[
                (
                    "Until what date can I change my benefit elections during open enrolment?",
                    Holds("November 21"),
                ),
                ("When do maintenance windows take place?", Holds("02:00 to 04:00")),
            ],
        );
    }

    #[test]
    fn without_a_shared_word_the_passages_are_listed() {
        let passages = [passage(1, "Totally unrelated words are here today.")];
        let Extracted::Passages(text, citations) = extractive_answer("parental leave weeks?", &passages, 3, true)
        else {
            panic!("not listed")
        };
        assert!(text.starts_with("No language model answered"), "{text}");
        assert_eq!(citations.len(), 1);
    }

    #[test]
    fn a_list_follows_the_sentence_that_introduces_it_and_a_question_the_passages_miss_is_not_answered() {
        let passages = only("Travellers receive a daily meal allowance (per diem):\n- Domestic trips: $60 per day.\n- International trips: $90 per day.\n\nHotels are booked through the travel desk.");
        assert_answers(
            &passages,
            &[(
                "What is the daily meal allowance abroad?",
                Holds("International trips: $90 per day."),
            )],
        );
        assert_eq!(
            extractive_answer(
                "Does the travel desk offer pet insurance or gym subsidies?",
                &passages,
                3,
                true
            ),
            Extracted::NotInPassages
        );
    }

    #[test]
    fn a_question_about_something_the_passages_never_mention_is_not_answered() {
        let passages = only("## Shipping rates\n\nA parcel up to 5 lb from Riverton costs $12.50 within the US. Employees get a 20% shipping discount on private parcels. Office staff follow the Riverton HQ guidelines. Your training budget is $1,500 per year.");
        let refused = |question: &str| extractive_answer(question, &passages, 3, true) == Extracted::NotInPassages;
        // A place, an acronym, the thing a yes/no question asks about, the thing asked for.
        assert!(refused(
            "How much does it cost to send a 5 lb parcel from Riverton to Toronto?"
        ));
        assert!(refused("Do you ship parcels with GPS tracking?"));
        assert!(refused("Does Acme offer pet insurance as a benefit?"));
        assert!(refused("Is there a loyalty bonus for long-serving staff?"));
        assert!(refused("What is the dress code for office staff?"));
        // What the passages do mention: named, asked about, or a qualifier of it (`yearly`).
        assert!(!refused(
            "How much does a 5 lb parcel from Riverton cost within the US?"
        ));
        assert!(!refused("Is there a discount on private parcels for employees?"));
        assert!(!refused("What is my yearly training budget?"));
        assert!(!refused(
            "What is the total number of parcels from Riverton within the US?"
        ));
        // The asker's own masked data and identifiers with digits name nothing asked about.
        assert!(!refused(
            "I'm [PERSON_1], ID AB-20931. What is the shipping discount for employees?"
        ));
    }
}
