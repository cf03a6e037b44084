//! Chunking: cutting documents into pieces that fit the embedding model, on the most natural
//! boundary available (section, then paragraph, then sentence, then word), each carrying the
//! headings of its section as context so a chunk still makes sense on its own.

mod markdown;
mod tokens;

pub use markdown::{sections, sentences, Section};
pub use tokens::{ModelTokenizer, TokenCounter, WordCounter};

/// Size limits of chunks, in tokens of the embedding model.
#[derive(Debug, Clone, Copy)]
pub struct ChunkLimits {
    /// Most tokens a chunk may have, context and special tokens included.
    pub max_tokens: usize,
    /// Tokens from the end of a chunk repeated at the start of the next, within a section.
    pub overlap_tokens: usize,
    /// Tokens the model adds itself (`[CLS]` and `[SEP]` for BERT-style models).
    pub special_tokens: usize,
}

/// One piece of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// 0-based position within the document.
    pub position: usize,
    /// The text to embed and show: context line, blank line, body.
    pub text: String,
    /// The title and heading path the chunk belongs to (`Title > Section > Subsection`).
    pub context: String,
    /// Tokens of `text` without special tokens.
    pub token_count: usize,
}

/// Below this many tokens of room, a section's heading context is dropped rather than leaving
/// almost no space for the text itself.
const MIN_BODY_TOKENS: usize = 16;

#[derive(Debug, Clone)]
struct Unit {
    text: String,
    tokens: usize,
    /// Whether the unit begins a paragraph (joined with a blank line, not a space).
    starts_paragraph: bool,
}

/// Cuts `text` into chunks within `limits`.
pub fn chunk_text(text: &str, title: Option<&str>, limits: ChunkLimits, counter: &dyn TokenCounter) -> Vec<Chunk> {
    let room = limits.max_tokens.saturating_sub(limits.special_tokens).max(1);
    let mut chunks = Vec::new();
    for section in sections(text) {
        let context = context_line(title, &section.headings);
        let context_tokens = if context.is_empty() {
            0
        } else {
            counter.count(&context) + 1
        };
        let (context, budget) = if room.saturating_sub(context_tokens) >= MIN_BODY_TOKENS {
            (context, room - context_tokens)
        } else {
            (String::new(), room)
        };
        let units = units(&section, budget, counter);
        for body in pack(&units, budget, limits.overlap_tokens) {
            let text = if context.is_empty() {
                body
            } else {
                format!("{context}\n\n{body}")
            };
            chunks.push(Chunk {
                position: chunks.len(),
                token_count: counter.count(&text),
                text,
                context: context.clone(),
            });
        }
    }
    chunks
}

fn context_line(title: Option<&str>, headings: &[String]) -> String {
    let mut parts: Vec<&str> = Vec::new();
    if let Some(title) = title.map(str::trim).filter(|t| !t.is_empty()) {
        if headings.first().map(String::as_str) != Some(title) {
            parts.push(title);
        }
    }
    parts.extend(headings.iter().map(String::as_str));
    parts.join(" > ")
}

/// Paragraphs that fit, else their sentences, else word runs of a sentence.
fn units(section: &Section, budget: usize, counter: &dyn TokenCounter) -> Vec<Unit> {
    let mut units = Vec::new();
    for paragraph in &section.paragraphs {
        let tokens = counter.count(paragraph);
        if tokens <= budget {
            units.push(Unit {
                text: paragraph.clone(),
                tokens,
                starts_paragraph: true,
            });
            continue;
        }
        let mut first = true;
        for sentence in sentences(paragraph) {
            let tokens = counter.count(sentence);
            let pieces = if tokens <= budget {
                vec![(sentence.to_owned(), tokens)]
            } else {
                split_words(sentence, budget, counter)
            };
            for (text, tokens) in pieces {
                units.push(Unit {
                    text,
                    tokens,
                    starts_paragraph: first,
                });
                first = false;
            }
        }
    }
    units
}

/// Greedy runs of words within `budget` (a single word longer than the budget stands alone).
fn split_words(sentence: &str, budget: usize, counter: &dyn TokenCounter) -> Vec<(String, usize)> {
    let mut pieces = Vec::new();
    let mut current = String::new();
    let mut current_tokens = 0;
    for word in sentence.split_whitespace() {
        let tokens = counter.count(word);
        if current_tokens + tokens > budget && !current.is_empty() {
            pieces.push((std::mem::take(&mut current), current_tokens));
            current_tokens = 0;
        }
        if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(word);
        current_tokens += tokens;
    }
    if !current.is_empty() {
        pieces.push((current, current_tokens));
    }
    pieces
}

/// Packs units into bodies of at most `budget` tokens; each new body starts with the trailing
/// units of the previous one that fit in `overlap` tokens.
fn pack(units: &[Unit], budget: usize, overlap: usize) -> Vec<String> {
    let mut bodies = Vec::new();
    let mut current: Vec<&Unit> = Vec::new();
    let mut tokens = 0;
    let mut fresh = 0; // units in `current` not carried over from the previous body
    for unit in units {
        if tokens + unit.tokens > budget && fresh > 0 {
            bodies.push(join(&current));
            let mut carried: Vec<&Unit> = Vec::new();
            let mut carried_tokens = 0;
            for previous in current.iter().rev() {
                if carried_tokens + previous.tokens > overlap || carried_tokens + previous.tokens + unit.tokens > budget
                {
                    break;
                }
                carried_tokens += previous.tokens;
                carried.insert(0, previous);
            }
            current = carried;
            tokens = carried_tokens;
            fresh = 0;
        }
        current.push(unit);
        tokens += unit.tokens;
        fresh += 1;
    }
    if fresh > 0 {
        bodies.push(join(&current));
    }
    bodies
}

fn join(units: &[&Unit]) -> String {
    let mut text = String::new();
    for (index, unit) in units.iter().enumerate() {
        if index > 0 {
            text.push_str(if unit.starts_paragraph { "\n\n" } else { " " });
        }
        text.push_str(&unit.text);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_tokens: usize, overlap_tokens: usize) -> ChunkLimits {
        ChunkLimits {
            max_tokens,
            overlap_tokens,
            special_tokens: 0,
        }
    }

    fn words(count: usize, prefix: &str) -> String {
        (0..count).map(|i| format!("{prefix}{i}")).collect::<Vec<_>>().join(" ")
    }

    #[test]
    fn short_paragraphs_share_a_chunk_and_carry_their_headings() {
        let text = "# Leave\n\nYou get days.\n\nThey carry over.";
        let chunks = chunk_text(text, Some("Handbook"), limits(64, 0), &WordCounter);
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].context, "Handbook > Leave");
        assert_eq!(chunks[0].text, "Handbook > Leave\n\nYou get days.\n\nThey carry over.");
        assert_eq!(chunks[0].token_count, 9);
    }

    #[test]
    fn every_chunk_fits_and_nothing_is_lost() {
        let paragraphs: Vec<String> = (0..30)
            .map(|i| format!("{}.", words(7 + i % 11, &format!("p{i}w"))))
            .collect();
        let text = paragraphs.join("\n\n");
        let chunks = chunk_text(&text, None, limits(40, 0), &WordCounter);
        assert!(chunks.len() > 5);
        assert!(chunks.iter().all(|c| c.token_count <= 40));
        let rejoined: Vec<&str> = chunks.iter().flat_map(|c| c.text.split_whitespace()).collect();
        let original: Vec<&str> = text.split_whitespace().collect();
        assert_eq!(rejoined, original, "without overlap every word appears once, in order");
        assert!(chunks.iter().enumerate().all(|(i, c)| c.position == i));
    }

    #[test]
    fn overlap_repeats_the_tail_of_the_previous_chunk() {
        let text = (0..12)
            .map(|i| format!("Sentence number {i} here."))
            .collect::<Vec<_>>()
            .join(" ");
        let chunks = chunk_text(&text, None, limits(12, 4), &WordCounter);
        assert!(chunks.len() >= 4);
        for pair in chunks.windows(2) {
            let last_sentence = pair[0].text.rsplit(". ").next().unwrap();
            assert!(
                pair[1].text.starts_with(last_sentence.trim_end_matches('.')),
                "{pair:?}"
            );
        }
    }

    #[test]
    fn oversize_sentences_are_split_on_words() {
        let text = words(100, "w");
        let chunks = chunk_text(&text, None, limits(30, 0), &WordCounter);
        assert_eq!(chunks.len(), 4);
        assert!(chunks.iter().all(|c| c.token_count <= 30));
    }

    #[test]
    fn chunking_is_deterministic() {
        let text = "# A\n\nOne. Two. Three.\n\n## B\n\nFour five six.";
        let first = chunk_text(text, Some("T"), limits(6, 2), &WordCounter);
        let second = chunk_text(text, Some("T"), limits(6, 2), &WordCounter);
        assert_eq!(first, second);
    }

    #[test]
    fn empty_text_has_no_chunks() {
        assert!(chunk_text(" \n\n ", Some("T"), limits(64, 8), &WordCounter).is_empty());
    }
}
