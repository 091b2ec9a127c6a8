//! The model catalog: what each model can do and what it costs.
//!
//! The built-in `mock` provider is always available, needs no key and is what
//! the embedded default's playground uses:
//!
//! | model | behaviour |
//! |---|---|
//! | `mock/echo` | answers with the last user message, word by word, at once |
//! | `mock/lorem` | 100 tokens of lorem ipsum after 10 ms, 1 ms a token |
//! | `mock/slow` | 20 tokens after 100 ms, 50 ms a token (for cancellation) |
//! | `mock/fail` | fails with a provider error after 5 ms |
//!
//! Prices are micro-USD per 1M tokens; billing will own them.

use promptops_proto::execution::v1::Model;

/// What a model can do, what it costs and how the mock behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    pub id: &'static str,
    pub description: &'static str,
    pub context_window: u32,
    pub max_output_tokens: u32,
    pub input_price_per_mtok: i64,
    pub output_price_per_mtok: i64,
    pub cached_input_price_per_mtok: i64,
    pub behaviour: MockBehaviour,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MockBehaviour {
    Echo,
    Generate {
        tokens: u32,
        first_token_ms: u64,
        per_token_ms: u64,
    },
    Fail {
        after_ms: u64,
    },
}

pub const BUILT_IN: &[ModelSpec] = &[
    ModelSpec {
        id: "mock/echo",
        description: "Answers with the last user message verbatim",
        context_window: 128_000,
        max_output_tokens: 16_384,
        input_price_per_mtok: 500_000,
        output_price_per_mtok: 1_500_000,
        cached_input_price_per_mtok: 250_000,
        behaviour: MockBehaviour::Echo,
    },
    ModelSpec {
        id: "mock/lorem",
        description: "100 tokens of lorem ipsum, 10 ms to the first, 1 ms each",
        context_window: 32_000,
        max_output_tokens: 4_096,
        input_price_per_mtok: 1_000_000,
        output_price_per_mtok: 2_000_000,
        cached_input_price_per_mtok: 500_000,
        behaviour: MockBehaviour::Generate {
            tokens: 100,
            first_token_ms: 10,
            per_token_ms: 1,
        },
    },
    ModelSpec {
        id: "mock/slow",
        description: "20 tokens, 100 ms to the first, 50 ms each",
        context_window: 8_000,
        max_output_tokens: 1_024,
        input_price_per_mtok: 1_000_000,
        output_price_per_mtok: 2_000_000,
        cached_input_price_per_mtok: 500_000,
        behaviour: MockBehaviour::Generate {
            tokens: 20,
            first_token_ms: 100,
            per_token_ms: 50,
        },
    },
    ModelSpec {
        id: "mock/fail",
        description: "Fails with a provider error after 5 ms",
        context_window: 8_000,
        max_output_tokens: 1_024,
        input_price_per_mtok: 0,
        output_price_per_mtok: 0,
        cached_input_price_per_mtok: 0,
        behaviour: MockBehaviour::Fail { after_ms: 5 },
    },
];

/// The model `id`, if the catalog has it.
pub fn find(id: &str) -> Option<&'static ModelSpec> {
    BUILT_IN.iter().find(|m| m.id == id)
}

impl ModelSpec {
    pub fn provider(&self) -> &'static str {
        self.id.split_once('/').map_or(self.id, |(p, _)| p)
    }

    pub fn to_message(&self) -> Model {
        Model {
            id: self.id.to_owned(),
            provider: self.provider().to_owned(),
            context_window: self.context_window,
            max_output_tokens: self.max_output_tokens,
            streaming: true,
            embeddings: false,
            input_price_per_mtok: self.input_price_per_mtok,
            output_price_per_mtok: self.output_price_per_mtok,
            cached_input_price_per_mtok: self.cached_input_price_per_mtok,
            description: self.description.to_owned(),
        }
    }

    /// The cost in nano-USD (1e-9 USD) of a run's tokens, rounded to the
    /// nearest: tokens × micro-USD per 1M tokens / 1000. Cached input tokens
    /// are priced as cached; the rest of the input as input.
    pub fn cost_nano_usd(&self, input_tokens: u64, output_tokens: u64, cached_input_tokens: u64) -> i64 {
        let cached = cached_input_tokens.min(input_tokens);
        let micro_times_tokens = i128::from(input_tokens - cached) * i128::from(self.input_price_per_mtok)
            + i128::from(cached) * i128::from(self.cached_input_price_per_mtok)
            + i128::from(output_tokens) * i128::from(self.output_price_per_mtok);
        i64::try_from((micro_times_tokens + 500) / 1000).unwrap_or(i64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_is_exact_integer_arithmetic_with_cached_input_priced_as_cached() {
        let echo = find("mock/echo").unwrap();
        // 1,000 input (200 of them cached) and 500 output tokens:
        // 800 × 0.5 + 200 × 0.25 + 500 × 1.5 USD per 1M = 1,200 µUSD = 1,200,000 nUSD.
        assert_eq!(echo.cost_nano_usd(1_000, 500, 200), 1_200_000);
        assert_eq!(echo.cost_nano_usd(0, 0, 0), 0);
        // One token of input: 0.5 µUSD = 500 nUSD, exactly.
        assert_eq!(echo.cost_nano_usd(1, 0, 0), 500);
    }

    #[test]
    fn every_built_in_model_is_named_by_provider() {
        for model in BUILT_IN {
            assert_eq!(model.provider(), "mock");
            assert!(find(model.id).is_some());
        }
        assert!(find("openai/gpt-4o").is_none());
    }
}
