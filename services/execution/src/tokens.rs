//! Token counting before a call. OpenAI models are counted with their own
//! byte-pair encoding (tiktoken's `o200k_base` / `cl100k_base` tables, the
//! same numbers OpenAI bills); other HTTP models with `o200k_base` as an
//! estimate; the mock provider in its own unit, words and punctuation runs.
//! A count is only used when the provider does not report usage, and is
//! then flagged as an estimate on the run.

use std::collections::HashSet;
use std::sync::{LazyLock, Mutex};

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

/// The encodings whose tables this process has loaded.
static LOADED: LazyLock<Mutex<HashSet<Encoding>>> = LazyLock::new(|| Mutex::new(HashSet::new()));

/// The encoding OpenAI uses for `model`; `o200k_base` for one it does not know.
fn encoding_of(model: &str) -> Encoding {
    get_tokenizer(model).unwrap_or(Encoding::O200kBase)
}

/// Loads the tables of `encodings` (blocking) and notes them loaded.
fn load(encodings: impl IntoIterator<Item = Encoding>) {
    for encoding in encodings {
        let _ = tiktoken_rs::bpe_for_tokenizer(encoding);
        if let Ok(mut loaded) = LOADED.lock() {
            loaded.insert(encoding);
        }
    }
}

impl Tokenizer {
    /// The encoding OpenAI uses for `model` (e.g. `gpt-4o-mini`), or
    /// `o200k_base` as the estimate for a model it does not know. Loads the
    /// encoding's table if it is not loaded yet (blocking: see
    /// [`Self::load_tables_for`]).
    pub fn for_upstream_model(model: &str) -> Self {
        match tiktoken_rs::bpe_for_tokenizer(encoding_of(model)) {
            Ok(bpe) => Self::Bpe(bpe),
            Err(_) => Self::Bpe(tiktoken_rs::o200k_base_singleton()),
        }
    }

    /// Loads `o200k_base` now rather than on the first request: it counts
    /// every model OpenAI does not know and today's OpenAI models (~50 MB,
    /// ~140 ms). The other tables load when a model first needs them.
    pub fn warm_up() {
        load([Encoding::O200kBase]);
    }

    /// Loads, on a blocking thread, the tables of the encodings
    /// `upstream_models` need that are not loaded yet, so that
    /// [`Self::for_upstream_model`] finds them loaded. `cl100k_base`
    /// (GPT-4, GPT-3.5, the `text-embedding-*` models) is loaded this way
    /// when an org's catalog first has such a model: ~18 MB and ~65 ms paid
    /// only by a process that counts for one.
    pub async fn load_tables_for<'a>(upstream_models: impl IntoIterator<Item = &'a str>) {
        let missing: HashSet<Encoding> = {
            let Ok(loaded) = LOADED.lock() else { return };
            upstream_models
                .into_iter()
                .map(encoding_of)
                .filter(|encoding| !loaded.contains(encoding))
                .collect()
        };
        if !missing.is_empty() {
            let _ = tokio::task::spawn_blocking(move || load(missing)).await;
        }
    }

    /// Whether `model`'s encoding table is loaded.
    #[cfg(test)]
    fn is_loaded_for(model: &str) -> bool {
        LOADED
            .lock()
            .is_ok_and(|loaded| loaded.contains(&encoding_of(model)))
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

    #[tokio::test]
    async fn a_table_is_loaded_when_a_catalog_first_needs_it_not_at_start() {
        Tokenizer::warm_up();
        assert!(Tokenizer::is_loaded_for("gpt-4o"));
        assert!(
            Tokenizer::is_loaded_for("my-own-model"),
            "unknown models count with o200k_base"
        );
        // p50k_base: no other test here uses it.
        assert!(!Tokenizer::is_loaded_for("text-davinci-003"));
        Tokenizer::load_tables_for(["gpt-4o", "text-davinci-003"]).await;
        assert!(Tokenizer::is_loaded_for("text-davinci-003"));
        assert_eq!(
            Tokenizer::for_upstream_model("text-davinci-003").count("tiktoken is great!"),
            6
        );
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
