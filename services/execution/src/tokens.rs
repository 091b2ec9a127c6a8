//! Token counting before a call. OpenAI models are counted with their own
//! byte-pair encoding (tiktoken's `o200k_base` / `cl100k_base` tables, the
//! same numbers OpenAI bills); other HTTP models with `o200k_base` as an
//! estimate; the mock provider in its own unit, words and punctuation runs.
//! A count is only used when the provider does not report usage, and is
//! then flagged as an estimate on the run.

use promptops_proto::prompts::v1::ChatMessage;
use tiktoken_rs::CoreBPE;
use tiktoken_rs::tokenizer::{Tokenizer as Encoding, get_tokenizer};

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

/// How a model's text is counted in tokens.
#[derive(Clone, Copy)]
pub enum Tokenizer {
    /// Words and punctuation runs: the mock provider's unit.
    Words,
    /// A tiktoken byte-pair encoding.
    Bpe(&'static CoreBPE),
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Words => "Words",
            Self::Bpe(_) => "Bpe",
        })
    }
}

impl PartialEq for Tokenizer {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Words, Self::Words) => true,
            (Self::Bpe(a), Self::Bpe(b)) => std::ptr::eq(*a, *b),
            _ => false,
        }
    }
}

impl Tokenizer {
    /// The encoding OpenAI uses for `model` (e.g. `gpt-4o-mini`), or
    /// `o200k_base` as the estimate for a model it does not know.
    pub fn for_upstream_model(model: &str) -> Self {
        let encoding = get_tokenizer(model).unwrap_or(Encoding::O200kBase);
        match tiktoken_rs::bpe_for_tokenizer(encoding) {
            Ok(bpe) => Self::Bpe(bpe),
            Err(_) => Self::Bpe(tiktoken_rs::o200k_base_singleton()),
        }
    }

    /// Loads the encoding tables now rather than on the first request.
    pub fn warm_up() {
        let _ = tiktoken_rs::o200k_base_singleton().count_ordinary("warm");
        let _ = tiktoken_rs::cl100k_base_singleton().count_ordinary("warm");
    }

    /// How many tokens `text` is. Special-token markers in the text count as
    /// the text they are, as the provider treats them in message content.
    pub fn count(self, text: &str) -> u64 {
        match self {
            Self::Words => split(text).len() as u64,
            Self::Bpe(bpe) => bpe.count_ordinary(text) as u64,
        }
    }

    /// How many tokens a chat input is, by OpenAI's accounting: each message
    /// is its role and content plus 3 tokens of framing, and the reply's
    /// priming adds 3 more.
    pub fn count_messages(self, messages: &[ChatMessage]) -> u64 {
        // `system`, `user` and `assistant` are one token each.
        let role = match self {
            Self::Words => 0,
            Self::Bpe(_) => 1,
        };
        messages
            .iter()
            .map(|m| self.count(&m.content) + role + 3)
            .sum::<u64>()
            + 3
    }
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
        assert_eq!(Tokenizer::Words.count("one two"), 2);
    }

    #[test]
    fn openai_models_are_counted_with_their_own_encoding() {
        // Reference counts from the `tiktoken` Python package (0.x, same tables).
        let gpt4o = Tokenizer::for_upstream_model("gpt-4o-mini");
        assert_eq!(gpt4o.count("Hello world"), 2);
        assert_eq!(gpt4o.count("tiktoken is great!"), 6);
        let gpt4 = Tokenizer::for_upstream_model("gpt-4");
        assert_eq!(gpt4.count("tiktoken is great!"), 6);
        // A chat input: 2 messages × (role + content + 3) + 3 for the reply.
        let messages = [
            ChatMessage {
                role: 1,
                content: "You are terse.".into(),
            },
            ChatMessage {
                role: 2,
                content: "Hello world".into(),
            },
        ];
        let system = gpt4o.count("You are terse.");
        assert_eq!(
            gpt4o.count_messages(&messages),
            (1 + system + 3) + (1 + 2 + 3) + 3
        );
        // A model OpenAI does not know is estimated with o200k_base.
        assert_eq!(
            Tokenizer::for_upstream_model("llama-3-8b").count("Hello world"),
            2
        );
    }
}
