//! Metrics: pure functions of a hypothesis and a reference, each matching a
//! named reference implementation to 4 decimal places (see each module).
//!
//! - [`bleu`]: sacrebleu's BLEU, corpus and sentence level (0–100).
//! - [`rouge`]: rouge-score's ROUGE-1, ROUGE-2, ROUGE-L and ROUGE-Lsum,
//!   with and without stemming (0–1).
//! - [`porter`]: NLTK's Porter stemmer, which ROUGE's stemming uses.

pub mod bleu;
pub mod porter;
pub mod rouge;

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use rouge::{RougeKind, RougeScore};

/// A reference-based metric the offline scorer knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReferenceMetric {
    Bleu,
    Rouge(RougeKind),
}

impl ReferenceMetric {
    pub const NAMES: &'static str = "bleu, rouge1, rouge2, rougeL or rougeLsum";

    pub fn name(self) -> &'static str {
        match self {
            ReferenceMetric::Bleu => "bleu",
            ReferenceMetric::Rouge(kind) => kind.name(),
        }
    }
}

impl fmt::Display for ReferenceMetric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ReferenceMetric {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        if name == "bleu" {
            return Ok(ReferenceMetric::Bleu);
        }
        name.parse::<RougeKind>()
            .map(ReferenceMetric::Rouge)
            .map_err(|_| format!("unknown metric {name:?}: use {}", Self::NAMES))
    }
}

/// The scores of aligned segments: one per segment and one for the corpus.
///
/// For BLEU `corpus` is corpus BLEU (not the mean of the sentences) and each
/// sentence is sentence BLEU, 0–100. For ROUGE each sentence is precision,
/// recall and F1, and `corpus` is the mean F1.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CorpusScores {
    pub metric: &'static str,
    pub corpus: f64,
    pub sentences: SentenceScores,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum SentenceScores {
    Bleu(Vec<f64>),
    Rouge(Vec<RougeScore>),
}

/// Why segments cannot be scored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScoringError {
    #[error(
        "{hypotheses} hypotheses but {references} references: the files must have a segment per line, aligned"
    )]
    CountMismatch { hypotheses: usize, references: usize },
    #[error("there are no segments to score")]
    Empty,
    #[error("stemming applies to ROUGE only, not to {0}")]
    StemNotApplicable(ReferenceMetric),
}

/// Scores each hypothesis against the reference at the same index.
pub fn score_corpus<S: AsRef<str>>(
    metric: ReferenceMetric,
    hypotheses: &[S],
    references: &[S],
    stem: bool,
) -> Result<CorpusScores, ScoringError> {
    if hypotheses.len() != references.len() {
        return Err(ScoringError::CountMismatch {
            hypotheses: hypotheses.len(),
            references: references.len(),
        });
    }
    if hypotheses.is_empty() {
        return Err(ScoringError::Empty);
    }
    let pairs = || {
        hypotheses
            .iter()
            .map(AsRef::as_ref)
            .zip(references.iter().map(AsRef::as_ref))
    };
    match metric {
        ReferenceMetric::Bleu => {
            if stem {
                return Err(ScoringError::StemNotApplicable(metric));
            }
            // Each segment is tokenized and counted once for both levels.
            let stats: Vec<bleu::BleuStats> =
                pairs().map(|(h, r)| bleu::BleuStats::of_segment(h, r)).collect();
            let corpus: bleu::BleuStats = stats.iter().copied().sum();
            Ok(CorpusScores {
                metric: metric.name(),
                corpus: corpus.score(false),
                sentences: SentenceScores::Bleu(stats.iter().map(|s| s.score(true)).collect()),
            })
        }
        ReferenceMetric::Rouge(kind) => {
            let sentences: Vec<RougeScore> = pairs().map(|(h, r)| rouge::rouge(kind, r, h, stem)).collect();
            let corpus = sentences.iter().map(|s| s.f1).sum::<f64>() / sentences.len() as f64;
            Ok(CorpusScores {
                metric: metric.name(),
                corpus,
                sentences: SentenceScores::Rouge(sentences),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mismatched_and_empty_inputs_are_refused() {
        let one = ["a"];
        let two = ["a", "b"];
        assert_eq!(
            score_corpus(ReferenceMetric::Bleu, &one, &two, false),
            Err(ScoringError::CountMismatch {
                hypotheses: 1,
                references: 2
            })
        );
        let none: [&str; 0] = [];
        assert_eq!(
            score_corpus(ReferenceMetric::Bleu, &none, &none, false),
            Err(ScoringError::Empty)
        );
        assert!(matches!(
            score_corpus(ReferenceMetric::Bleu, &one, &one, true),
            Err(ScoringError::StemNotApplicable(_))
        ));
    }

    #[test]
    fn rouge_corpus_is_the_mean_f1() {
        let hypotheses = ["the cat sat", "nothing alike"];
        let references = ["the cat sat", "completely different"];
        let scores = score_corpus(
            ReferenceMetric::Rouge(RougeKind::Rouge1),
            &hypotheses,
            &references,
            false,
        );
        let scores = scores.unwrap_or_else(|e| unreachable!("{e}"));
        assert!((scores.corpus - 0.5).abs() < 1e-12);
        let json = serde_json::to_value(&scores).unwrap_or_default();
        assert_eq!(json["metric"], "rouge1");
        assert_eq!(json["sentences"][0]["f1"], 1.0);
    }

    #[test]
    fn metric_names_round_trip() {
        for name in ["bleu", "rouge1", "rouge2", "rougeL", "rougeLsum"] {
            assert_eq!(name.parse::<ReferenceMetric>().map(|m| m.name()), Ok(name));
        }
        assert!("ter".parse::<ReferenceMetric>().is_err());
    }
}
