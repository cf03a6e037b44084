//! Splitting a document into sections (by markdown headings) and sections into paragraphs and
//! sentences: the boundaries chunks prefer to end on.

/// A run of text under one heading path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// Titles of the enclosing headings, outermost first.
    pub headings: Vec<String>,
    /// The paragraphs of the section, in order (code blocks are kept whole).
    pub paragraphs: Vec<String>,
}

/// Splits markdown (or plain text, which is one section) at ATX headings (`#` to `######`).
/// Headings inside fenced code blocks are text.
pub fn sections(text: &str) -> Vec<Section> {
    let mut sections = Vec::new();
    let mut headings: Vec<(usize, String)> = Vec::new();
    let mut paragraphs: Vec<String> = Vec::new();
    let mut paragraph = String::new();
    let mut in_fence = false;
    let flush_paragraph = |paragraph: &mut String, paragraphs: &mut Vec<String>| {
        let trimmed = paragraph.trim();
        if !trimmed.is_empty() {
            paragraphs.push(trimmed.to_owned());
        }
        paragraph.clear();
    };
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            in_fence = !in_fence;
        }
        if !in_fence {
            if let Some((level, title)) = heading(trimmed) {
                flush_paragraph(&mut paragraph, &mut paragraphs);
                if !paragraphs.is_empty() {
                    sections.push(Section {
                        headings: headings.iter().map(|(_, t)| t.clone()).collect(),
                        paragraphs: std::mem::take(&mut paragraphs),
                    });
                }
                headings.retain(|(l, _)| *l < level);
                headings.push((level, title));
                continue;
            }
            if trimmed.is_empty() {
                flush_paragraph(&mut paragraph, &mut paragraphs);
                continue;
            }
        }
        if !paragraph.is_empty() {
            paragraph.push('\n');
        }
        paragraph.push_str(line);
    }
    flush_paragraph(&mut paragraph, &mut paragraphs);
    if !paragraphs.is_empty() {
        sections.push(Section {
            headings: headings.iter().map(|(_, t)| t.clone()).collect(),
            paragraphs,
        });
    }
    sections
}

fn heading(line: &str) -> Option<(usize, String)> {
    let level = line.chars().take_while(|c| *c == '#').count();
    if !(1..=6).contains(&level) {
        return None;
    }
    let rest = &line[level..];
    if !rest.is_empty() && !rest.starts_with(' ') {
        return None; // `#hashtag` is not a heading
    }
    let title = rest.trim().trim_end_matches('#').trim();
    (!title.is_empty()).then(|| (level, title.to_owned()))
}

/// Splits a paragraph into sentences: after `.`, `!` or `?` (optionally followed by closing
/// quotes or brackets) and whitespace, when the next word starts with an uppercase letter, a
/// digit or an opening quote. Deliberately simple: a wrong split only moves a chunk boundary.
pub fn sentences(paragraph: &str) -> Vec<&str> {
    let mut result = Vec::new();
    let mut start = 0;
    let chars: Vec<(usize, char)> = paragraph.char_indices().collect();
    let mut i = 0;
    while i < chars.len() {
        let (_, c) = chars[i];
        if matches!(c, '.' | '!' | '?') {
            let mut j = i + 1;
            while j < chars.len() && matches!(chars[j].1, '"' | '\'' | ')' | ']' | '”' | '’') {
                j += 1;
            }
            if j < chars.len() && chars[j].1.is_whitespace() {
                let mut k = j;
                while k < chars.len() && chars[k].1.is_whitespace() {
                    k += 1;
                }
                if k < chars.len()
                    && (chars[k].1.is_uppercase()
                        || chars[k].1.is_ascii_digit()
                        || matches!(chars[k].1, '"' | '“' | '('))
                {
                    let end = chars[j].0;
                    result.push(paragraph[start..end].trim());
                    start = chars[k].0;
                    i = k;
                    continue;
                }
            }
        }
        i += 1;
    }
    let tail = paragraph[start..].trim();
    if !tail.is_empty() {
        result.push(tail);
    }
    result.retain(|s| !s.is_empty());
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headings_nest_and_code_fences_are_text() {
        let text = "Intro line.\n\n# Leave\n\nYou get days.\n\n## Carry over\n\nUntil March.\n```\n# not a heading\n```\n\n# Expenses\nReceipts.";
        let found = sections(text);
        assert_eq!(found.len(), 4);
        assert!(found[0].headings.is_empty());
        assert_eq!(found[1].headings, vec!["Leave"]);
        assert_eq!(found[2].headings, vec!["Leave", "Carry over"]);
        assert_eq!(found[2].paragraphs, vec!["Until March.\n```\n# not a heading\n```"]);
        assert_eq!(found[3].headings, vec!["Expenses"]);
    }

    #[test]
    fn hashtags_are_not_headings() {
        assert_eq!(sections("#rust is fun")[0].headings, Vec::<String>::new());
    }

    #[test]
    fn sentences_split_at_terminal_punctuation_before_a_capital() {
        assert_eq!(
            sentences("It costs 3.5 euros. Really? Yes! \"Quoted.\" Then e.g. lower stays."),
            vec![
                "It costs 3.5 euros.",
                "Really?",
                "Yes!",
                "\"Quoted.\"",
                "Then e.g. lower stays."
            ]
        );
    }
}
