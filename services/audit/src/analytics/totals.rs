//! What a set of runs adds up to: counts, tokens, cost, and mergeable
//! latency sketches. Pure; the projection and the queries share it.

use std::collections::BTreeMap;

use promptops_platform::db::to_u64;
use promptops_proto::audit::v1::{Kpis, Percentiles};
use sketches_ddsketch::{Config, DDSketch};

use super::BucketRow;

/// The sketches' relative error: a reported percentile is within 1% of a
/// value whose rank is exactly that percentile's.
pub const RELATIVE_ERROR: f64 = 0.01;

pub fn new_sketch() -> DDSketch {
    // 2,048 bins at 1% cover 1 µs to beyond a day in ms.
    DDSketch::new(Config::new(RELATIVE_ERROR, 2048, 1.0e-3))
}

#[derive(Clone)]
pub struct Totals {
    pub runs: u64,
    pub completed: u64,
    pub failed: u64,
    pub cancelled: u64,
    pub errors: BTreeMap<String, u64>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    pub cost_nano_usd: i64,
    /// Latency of completed runs, ms.
    pub latency: DDSketch,
    /// Time to first token of completed runs, ms.
    pub ttft: DDSketch,
}

impl std::fmt::Debug for Totals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Totals")
            .field("runs", &self.runs)
            .field("failed", &self.failed)
            .field("latency_count", &self.latency.count())
            .finish_non_exhaustive()
    }
}

impl Default for Totals {
    fn default() -> Self {
        Self {
            runs: 0,
            completed: 0,
            failed: 0,
            cancelled: 0,
            errors: BTreeMap::new(),
            input_tokens: 0,
            output_tokens: 0,
            cached_input_tokens: 0,
            cost_nano_usd: 0,
            latency: new_sketch(),
            ttft: new_sketch(),
        }
    }
}

/// The text columns of a bucket row.
#[derive(Debug)]
pub struct Encoded {
    pub errors: String,
    pub latency: String,
    pub ttft: String,
}

#[derive(Debug, thiserror::Error)]
#[error("analytics bucket: {0}")]
pub struct CodecError(String);

fn decode_sketch(text: &str) -> Result<DDSketch, CodecError> {
    if text.is_empty() {
        return Ok(new_sketch());
    }
    serde_json::from_str(text).map_err(|e| CodecError(e.to_string()))
}

/// An empty sketch is stored as "" (its min and max are infinite, which
/// JSON cannot carry).
fn encode_sketch(sketch: &DDSketch) -> Result<String, CodecError> {
    if sketch.count() == 0 {
        return Ok(String::new());
    }
    serde_json::to_string(sketch).map_err(|e| CodecError(e.to_string()))
}

impl Totals {
    pub fn from_row(row: &BucketRow) -> Result<Self, CodecError> {
        Ok(Self {
            runs: to_u64(row.runs),
            completed: to_u64(row.completed),
            failed: to_u64(row.failed),
            cancelled: to_u64(row.cancelled),
            errors: if row.errors.is_empty() {
                BTreeMap::new()
            } else {
                serde_json::from_str(&row.errors).map_err(|e| CodecError(e.to_string()))?
            },
            input_tokens: to_u64(row.input_tokens),
            output_tokens: to_u64(row.output_tokens),
            cached_input_tokens: to_u64(row.cached_input_tokens),
            cost_nano_usd: row.cost_nano_usd,
            latency: decode_sketch(&row.latency)?,
            ttft: decode_sketch(&row.ttft)?,
        })
    }

    pub fn encode(&self) -> Result<Encoded, CodecError> {
        Ok(Encoded {
            errors: serde_json::to_string(&self.errors).map_err(|e| CodecError(e.to_string()))?,
            latency: encode_sketch(&self.latency)?,
            ttft: encode_sketch(&self.ttft)?,
        })
    }

    pub fn merge(&mut self, other: &Totals) {
        self.runs += other.runs;
        self.completed += other.completed;
        self.failed += other.failed;
        self.cancelled += other.cancelled;
        for (class, n) in &other.errors {
            *self.errors.entry(class.clone()).or_default() += n;
        }
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cached_input_tokens += other.cached_input_tokens;
        self.cost_nano_usd += other.cost_nano_usd;
        // Same configuration on both sides: merging cannot fail.
        let _ = self.latency.merge(&other.latency);
        let _ = self.ttft.merge(&other.ttft);
    }

    pub fn kpis(&self) -> Kpis {
        Kpis {
            runs: self.runs,
            completed: self.completed,
            failed: self.failed,
            cancelled: self.cancelled,
            error_rate: if self.runs == 0 {
                0.0
            } else {
                self.failed as f64 / self.runs as f64
            },
            errors_by_class: self.errors.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            cached_input_tokens: self.cached_input_tokens,
            cost_nano_usd: self.cost_nano_usd,
            latency_ms: Some(percentiles(&self.latency)),
            time_to_first_token_ms: Some(percentiles(&self.ttft)),
        }
    }
}

pub fn percentiles(sketch: &DDSketch) -> Percentiles {
    let q = |q: f64| sketch.quantile(q).ok().flatten().unwrap_or(0.0);
    Percentiles {
        p50: q(0.50),
        p95: q(0.95),
        p99: q(0.99),
        count: sketch.count() as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exact percentile as the sketch defines rank: the value at
    /// `floor(q · (n − 1))` of the sorted sample.
    fn exact(sorted: &[f64], q: f64) -> f64 {
        sorted[(q * (sorted.len() as f64 - 1.0)) as usize]
    }

    #[test]
    fn percentiles_are_within_the_stated_error_even_after_merging() {
        // A long-tailed latency sample: mostly 20–80 ms, a tail to 4 s.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 1_000_000) as f64 / 1_000_000.0
        };
        let sample: Vec<f64> = (0..20_000)
            .map(|i| {
                let u = next();
                if i % 50 == 0 {
                    400.0 + u * 3_600.0
                } else {
                    20.0 + u * 60.0
                }
            })
            .collect();
        // Split over 24 buckets, merged as a query would.
        let mut merged = Totals::default();
        for chunk in sample.chunks(sample.len() / 24 + 1) {
            let mut bucket = Totals::default();
            for v in chunk {
                bucket.latency.add(*v);
            }
            // Through the row encoding, as stored.
            let encoded = bucket.encode().unwrap();
            let decoded = decode_sketch(&encoded.latency).unwrap();
            merged.merge(&Totals {
                latency: decoded,
                ..Totals::default()
            });
        }
        let mut sorted = sample.clone();
        sorted.sort_by(f64::total_cmp);
        let p = percentiles(&merged.latency);
        assert_eq!(p.count, 20_000);
        for (q, got) in [(0.50, p.p50), (0.95, p.p95), (0.99, p.p99)] {
            let want = exact(&sorted, q);
            let error = (got - want).abs() / want;
            assert!(error <= RELATIVE_ERROR, "p{q}: {got} vs {want} ({error})");
        }
    }

    #[test]
    fn empty_sketches_round_trip() {
        let totals = Totals::default();
        let encoded = totals.encode().unwrap();
        assert_eq!(encoded.latency, "");
        assert_eq!(decode_sketch("").unwrap().count(), 0);
        assert_eq!(percentiles(&totals.latency).p99, 0.0);
    }
}
