//! The price book: what a model's tokens cost at a time.
//!
//! Money is exact integers: prices are micro-USD (1e-6 USD) per 1M tokens,
//! costs nano-USD (1e-9 USD). A model's price is the org's newest entry in
//! force at the time, else the [`SEED`] list price shipped with promptops,
//! else the price its catalog entry declares. Entries apply from their time
//! until the next one; a run is priced at its start and keeps its prices.

use std::collections::BTreeMap;

use promptops_proto::common::v1::TokenPrices;

/// 2024-01-01T00:00:00Z: when the seeded list prices apply from.
pub const SEED_EFFECTIVE_FROM_MS: i64 = 1_704_067_200_000;

/// Public list prices (USD per 1M tokens × 1e6) of the OpenAI and Anthropic
/// models, as published by the providers in 2025: input, output, cached
/// input (cache read), cache write (0 = priced as input). Keyed by the
/// provider's model name under `openai/` and `anthropic/`; the built-in
/// mock models are listed with the prices they always had.
pub const SEED: &[(&str, [i64; 4])] = &[
    ("openai/gpt-5", [1_250_000, 10_000_000, 125_000, 0]),
    ("openai/gpt-5-mini", [250_000, 2_000_000, 25_000, 0]),
    ("openai/gpt-5-nano", [50_000, 400_000, 5_000, 0]),
    ("openai/gpt-4.1", [2_000_000, 8_000_000, 500_000, 0]),
    ("openai/gpt-4.1-mini", [400_000, 1_600_000, 100_000, 0]),
    ("openai/gpt-4.1-nano", [100_000, 400_000, 25_000, 0]),
    ("openai/gpt-4o", [2_500_000, 10_000_000, 1_250_000, 0]),
    ("openai/gpt-4o-mini", [150_000, 600_000, 75_000, 0]),
    ("openai/o3", [2_000_000, 8_000_000, 500_000, 0]),
    ("openai/o4-mini", [1_100_000, 4_400_000, 275_000, 0]),
    ("openai/text-embedding-3-small", [20_000, 0, 0, 0]),
    ("openai/text-embedding-3-large", [130_000, 0, 0, 0]),
    (
        "anthropic/claude-opus-4-1",
        [15_000_000, 75_000_000, 1_500_000, 18_750_000],
    ),
    (
        "anthropic/claude-opus-4-5",
        [5_000_000, 25_000_000, 500_000, 6_250_000],
    ),
    (
        "anthropic/claude-sonnet-4-5",
        [3_000_000, 15_000_000, 300_000, 3_750_000],
    ),
    (
        "anthropic/claude-sonnet-4",
        [3_000_000, 15_000_000, 300_000, 3_750_000],
    ),
    (
        "anthropic/claude-haiku-4-5",
        [1_000_000, 5_000_000, 100_000, 1_250_000],
    ),
    (
        "anthropic/claude-3-5-haiku",
        [800_000, 4_000_000, 80_000, 1_000_000],
    ),
    ("mock/echo", [500_000, 1_500_000, 250_000, 0]),
    ("mock/lorem", [1_000_000, 2_000_000, 500_000, 0]),
    ("mock/slow", [1_000_000, 2_000_000, 500_000, 0]),
    ("mock/fail", [0, 0, 0, 0]),
    ("mock/embed", [20_000, 0, 0, 0]),
];

pub fn prices(p: [i64; 4]) -> TokenPrices {
    TokenPrices {
        input_per_mtok: p[0],
        output_per_mtok: p[1],
        cached_input_per_mtok: p[2],
        cache_write_per_mtok: p[3],
    }
}

/// The seeded list price of `model`, if it has one.
pub fn seed(model: &str) -> Option<TokenPrices> {
    SEED.iter().find(|(id, _)| *id == model).map(|(_, p)| prices(*p))
}

/// Nano-USD (a cost) as an exact decimal string: `0.000058000`.
pub fn usd_from_nano(nano: i64) -> String {
    let sign = if nano < 0 { "-" } else { "" };
    let abs = nano.unsigned_abs();
    format!("{sign}{}.{:09}", abs / 1_000_000_000, abs % 1_000_000_000)
}

/// Micro-USD (a price per 1M tokens) as an exact decimal string: `2.500000`.
pub fn usd_from_micro(micro: i64) -> String {
    let sign = if micro < 0 { "-" } else { "" };
    let abs = micro.unsigned_abs();
    format!("{sign}{}.{:06}", abs / 1_000_000, abs % 1_000_000)
}

/// A run's tokens, as priced. `input` counts every input token, the cached
/// and cache-written ones included.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    pub input: u64,
    pub output: u64,
    pub cached_input: u64,
    pub cache_write: u64,
}

/// The cost in nano-USD of `tokens` at `prices`, rounded once to the nearest:
/// Σ tokens × micro-USD per 1M / 1000. Cached input is priced as cached,
/// cache writes as cache writes (as input when that price is 0), the rest
/// of the input as input. Exact: integer arithmetic in i128.
pub fn cost_nano_usd(prices: &TokenPrices, tokens: Tokens) -> i64 {
    let cached = tokens.cached_input.min(tokens.input);
    let written = tokens.cache_write.min(tokens.input - cached);
    let plain = tokens.input - cached - written;
    let write_price = if prices.cache_write_per_mtok == 0 {
        prices.input_per_mtok
    } else {
        prices.cache_write_per_mtok
    };
    let sum = i128::from(plain) * i128::from(prices.input_per_mtok)
        + i128::from(cached) * i128::from(prices.cached_input_per_mtok)
        + i128::from(written) * i128::from(write_price)
        + i128::from(tokens.output) * i128::from(prices.output_per_mtok);
    i64::try_from((sum + 500).div_euclid(1000)).unwrap_or(i64::MAX)
}

/// What is wrong with a price, by field (under `prices.`).
pub fn violations(prices: Option<&TokenPrices>) -> Vec<promptops_platform::errors::FieldViolation> {
    use promptops_platform::errors::FieldViolation;
    let Some(p) = prices else {
        return vec![FieldViolation::new("prices", "is required")];
    };
    // 10,000 USD per 1M tokens: far above any model, far below overflow.
    const MAX: i64 = 10_000_000_000;
    [
        ("prices.input_per_mtok", p.input_per_mtok),
        ("prices.output_per_mtok", p.output_per_mtok),
        ("prices.cached_input_per_mtok", p.cached_input_per_mtok),
        ("prices.cache_write_per_mtok", p.cache_write_per_mtok),
    ]
    .into_iter()
    .filter(|(_, v)| !(0..=MAX).contains(v))
    .map(|(field, _)| {
        FieldViolation::new(
            field,
            "must be 0 to 10,000,000,000 micro-USD per 1M tokens (never negative)",
        )
    })
    .collect()
}

/// One org's price entries: per model, by the time they apply from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PriceBook {
    pub entries: BTreeMap<String, BTreeMap<i64, TokenPrices>>,
}

impl PriceBook {
    /// The org's own price of `model` in force at `at_ms`, if any.
    pub fn own_at(&self, model: &str, at_ms: i64) -> Option<&TokenPrices> {
        self.entries
            .get(model)
            .and_then(|by_time| by_time.range(..=at_ms).next_back())
            .map(|(_, p)| p)
    }

    /// The price of `model` at `at_ms`: the org's entry, else the seed.
    pub fn at(&self, model: &str, at_ms: i64) -> Option<TokenPrices> {
        self.own_at(model, at_ms)
            .copied()
            .or_else(|| (at_ms >= SEED_EFFECTIVE_FROM_MS).then(|| seed(model)).flatten())
    }

    /// When the newest entry of `model` applies from.
    pub fn newest_from(&self, model: &str) -> Option<i64> {
        self.entries
            .get(model)
            .and_then(|by_time| by_time.keys().next_back().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_are_exact_with_cache_reads_and_writes_priced_apart() {
        let sonnet = seed("anthropic/claude-sonnet-4-5").unwrap();
        // 10,000 input: 2,000 read from the cache, 3,000 written to it; 1,000 output.
        // 5,000 × 3 + 2,000 × 0.3 + 3,000 × 3.75 + 1,000 × 15 USD per 1M
        // = 15,000 + 600 + 11,250 + 15,000 µUSD = 41,850 µUSD.
        let tokens = Tokens {
            input: 10_000,
            output: 1_000,
            cached_input: 2_000,
            cache_write: 3_000,
        };
        assert_eq!(cost_nano_usd(&sonnet, tokens), 41_850_000);
        // Without a cache-write price, writes are priced as input.
        let echo = seed("mock/echo").unwrap();
        let t = Tokens {
            input: 1_000,
            output: 500,
            cached_input: 200,
            cache_write: 0,
        };
        assert_eq!(cost_nano_usd(&echo, t), 1_200_000);
        assert_eq!(
            cost_nano_usd(
                &echo,
                Tokens {
                    input: 1,
                    ..Tokens::default()
                }
            ),
            500
        );
        // Counts that do not add up never go negative.
        let odd = Tokens {
            input: 10,
            cached_input: 50,
            cache_write: 50,
            output: 0,
        };
        assert_eq!(cost_nano_usd(&echo, odd), 2_500);
    }

    #[test]
    fn an_entry_applies_from_its_time_until_the_next() {
        let mut book = PriceBook::default();
        let p = |i| prices([i, 0, 0, 0]);
        book.entries
            .entry("mock/echo".into())
            .or_default()
            .extend([(2_000_000_000_000, p(7)), (2_000_000_100_000, p(9))]);
        assert_eq!(book.at("mock/echo", 1_999_999_999_999), seed("mock/echo"));
        assert_eq!(book.at("mock/echo", 2_000_000_000_000), Some(p(7)));
        assert_eq!(book.at("mock/echo", 2_000_000_099_999), Some(p(7)));
        assert_eq!(book.at("mock/echo", 2_000_000_100_000), Some(p(9)));
        assert_eq!(book.at("nobody/none", 2_000_000_100_000), None);
        assert_eq!(book.newest_from("mock/echo"), Some(2_000_000_100_000));
    }

    #[test]
    fn negative_and_absurd_prices_are_named() {
        let bad = TokenPrices {
            input_per_mtok: -1,
            output_per_mtok: 20_000_000_000,
            ..TokenPrices::default()
        };
        let fields: Vec<_> = violations(Some(&bad)).into_iter().map(|v| v.field).collect();
        assert_eq!(fields, ["prices.input_per_mtok", "prices.output_per_mtok"]);
        assert!(violations(Some(&TokenPrices::default())).is_empty());
        assert_eq!(violations(None).len(), 1);
    }
}
