//! Metric throughput: sentence BLEU, corpus BLEU and ROUGE-L (with and
//! without stemming) over 10,000 pairs on one thread.
//!
//! `cargo bench -p promptops-evaluation --bench metrics`
//! (`METRICS_PAIRS` changes the pair count, `METRICS_ROUNDS` the rounds).
//! The pairs are the parity fixtures' 260 varied pairs, repeated; every pair
//! is scored from scratch (nothing is cached between pairs). Prints the median
//! and the fastest and slowest of the rounds.

use std::hint::black_box;
use std::time::{Duration, Instant};

use promptops_evaluation::metrics::bleu::{corpus_bleu, sentence_bleu};
use promptops_evaluation::metrics::rouge::{RougeKind, rouge};

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let fixtures: serde_json::Value = serde_json::from_str(include_str!("../tests/fixtures/parity.json"))
        .unwrap_or_else(|e| unreachable!("parity.json: {e}"));
    let base: Vec<(String, String)> = fixtures["pairs"]
        .as_array()
        .unwrap_or_else(|| unreachable!("pairs"))
        .iter()
        .map(|p| {
            (
                p["hypothesis"].as_str().unwrap_or_default().to_owned(),
                p["reference"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let count = env_number("METRICS_PAIRS", 10_000);
    let rounds = env_number("METRICS_ROUNDS", 7).max(1);
    let pairs: Vec<(&str, &str)> = base
        .iter()
        .cycle()
        .take(count)
        .map(|(h, r)| (h.as_str(), r.as_str()))
        .collect();
    let words: usize = pairs
        .iter()
        .map(|(h, r)| h.split_whitespace().count() + r.split_whitespace().count())
        .sum();
    eprintln!(
        "{count} pairs, {:.1} words per pair on average, {rounds} rounds",
        words as f64 / count as f64
    );

    let cases: [(&str, &dyn Fn() -> f64); 5] = [
        ("sentence BLEU", &|| {
            pairs.iter().map(|(h, r)| sentence_bleu(h, r)).sum()
        }),
        ("corpus BLEU", &|| corpus_bleu(pairs.iter().copied())),
        ("ROUGE-L", &|| {
            pairs
                .iter()
                .map(|(h, r)| rouge(RougeKind::RougeL, r, h, false).f1)
                .sum()
        }),
        ("ROUGE-L stemmed", &|| {
            pairs
                .iter()
                .map(|(h, r)| rouge(RougeKind::RougeL, r, h, true).f1)
                .sum()
        }),
        ("BLEU (sentence + corpus) + ROUGE-L", &|| {
            let sentences: f64 = pairs.iter().map(|(h, r)| sentence_bleu(h, r)).sum();
            let rouge_l: f64 = pairs
                .iter()
                .map(|(h, r)| rouge(RougeKind::RougeL, r, h, false).f1)
                .sum();
            sentences + corpus_bleu(pairs.iter().copied()) + rouge_l
        }),
    ];
    for (name, run) in cases {
        let mut times: Vec<Duration> = (0..rounds)
            .map(|_| {
                let start = Instant::now();
                black_box(run());
                start.elapsed()
            })
            .collect();
        times.sort();
        let median = times[times.len() / 2];
        eprintln!(
            "{name:<36} median {:>8.1} ms  (min {:.1}, max {:.1})  {:>9.0} pairs/s",
            ms(median),
            ms(times[0]),
            ms(times[times.len() - 1]),
            count as f64 / median.as_secs_f64()
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
