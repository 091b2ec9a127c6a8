//! The built-in mock provider: deterministic answers at a set pace.

use std::time::Duration;

use promptops_proto::prompts::v1::{ChatMessage, ChatRole};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::models::{Backend, MockBehaviour, ModelSpec};
use crate::tokens;

/// What a finished call produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub output: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Input tokens the provider served from its prompt cache (part of
    /// `input_tokens`, priced as cached).
    pub cached_input_tokens: u64,
    /// Input tokens written to the provider's prompt cache (part of
    /// `input_tokens`, priced as cache writes).
    pub cache_write_input_tokens: u64,
    /// The provider reported the token counts (otherwise they are ours).
    pub usage_reported: bool,
    pub finish_reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    /// The provider answered with an error (or none in time).
    #[error("{message}")]
    Provider {
        message: String,
        /// Worth trying again (a timeout, 429, 5xx, a dropped connection
        /// before any output).
        retryable: bool,
        /// What the provider asked for (`Retry-After`).
        retry_after: Option<Duration>,
    },
    /// The caller went away (or the service is stopping).
    #[error("cancelled")]
    Cancelled { partial: String, output_tokens: u64 },
}

const LOREM: &[&str] = &[
    "Lorem",
    " ipsum",
    " dolor",
    " sit",
    " amet,",
    " consectetur",
    " adipiscing",
    " elit,",
    " sed",
    " do",
    " eiusmod",
    " tempor",
    " incididunt",
    " ut",
    " labore",
    " et",
    " dolore",
    " magna",
    " aliqua.",
];

/// The output pieces (tokens) the mock answers `messages` with.
fn pieces(behaviour: MockBehaviour, messages: &[ChatMessage]) -> Vec<String> {
    match behaviour {
        MockBehaviour::Echo => {
            let last_user = messages
                .iter()
                .rev()
                .find(|m| m.role == ChatRole::User as i32)
                .map(|m| m.content.as_str())
                .unwrap_or_default();
            tokens::split(last_user)
        }
        MockBehaviour::Generate { tokens, .. } => (0..tokens as usize)
            .map(|i| LOREM[i % LOREM.len()].to_owned())
            .collect(),
        MockBehaviour::Fail { .. } | MockBehaviour::Embed => Vec::new(),
    }
}

/// Dimensions of the mock's embeddings.
pub const EMBEDDING_DIMENSIONS: usize = 256;

/// The mock's embedding of `text`: each lowercased word (and each pair of
/// neighbouring words) hashed (FNV-1a) to a dimension and a sign, summed,
/// then scaled to length 1 — texts sharing words are close, the same text
/// gives the same vector everywhere. A text without words is all zeros.
pub fn embed(text: &str) -> Vec<f32> {
    fn fnv1a(parts: &[&str]) -> u64 {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                hash = (hash ^ u64::from(b' ')).wrapping_mul(0x0100_0000_01b3);
            }
            for byte in part.bytes() {
                hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
            }
        }
        hash
    }
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    let mut vector = vec![0.0_f32; EMBEDDING_DIMENSIONS];
    let mut add = |hash: u64, weight: f32| {
        let index = (hash % EMBEDDING_DIMENSIONS as u64) as usize;
        vector[index] += if hash >> 63 == 0 { weight } else { -weight };
    };
    for word in &words {
        add(fnv1a(&[word]), 1.0);
    }
    for pair in words.windows(2) {
        add(fnv1a(pair), 0.5);
    }
    let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
    if norm > 0.0 {
        vector.iter_mut().for_each(|v| *v /= norm);
    }
    vector
}

/// Calls the mock: streams each piece to `deltas` (when given), stops at
/// `max_tokens`, and gives up with `Cancelled` when `cancel` fires or the
/// receiver of `deltas` is gone.
pub async fn complete(
    spec: &ModelSpec,
    messages: &[ChatMessage],
    max_tokens: Option<u32>,
    deltas: Option<&mpsc::Sender<String>>,
    cancel: &CancellationToken,
) -> Result<Completion, CallError> {
    let input_tokens = tokens::Tokenizer::Words.count_messages(messages);
    let Backend::Mock(behaviour) = spec.backend else {
        return Err(CallError::Provider {
            message: format!("{} is not a mock model", spec.id),
            retryable: false,
            retry_after: None,
        });
    };
    let (first_delay, per_token) = match behaviour {
        MockBehaviour::Echo => (0, 0),
        MockBehaviour::Embed => {
            return Err(CallError::Provider {
                message: format!("{} is an embedding model: it does not chat", spec.id),
                retryable: false,
                retry_after: None,
            });
        }
        MockBehaviour::Generate {
            first_token_ms,
            per_token_ms,
            ..
        } => (first_token_ms, per_token_ms),
        MockBehaviour::Fail { after_ms } => {
            sleep_or_cancel(after_ms, cancel)
                .await
                .map_err(|()| CallError::Cancelled {
                    partial: String::new(),
                    output_tokens: 0,
                })?;
            return Err(CallError::Provider {
                message: format!("{} is unavailable (503 from the mock provider)", spec.id),
                retryable: false,
                retry_after: None,
            });
        }
    };
    let mut all = pieces(behaviour, messages);
    let limit = max_tokens
        .unwrap_or(spec.max_output_tokens)
        .min(spec.max_output_tokens) as usize;
    let finish_reason = if all.len() > limit {
        all.truncate(limit);
        "length"
    } else {
        "stop"
    };
    let mut output = String::new();
    let mut sent = 0_u64;
    for (i, piece) in all.iter().enumerate() {
        let wait = if i == 0 { first_delay } else { per_token };
        let cancelled = || CallError::Cancelled {
            partial: output.clone(),
            output_tokens: sent,
        };
        sleep_or_cancel(wait, cancel).await.map_err(|()| cancelled())?;
        if let Some(deltas) = deltas {
            tokio::select! {
                () = cancel.cancelled() => return Err(cancelled()),
                sent_ok = deltas.send(piece.clone()) => sent_ok.map_err(|_| cancelled())?,
            }
        }
        output.push_str(piece);
        sent += 1;
    }
    Ok(Completion {
        output,
        input_tokens,
        output_tokens: sent,
        cached_input_tokens: 0,
        cache_write_input_tokens: 0,
        // The mock is its own provider: its counts are the real ones.
        usage_reported: true,
        finish_reason,
    })
}

async fn sleep_or_cancel(ms: u64, cancel: &CancellationToken) -> Result<(), ()> {
    if ms == 0 {
        return if cancel.is_cancelled() { Err(()) } else { Ok(()) };
    }
    tokio::select! {
        () = cancel.cancelled() => Err(()),
        () = tokio::time::sleep(Duration::from_millis(ms)) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn mock_embeddings_are_deterministic_unit_vectors_that_follow_shared_words() {
        let a = super::embed("The cat sat on the mat");
        assert_eq!(a.len(), super::EMBEDDING_DIMENSIONS);
        assert_eq!(a, super::embed("the CAT sat, on the mat!"));
        assert!((cosine(&a, &a) - 1.0).abs() < 1e-5);
        let near = cosine(&a, &super::embed("The cat sat on a mat"));
        let far = cosine(&a, &super::embed("Quarterly revenue grew nine percent"));
        assert!(near > 0.7 && far < 0.3 && near > far, "near {near}, far {far}");
        assert!(super::embed("  ... ").iter().all(|v| *v == 0.0));
    }

    use super::*;
    use crate::models::find;

    fn user(text: &str) -> Vec<ChatMessage> {
        vec![
            ChatMessage {
                role: ChatRole::System as i32,
                content: "be brief".into(),
            },
            ChatMessage {
                role: ChatRole::User as i32,
                content: text.into(),
            },
        ]
    }

    #[tokio::test]
    async fn echo_answers_the_last_user_message_in_pieces() {
        let (tx, mut rx) = mpsc::channel(64);
        let done = complete(
            find("mock/echo").unwrap(),
            &user("Hello there, world!"),
            None,
            Some(&tx),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
        drop(tx);
        let mut streamed = String::new();
        while let Some(piece) = rx.recv().await {
            streamed.push_str(&piece);
        }
        assert_eq!(done.output, "Hello there, world!");
        assert_eq!(streamed, done.output);
        assert_eq!(done.output_tokens, 5);
        assert_eq!(done.finish_reason, "stop");
    }

    #[tokio::test]
    async fn max_tokens_cuts_the_output_and_says_so() {
        let done = complete(
            find("mock/lorem").unwrap(),
            &user("x"),
            Some(3),
            None,
            &CancellationToken::new(),
        )
        .await
        .unwrap();
        assert_eq!(done.output, "Lorem ipsum dolor");
        assert_eq!((done.output_tokens, done.finish_reason), (3, "length"));
    }

    #[tokio::test]
    async fn a_receiver_that_goes_away_cancels_with_the_partial_output() {
        let (tx, mut rx) = mpsc::channel(1);
        let messages = user("x");
        let never = CancellationToken::new();
        let call = complete(find("mock/lorem").unwrap(), &messages, None, Some(&tx), &never);
        let receiver = async move {
            assert_eq!(rx.recv().await.unwrap(), "Lorem");
            drop(rx);
        };
        let (result, ()) = tokio::join!(call, receiver);
        let Err(CallError::Cancelled { partial, .. }) = result else {
            panic!("expected Cancelled");
        };
        assert!(partial.starts_with("Lorem"), "{partial}");
    }

    #[tokio::test]
    async fn the_failing_model_fails() {
        let err = complete(
            find("mock/fail").unwrap(),
            &user("x"),
            None,
            None,
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, CallError::Provider { .. }));
    }
}
