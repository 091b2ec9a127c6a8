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
//! | `mock/embed` | embeddings only: 256 dimensions from hashed words, deterministic |
//!
//! An org adds its own models on its providers (see [`crate::catalog`]);
//! they resolve to the same [`ModelSpec`] with an HTTP backend.
//!
//! Prices are micro-USD per 1M tokens; the billing service's price book
//! (seeded with these for the mock) decides what a run costs.

use std::time::Duration;

use promptops_platform::errors::FieldViolation;
use promptops_proto::common::v1::TokenPrices;
use promptops_proto::execution::v1::{Model, ProviderLimits, Usage};

use crate::secrets::Secret;
use crate::tokens::Tokenizer;

/// What a model can do, what it costs and how it is reached.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    pub id: String,
    pub description: String,
    pub context_window: u32,
    pub max_output_tokens: u32,
    /// What its tokens cost: the price book's price when the run is
    /// prepared (see `crate::accounts`), else the catalog's own.
    pub prices: TokenPrices,
    pub backend: Backend,
    /// Its provider's limits.
    pub limits: CallLimits,
    /// How its text is counted before a call (chosen once, when the spec is made).
    pub tokenizer: Tokenizer,
    /// An embedding model (`Embed`), not a chat model.
    pub embeddings: bool,
}

/// How calls to one provider are bounded (set per provider; the built-in
/// mock has the defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallLimits {
    /// Calls in flight at once per org, provider and replica.
    pub max_concurrent_calls: usize,
    pub first_byte_timeout: Duration,
    /// Consecutive failures of a model that open its circuit.
    pub failures_to_open: u32,
    /// How long an open circuit rejects calls before one trial.
    pub open_for: Duration,
}

impl CallLimits {
    pub const DEFAULT: Self = Self {
        max_concurrent_calls: 64,
        first_byte_timeout: Duration::from_secs(30),
        failures_to_open: 5,
        open_for: Duration::from_secs(30),
    };

    /// The limits `set` asks for, with the defaults where it says 0.
    pub fn from_proto(set: Option<&ProviderLimits>) -> Self {
        let d = Self::DEFAULT;
        let Some(set) = set else { return d };
        let ms = |v: u32, default: Duration| {
            if v == 0 {
                default
            } else {
                Duration::from_millis(u64::from(v))
            }
        };
        Self {
            max_concurrent_calls: match set.max_concurrent_calls {
                0 => d.max_concurrent_calls,
                n => n as usize,
            },
            first_byte_timeout: ms(set.first_byte_timeout_ms, d.first_byte_timeout),
            failures_to_open: match set.failures_to_open {
                0 => d.failures_to_open,
                n => n,
            },
            open_for: ms(set.open_for_ms, d.open_for),
        }
    }

    pub fn to_proto(self) -> ProviderLimits {
        let ms = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
        ProviderLimits {
            max_concurrent_calls: u32::try_from(self.max_concurrent_calls).unwrap_or(u32::MAX),
            first_byte_timeout_ms: ms(self.first_byte_timeout),
            failures_to_open: self.failures_to_open,
            open_for_ms: ms(self.open_for),
        }
    }

    /// What is wrong with `set`, by field (under `limits.`).
    pub fn violations(set: &ProviderLimits) -> Vec<FieldViolation> {
        let mut violations = Vec::new();
        let mut check = |field: &str, value: u32, range: std::ops::RangeInclusive<u32>| {
            if value != 0 && !range.contains(&value) {
                violations.push(FieldViolation::new(
                    format!("limits.{field}"),
                    format!(
                        "must be between {} and {} (or 0 for the default)",
                        range.start(),
                        range.end()
                    ),
                ));
            }
        };
        check("max_concurrent_calls", set.max_concurrent_calls, 1..=10_000);
        check("first_byte_timeout_ms", set.first_byte_timeout_ms, 100..=600_000);
        check("failures_to_open", set.failures_to_open, 1..=1_000);
        check("open_for_ms", set.open_for_ms, 100..=3_600_000);
        violations
    }
}

/// Where a model's calls go.
#[derive(Debug, Clone, PartialEq)]
pub enum Backend {
    /// The built-in mock, in process.
    Mock(MockBehaviour),
    /// A provider over HTTP.
    Http(HttpBackend),
}

#[derive(Debug, Clone, PartialEq, Eq, Copy)]
pub enum ApiFormat {
    /// OpenAI's chat completions (OpenAI and every OpenAI-compatible server).
    OpenAi,
    /// Anthropic's Messages API.
    Anthropic,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpBackend {
    pub format: ApiFormat,
    /// e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    /// The model name the provider knows.
    pub upstream_model: String,
    pub api_key: Option<Secret>,
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
    /// Deterministic embeddings (see [`crate::mock::embed`]); no chat.
    Embed,
}

struct BuiltIn {
    id: &'static str,
    description: &'static str,
    context_window: u32,
    max_output_tokens: u32,
    prices: (i64, i64, i64),
    behaviour: MockBehaviour,
}

const BUILT_IN: &[BuiltIn] = &[
    BuiltIn {
        id: "mock/echo",
        description: "Answers with the last user message verbatim",
        context_window: 128_000,
        max_output_tokens: 16_384,
        prices: (500_000, 1_500_000, 250_000),
        behaviour: MockBehaviour::Echo,
    },
    BuiltIn {
        id: "mock/lorem",
        description: "100 tokens of lorem ipsum, 10 ms to the first, 1 ms each",
        context_window: 32_000,
        max_output_tokens: 4_096,
        prices: (1_000_000, 2_000_000, 500_000),
        behaviour: MockBehaviour::Generate {
            tokens: 100,
            first_token_ms: 10,
            per_token_ms: 1,
        },
    },
    BuiltIn {
        id: "mock/slow",
        description: "20 tokens, 100 ms to the first, 50 ms each",
        context_window: 8_000,
        max_output_tokens: 1_024,
        prices: (1_000_000, 2_000_000, 500_000),
        behaviour: MockBehaviour::Generate {
            tokens: 20,
            first_token_ms: 100,
            per_token_ms: 50,
        },
    },
    BuiltIn {
        id: "mock/fail",
        description: "Fails with a provider error after 5 ms",
        context_window: 8_000,
        max_output_tokens: 1_024,
        prices: (0, 0, 0),
        behaviour: MockBehaviour::Fail { after_ms: 5 },
    },
    BuiltIn {
        id: "mock/embed",
        description: "Deterministic 256-dimension embeddings of words (texts sharing words are close)",
        context_window: 8_192,
        max_output_tokens: 0,
        prices: (20_000, 0, 0),
        behaviour: MockBehaviour::Embed,
    },
];

static BUILT_IN_SPECS: std::sync::LazyLock<Vec<std::sync::Arc<ModelSpec>>> = std::sync::LazyLock::new(|| {
    BUILT_IN
        .iter()
        .map(|b| {
            std::sync::Arc::new(ModelSpec {
                id: b.id.to_owned(),
                description: b.description.to_owned(),
                context_window: b.context_window,
                max_output_tokens: b.max_output_tokens,
                prices: TokenPrices {
                    input_per_mtok: b.prices.0,
                    output_per_mtok: b.prices.1,
                    cached_input_per_mtok: b.prices.2,
                    cache_write_per_mtok: 0,
                },
                backend: Backend::Mock(b.behaviour),
                limits: CallLimits::DEFAULT,
                tokenizer: Tokenizer::Words,
                embeddings: b.behaviour == MockBehaviour::Embed,
            })
        })
        .collect()
});

/// The built-in models (the `mock` provider).
pub fn built_in() -> &'static [std::sync::Arc<ModelSpec>] {
    &BUILT_IN_SPECS
}

/// The built-in model `id`, if there is one.
pub fn find(id: &str) -> Option<&'static std::sync::Arc<ModelSpec>> {
    built_in().iter().find(|m| m.id == id)
}

impl ModelSpec {
    pub fn provider(&self) -> &str {
        self.id.split_once('/').map_or(self.id.as_str(), |(p, _)| p)
    }

    pub fn to_message(&self) -> Model {
        Model {
            id: self.id.clone(),
            provider: self.provider().to_owned(),
            context_window: self.context_window,
            max_output_tokens: self.max_output_tokens,
            streaming: true,
            embeddings: self.embeddings,
            input_price_per_mtok: self.prices.input_per_mtok,
            output_price_per_mtok: self.prices.output_per_mtok,
            cached_input_price_per_mtok: self.prices.cached_input_per_mtok,
            description: self.description.clone(),
            rate_limits: None,
            health: None,
        }
    }

    /// The cost in nano-USD (1e-9 USD) of a run's tokens at its prices
    /// (exact; see [`promptops_account::prices::cost_nano_usd`]).
    pub fn cost_nano_usd(&self, usage: &Usage) -> i64 {
        promptops_account::prices::cost_nano_usd(
            &self.prices,
            promptops_account::prices::Tokens {
                input: usage.input_tokens,
                output: usage.output_tokens,
                cached_input: usage.cached_input_tokens,
                cache_write: usage.cache_write_input_tokens,
            },
        )
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
        let usage = |input_tokens, output_tokens, cached_input_tokens| Usage {
            input_tokens,
            output_tokens,
            cached_input_tokens,
            ..Usage::default()
        };
        assert_eq!(echo.cost_nano_usd(&usage(1_000, 500, 200)), 1_200_000);
        assert_eq!(echo.cost_nano_usd(&usage(0, 0, 0)), 0);
        // One token of input: 0.5 µUSD = 500 nUSD, exactly.
        assert_eq!(echo.cost_nano_usd(&usage(1, 0, 0)), 500);
        // The built-in prices are the seeded price book's.
        for model in built_in() {
            assert_eq!(promptops_account::prices::seed(&model.id), Some(model.prices));
        }
    }

    #[test]
    fn every_built_in_model_is_named_by_provider() {
        for model in built_in() {
            assert_eq!(model.provider(), "mock");
            assert!(find(&model.id).is_some());
        }
        assert!(find("openai/gpt-4o").is_none());
    }
}
