//! Prompts per task, trimmed to the model's token budget, and citations read back.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

use super::{ChatMessage, Role};
use crate::contracts::{Citation, RetrievedPassage, Task};

/// A passage as the prompt numbers it.
pub type Passage = RetrievedPassage;

/// Told to every model: the placeholders must survive the answer so they can be restored.
const PLACEHOLDER_RULE: &str = "Text in square brackets with a type and a number, such as [PERSON_1] or [EMAIL_2], stands for personal data that was removed: copy such placeholders exactly as written, never guess what they stand for.";

fn system_prompt(task: Task, extract_schema: Option<&Value>) -> String {
    let task_rules = match task {
        Task::Qa => "Answer the question using only the numbered context passages. Cite the passages that support each statement by their numbers in square brackets, like [1] or [2][3]. If the passages do not contain the answer, say that you do not know.".to_owned(),
        Task::Summarize => "Summarize what the numbered context passages say about the user's request, in a few sentences. Cite passages by their numbers in square brackets, like [1]. Use only the passages.".to_owned(),
        Task::Report => "Write a short structured report on the user's request from the numbered context passages: a one-line summary, then a few sections with headings. Cite passages by their numbers in square brackets, like [1]. Use only the passages; say what they do not cover.".to_owned(),
        Task::Extract => format!(
            "Extract the requested information from the numbered context passages. Reply with one JSON object, and nothing else, that is valid against this JSON Schema:\n{}\nUse null where the passages do not say.",
            extract_schema.map_or_else(|| "{}".to_owned(), Value::to_string)
        ),
    };
    format!("{task_rules}\n{PLACEHOLDER_RULE}")
}

/// A prompt ready to send, and which passages made it in.
#[derive(Debug, Clone, PartialEq)]
pub struct Prompt {
    pub messages: Vec<ChatMessage>,
    /// The passages in the prompt, numbered from 1 in this order.
    pub passages: Vec<Passage>,
    /// Passages left out to stay within the budget.
    pub trimmed: usize,
    /// Prompt tokens by the counter used.
    pub prompt_tokens: usize,
}

pub(super) fn numbered(index: usize, passage: &Passage) -> String {
    match &passage.title {
        Some(title) => format!("[{index}] ({title}) {}\n", passage.text),
        None => format!("[{index}] {}\n", passage.text),
    }
}

/// The prompt for `task`: passages in rank order while they fit in `context_tokens` minus the
/// room left for the answer (`max_output_tokens`), counted by `count_tokens`.
pub fn assemble(
    task: Task,
    question: &str,
    passages: &[Passage],
    extract_schema: Option<&Value>,
    context_tokens: usize,
    max_output_tokens: usize,
    count_tokens: &dyn Fn(&str) -> usize,
) -> Prompt {
    let system = system_prompt(task, extract_schema);
    let request = format!("Request: {question}");
    let fixed = count_tokens(&system) + count_tokens(&request) + count_tokens("Context passages:\n") + 16;
    let mut budget = context_tokens.saturating_sub(max_output_tokens + fixed);
    let mut context = String::from("Context passages:\n");
    let mut used = Vec::new();
    for passage in passages {
        let entry = numbered(used.len() + 1, passage);
        let cost = count_tokens(&entry);
        if cost > budget {
            break;
        }
        budget -= cost;
        context.push_str(&entry);
        used.push(passage.clone());
    }
    let user = format!("{context}\n{request}");
    let prompt_tokens = count_tokens(&system) + count_tokens(&user);
    Prompt {
        messages: vec![
            ChatMessage::new(Role::System, system),
            ChatMessage::new(Role::User, user),
        ],
        trimmed: passages.len() - used.len(),
        passages: used,
        prompt_tokens,
    }
}

/// A documented estimate for models whose tokenizer we do not have: about four characters per
/// token for English text, rounded up.
pub fn estimate_tokens(text: &str) -> usize {
    text.chars().count().div_ceil(4)
}

static CITATION: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]").expect("citation pattern compiles"));

/// The passages `answer` cites (`[1]`, `[2, 3]`), in order of first mention; numbers that
/// match no passage are ignored.
pub fn parse_citations(answer: &str, passages: &[Passage]) -> Vec<Citation> {
    let mut cited: Vec<usize> = Vec::new();
    for captures in CITATION.captures_iter(answer) {
        for number in captures[1].split(',') {
            if let Ok(index) = number.trim().parse::<usize>() {
                if (1..=passages.len()).contains(&index) && !cited.contains(&index) {
                    cited.push(index);
                }
            }
        }
    }
    cited
        .into_iter()
        .map(|index| citation(index, &passages[index - 1]))
        .collect()
}

/// The citation of passage number `index`.
pub fn citation(index: usize, passage: &Passage) -> Citation {
    Citation {
        index: index as u32,
        doc_id: passage.doc_id.clone(),
        chunk_id: passage.chunk_id.clone(),
        title: passage.title.clone(),
        score: passage.score,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passage(n: usize, words: usize) -> Passage {
        Passage {
            chunk_id: format!("d{n}:1:0"),
            doc_id: format!("d{n}"),
            title: Some(format!("Doc {n}")),
            text: "word ".repeat(words),
            score: 0.9 - n as f32 / 100.0,
        }
    }

    #[test]
    fn passages_are_trimmed_to_the_budget_in_rank_order() {
        let passages: Vec<_> = (1..=5).map(|n| passage(n, 100)).collect();
        let prompt = assemble(Task::Qa, "why?", &passages, None, 600, 100, &estimate_tokens);
        assert_eq!(prompt.passages.len(), 2, "each passage is ~130 tokens");
        assert_eq!(prompt.trimmed, 3);
        assert_eq!(prompt.passages[0].doc_id, "d1");
        assert!(prompt.prompt_tokens <= 500);
        assert!(prompt.messages[1].content.contains("[2] (Doc 2)"));
        assert!(!prompt.messages[1].content.contains("[3]"));
        assert!(prompt.messages[0].content.contains("[PERSON_1]"));
    }

    #[test]
    fn extract_prompts_carry_the_schema() {
        let schema = serde_json::json!({"type": "object", "properties": {"price": {"type": "number"}}});
        let prompt = assemble(
            Task::Extract,
            "price?",
            &[passage(1, 5)],
            Some(&schema),
            4096,
            256,
            &estimate_tokens,
        );
        assert!(prompt.messages[0].content.contains(r#""price":{"type":"number"}"#));
    }

    #[test]
    fn citations_map_back_to_chunks() {
        let passages: Vec<_> = (1..=3).map(|n| passage(n, 3)).collect();
        let cited = parse_citations("A [2]. B [1, 2][3]. C [9]. Mail [EMAIL_1].", &passages);
        let ids: Vec<_> = cited.iter().map(|c| (c.index, c.chunk_id.as_str())).collect();
        assert_eq!(ids, [(2, "d2:1:0"), (1, "d1:1:0"), (3, "d3:1:0")]);
    }
}
