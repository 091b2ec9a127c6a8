//! ROUGE-N, ROUGE-L and ROUGE-Lsum exactly as Google's `rouge-score`
//! package computes them (`RougeScorer(types, use_stemmer=…)`, its default
//! tokenizer, `split_summaries=False`).
//!
//! Tokens are the lowercased text's runs of `[a-z0-9]`; everything else,
//! non-ASCII letters included, separates tokens. With stemming, tokens longer
//! than three characters are replaced by their Porter stem (NLTK's variant,
//! [`super::porter`]). ROUGE-Lsum splits both texts into sentences at
//! newlines and scores the union of the longest common subsequences.
//!
//! The reference is the first argument, as `rouge-score`'s `score(target,
//! prediction)`. The parity tests compare every number with rouge-score 0.1.2.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use super::porter;

/// Which ROUGE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RougeKind {
    Rouge1,
    Rouge2,
    RougeL,
    RougeLsum,
}

impl RougeKind {
    pub const ALL: [RougeKind; 4] = [
        RougeKind::Rouge1,
        RougeKind::Rouge2,
        RougeKind::RougeL,
        RougeKind::RougeLsum,
    ];

    /// The name `rouge-score` uses: `rouge1`, `rouge2`, `rougeL`, `rougeLsum`.
    pub fn name(self) -> &'static str {
        match self {
            RougeKind::Rouge1 => "rouge1",
            RougeKind::Rouge2 => "rouge2",
            RougeKind::RougeL => "rougeL",
            RougeKind::RougeLsum => "rougeLsum",
        }
    }
}

impl fmt::Display for RougeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for RougeKind {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        RougeKind::ALL
            .into_iter()
            .find(|kind| kind.name() == name)
            .ok_or_else(|| format!("unknown ROUGE type {name:?}: use rouge1, rouge2, rougeL or rougeLsum"))
    }
}

/// Precision, recall and F1, each 0–1.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct RougeScore {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

impl RougeScore {
    fn new(precision: f64, recall: f64) -> Self {
        let f1 = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        RougeScore {
            precision,
            recall,
            f1,
        }
    }
}

/// One ROUGE score of `hypothesis` against `reference`.
pub fn rouge(kind: RougeKind, reference: &str, hypothesis: &str, stem: bool) -> RougeScore {
    match kind {
        RougeKind::Rouge1 | RougeKind::Rouge2 => {
            let n = if kind == RougeKind::Rouge1 { 1 } else { 2 };
            rouge_n(&tokenize(reference, stem), &tokenize(hypothesis, stem), n)
        }
        RougeKind::RougeL => rouge_l(&tokenize(reference, stem), &tokenize(hypothesis, stem)),
        RougeKind::RougeLsum => rouge_lsum(
            &sentences(reference)
                .map(|s| tokenize(s, stem))
                .collect::<Vec<_>>(),
            &sentences(hypothesis)
                .map(|s| tokenize(s, stem))
                .collect::<Vec<_>>(),
        ),
    }
}

/// `rouge-score`'s tokens: lowercase, `[a-z0-9]+` runs, stems of tokens
/// longer than three characters when `stem`.
pub fn tokenize(text: &str, stem: bool) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit()))
        .filter(|token| !token.is_empty())
        .map(|token| {
            if stem && token.len() > 3 {
                porter::stem(token)
            } else {
                token.to_owned()
            }
        })
        .filter(|token| !token.is_empty())
        .collect()
}

fn sentences(text: &str) -> impl Iterator<Item = &str> {
    text.split('\n').filter(|s| !s.is_empty())
}

fn rouge_n(reference: &[String], hypothesis: &[String], n: usize) -> RougeScore {
    let reference_ngrams = ngram_counts(reference, n);
    let hypothesis_ngrams = ngram_counts(hypothesis, n);
    let overlap: usize = reference_ngrams
        .iter()
        .map(|(ngram, &count)| count.min(hypothesis_ngrams.get(ngram).copied().unwrap_or(0)))
        .sum();
    let reference_total = reference.len().saturating_sub(n - 1);
    let hypothesis_total = hypothesis.len().saturating_sub(n - 1);
    RougeScore::new(
        overlap as f64 / hypothesis_total.max(1) as f64,
        overlap as f64 / reference_total.max(1) as f64,
    )
}

fn ngram_counts(tokens: &[String], n: usize) -> HashMap<&[String], usize> {
    let mut counts = HashMap::with_capacity(tokens.len());
    for ngram in tokens.windows(n) {
        *counts.entry(ngram).or_insert(0) += 1;
    }
    counts
}

fn rouge_l(reference: &[String], hypothesis: &[String]) -> RougeScore {
    if reference.is_empty() || hypothesis.is_empty() {
        return RougeScore::default();
    }
    let lcs = lcs_length(reference, hypothesis);
    RougeScore::new(
        lcs as f64 / hypothesis.len() as f64,
        lcs as f64 / reference.len() as f64,
    )
}

/// The LCS length with one row of the table at a time.
fn lcs_length(a: &[String], b: &[String]) -> usize {
    let mut previous = vec![0usize; b.len() + 1];
    let mut current = vec![0usize; b.len() + 1];
    for x in a {
        for (j, y) in b.iter().enumerate() {
            current[j + 1] = if x == y {
                previous[j] + 1
            } else {
                previous[j + 1].max(current[j])
            };
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

/// The full LCS table, `(a.len() + 1) × (b.len() + 1)`, row-major.
fn lcs_table(a: &[String], b: &[String]) -> Vec<usize> {
    let width = b.len() + 1;
    let mut table = vec![0usize; (a.len() + 1) * width];
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            table[i * width + j] = if a[i - 1] == b[j - 1] {
                table[(i - 1) * width + j - 1] + 1
            } else {
                table[(i - 1) * width + j].max(table[i * width + j - 1])
            };
        }
    }
    table
}

/// The indices into `a` of one longest common subsequence, chosen as
/// `rouge-score`'s `_backtrack_norec` chooses it.
fn lcs_indices(a: &[String], b: &[String]) -> Vec<usize> {
    let table = lcs_table(a, b);
    let width = b.len() + 1;
    let (mut i, mut j) = (a.len(), b.len());
    let mut indices = Vec::new();
    while i > 0 && j > 0 {
        if a[i - 1] == b[j - 1] {
            indices.push(i - 1);
            i -= 1;
            j -= 1;
        } else if table[i * width + j - 1] > table[(i - 1) * width + j] {
            j -= 1;
        } else {
            i -= 1;
        }
    }
    indices.reverse();
    indices
}

fn rouge_lsum(reference: &[Vec<String>], hypothesis: &[Vec<String>]) -> RougeScore {
    if reference.is_empty() || hypothesis.is_empty() {
        return RougeScore::default();
    }
    let reference_total: usize = reference.iter().map(Vec::len).sum();
    let hypothesis_total: usize = hypothesis.iter().map(Vec::len).sum();
    if reference_total == 0 || hypothesis_total == 0 {
        return RougeScore::default();
    }
    let mut reference_left: HashMap<&str, usize> = HashMap::new();
    let mut hypothesis_left: HashMap<&str, usize> = HashMap::new();
    for token in reference.iter().flatten() {
        *reference_left.entry(token).or_insert(0) += 1;
    }
    for token in hypothesis.iter().flatten() {
        *hypothesis_left.entry(token).or_insert(0) += 1;
    }
    let mut hits = 0usize;
    for sentence in reference {
        let mut union: Vec<usize> = hypothesis
            .iter()
            .flat_map(|candidate| lcs_indices(sentence, candidate))
            .collect();
        union.sort_unstable();
        union.dedup();
        for index in union {
            let token = sentence[index].as_str();
            let (Some(in_hypothesis), Some(in_reference)) =
                (hypothesis_left.get_mut(token), reference_left.get_mut(token))
            else {
                continue;
            };
            if *in_hypothesis > 0 && *in_reference > 0 {
                hits += 1;
                *in_hypothesis -= 1;
                *in_reference -= 1;
            }
        }
    }
    RougeScore::new(
        hits as f64 / hypothesis_total as f64,
        hits as f64 / reference_total as f64,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn tokenizes_like_rouge_score() {
        assert_eq!(
            tokenize("The quick, brown FOX!", false),
            ["the", "quick", "brown", "fox"]
        );
        assert_eq!(tokenize("café naïve 3.14", false), ["caf", "na", "ve", "3", "14"]);
        assert_eq!(tokenize("running quickly", true), ["run", "quickli"]);
        assert!(tokenize("  …  ", false).is_empty());
    }

    #[test]
    fn rouge_score_readme_example() {
        // rouge-score's README: score('The quick brown fox jumps over the lazy dog',
        //                             'The quick brown dog jumps on the log.')
        let reference = "The quick brown fox jumps over the lazy dog";
        let hypothesis = "The quick brown dog jumps on the log.";
        let r1 = rouge(RougeKind::Rouge1, reference, hypothesis, false);
        assert!(close(r1.precision, 0.75) && close(r1.recall, 2.0 / 3.0), "{r1:?}");
        let rl = rouge(RougeKind::RougeL, reference, hypothesis, false);
        assert!(
            close(rl.precision, 0.625) && close(rl.recall, 5.0 / 9.0),
            "{rl:?}"
        );
    }

    #[test]
    fn empty_texts_score_zero() {
        for kind in RougeKind::ALL {
            assert_eq!(rouge(kind, "", "something", false), RougeScore::default());
            assert_eq!(rouge(kind, "something", "", true), RougeScore::default());
        }
    }

    #[test]
    fn lsum_takes_the_union_over_sentences() {
        // The same sentences in the other order: one LCS over the whole text
        // finds one sentence, the union over sentences finds both.
        let reference = "the cat sat\nthe dog ran";
        let hypothesis = "the dog ran\nthe cat sat";
        let lsum = rouge(RougeKind::RougeLsum, reference, hypothesis, false);
        let l = rouge(RougeKind::RougeL, reference, hypothesis, false);
        assert!(close(lsum.f1, 1.0), "{lsum:?}");
        assert!(close(l.f1, 0.5), "{l:?}");
    }

    #[test]
    fn kinds_parse_by_their_names() {
        for kind in RougeKind::ALL {
            assert_eq!(kind.name().parse::<RougeKind>(), Ok(kind));
        }
        assert!("rouge3".parse::<RougeKind>().is_err());
    }
}
