//! Prices of well-known hosted models, used when a model's `price` is not configured, and
//! token counting with OpenAI's own encodings (tiktoken) for OpenAI models.

/// Dollars per million (input, output) tokens: public list prices of 2025, matched by the
/// longest prefix of the model id. Configure `price` on a model to override (or for any model
/// not listed: those cost 0 unless configured).
const LIST_PRICES: &[(&str, f64, f64)] = &[
    ("gpt-4o-mini", 0.15, 0.60),
    ("gpt-4o", 2.50, 10.00),
    ("gpt-4.1-nano", 0.10, 0.40),
    ("gpt-4.1-mini", 0.40, 1.60),
    ("gpt-4.1", 2.00, 8.00),
    ("gpt-5-nano", 0.05, 0.40),
    ("gpt-5-mini", 0.25, 2.00),
    ("gpt-5", 1.25, 10.00),
    ("o3-mini", 1.10, 4.40),
    ("o4-mini", 1.10, 4.40),
    ("o3", 2.00, 8.00),
    ("claude-3-haiku", 0.25, 1.25),
    ("claude-3-5-haiku", 0.80, 4.00),
    ("claude-haiku-4", 1.00, 5.00),
    ("claude-3-5-sonnet", 3.00, 15.00),
    ("claude-3-7-sonnet", 3.00, 15.00),
    ("claude-sonnet-4", 3.00, 15.00),
    ("claude-opus-4", 15.00, 75.00),
];

/// The list price of `model` (dollars per million input and output tokens), if it is known.
pub fn list_price(model: &str) -> Option<(f64, f64)> {
    LIST_PRICES
        .iter()
        .filter(|(prefix, _, _)| model.starts_with(prefix))
        .max_by_key(|(prefix, _, _)| prefix.len())
        .map(|(_, input, output)| (*input, *output))
}

/// Tokens of `text` in the encoding OpenAI uses for `model` (cl100k, o200k…), when tiktoken
/// knows the model; `None` for other models (e.g. one served by vLLM behind the same API).
pub fn openai_tokens(model: &str, text: &str) -> Option<usize> {
    let bpe = tiktoken_rs::bpe_for_model(model).ok()?;
    Some(bpe.encode_with_special_tokens(text).len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_prefix_sets_the_price() {
        assert_eq!(list_price("gpt-4o-mini-2024-07-18"), Some((0.15, 0.60)));
        assert_eq!(list_price("gpt-4o-2024-08-06"), Some((2.50, 10.00)));
        assert_eq!(list_price("claude-3-5-haiku-latest"), Some((0.80, 4.00)));
        assert_eq!(list_price("scripted"), None);
    }

    #[test]
    fn openai_models_are_counted_with_their_own_encoding() {
        // "Hello, world!" is 4 tokens in both cl100k_base and o200k_base.
        assert_eq!(openai_tokens("gpt-4o-mini", "Hello, world!"), Some(4));
        assert_eq!(openai_tokens("gpt-4", "Hello, world!"), Some(4));
        assert_eq!(openai_tokens("my-local-llama", "Hello, world!"), None);
    }
}
