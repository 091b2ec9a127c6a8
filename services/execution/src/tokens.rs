//! Token counting for models without a tokenizer of their own (the mock
//! provider): words and punctuation runs, each with its leading whitespace.
//! Counts from here for a real provider are flagged as estimates.

/// `text` as tokens: each starts at a word or punctuation run and carries
/// the whitespace before it, so joining them gives `text` back.
pub fn split(text: &str) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut current = String::new();
    let mut previous: Option<char> = None;
    for c in text.chars() {
        let boundary = match previous {
            None => false,
            Some(p) => {
                let class = |c: char| {
                    if c.is_whitespace() {
                        0
                    } else if c.is_alphanumeric() {
                        1
                    } else {
                        2
                    }
                };
                if c.is_whitespace() {
                    !p.is_whitespace()
                } else {
                    !p.is_whitespace() && class(p) != class(c)
                }
            }
        };
        if boundary && !current.trim().is_empty() {
            pieces.push(std::mem::take(&mut current));
        }
        current.push(c);
        previous = Some(c);
    }
    if !current.is_empty() {
        pieces.push(current);
    }
    pieces
}

/// How many tokens a chat input is: each message's content plus 3 for its
/// framing, plus 3 for the reply's priming (OpenAI's accounting).
pub fn count_messages(messages: &[promptops_proto::prompts::v1::ChatMessage]) -> u64 {
    messages.iter().map(|m| count(&m.content) + 3).sum::<u64>() + 3
}

/// How many tokens `text` is.
pub fn count(text: &str) -> u64 {
    split(text).len() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_join_back_to_the_text() {
        for text in [
            "",
            "a",
            "Hello there, world!",
            "  leading and trailing  ",
            "ünï-côdé 42.",
        ] {
            assert_eq!(split(text).concat(), text);
        }
        assert_eq!(
            split("Hello there, world!"),
            ["Hello", " there", ",", " world", "!"]
        );
        assert_eq!(count("one two"), 2);
    }
}
