//! BLEU exactly as sacrebleu computes it with its defaults.
//!
//! - Tokenizer `13a` (mteval-v13a, as used by WMT): [`tokenize_13a`].
//! - Up to 4-grams, one reference per segment, brevity penalty from the
//!   reference length, no lowercasing.
//! - Corpus BLEU sums the segments' statistics first and uses no smoothing
//!   beyond sacrebleu's default `exp` (which only matters when an order has
//!   no match at all).
//! - Sentence BLEU uses `exp` smoothing and the effective order (orders the
//!   hypothesis is too short to have are left out), as
//!   `sacrebleu.sentence_bleu` does.
//!
//! Scores are 0–100. The parity tests compare every number here with
//! sacrebleu 2.6.0 on the fixtures under `tests/fixtures/`.

use std::collections::HashMap;

/// The highest n-gram order counted.
pub const MAX_ORDER: usize = 4;

/// The sufficient statistics of one segment (or, summed, of a corpus).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BleuStats {
    /// Tokens in the hypothesis.
    pub hypothesis_len: usize,
    /// Tokens in the reference.
    pub reference_len: usize,
    /// Matched n-grams per order (clipped by the reference's counts).
    pub correct: [usize; MAX_ORDER],
    /// The hypothesis's n-grams per order.
    pub total: [usize; MAX_ORDER],
}

impl BleuStats {
    /// The statistics of one hypothesis against one reference.
    pub fn of_segment(hypothesis: &str, reference: &str) -> Self {
        let hypothesis = tokenize_13a(rstrip(hypothesis));
        let reference = tokenize_13a(rstrip(reference));
        let hypothesis: Vec<&str> = hypothesis.split(' ').filter(|t| !t.is_empty()).collect();
        let reference: Vec<&str> = reference.split(' ').filter(|t| !t.is_empty()).collect();
        let reference_ngrams = ngram_counts(&reference);
        let mut stats = BleuStats {
            hypothesis_len: hypothesis.len(),
            reference_len: reference.len(),
            ..BleuStats::default()
        };
        for (ngram, count) in ngram_counts(&hypothesis) {
            let order = ngram.len() - 1;
            stats.total[order] += count;
            if let Some(&in_reference) = reference_ngrams.get(ngram) {
                stats.correct[order] += count.min(in_reference);
            }
        }
        stats
    }

    /// BLEU from these statistics with `exp` smoothing; `effective_order`
    /// leaves out the orders that have no n-grams at all.
    pub fn score(&self, effective_order: bool) -> f64 {
        let brevity_penalty = if self.hypothesis_len < self.reference_len {
            if self.hypothesis_len > 0 {
                (1.0 - self.reference_len as f64 / self.hypothesis_len as f64).exp()
            } else {
                0.0
            }
        } else {
            1.0
        };
        if self.correct.iter().all(|&c| c == 0) {
            return 0.0;
        }
        let mut precisions = [0.0_f64; MAX_ORDER];
        let mut smooth = 1.0_f64;
        let mut orders = MAX_ORDER;
        for (n, precision) in precisions.iter_mut().enumerate() {
            if self.total[n] == 0 {
                break;
            }
            if effective_order {
                orders = n + 1;
            }
            *precision = if self.correct[n] == 0 {
                smooth *= 2.0;
                100.0 / (smooth * self.total[n] as f64)
            } else {
                100.0 * self.correct[n] as f64 / self.total[n] as f64
            };
        }
        let log_sum: f64 = precisions[..orders]
            .iter()
            .map(|&p| if p == 0.0 { -9_999_999_999.0 } else { p.ln() })
            .sum();
        brevity_penalty * (log_sum / orders as f64).exp()
    }
}

/// Corpus BLEU sums the segments' statistics.
impl std::ops::Add for BleuStats {
    type Output = BleuStats;

    fn add(mut self, other: BleuStats) -> BleuStats {
        self.hypothesis_len += other.hypothesis_len;
        self.reference_len += other.reference_len;
        for order in 0..MAX_ORDER {
            self.correct[order] += other.correct[order];
            self.total[order] += other.total[order];
        }
        self
    }
}

impl std::iter::Sum for BleuStats {
    fn sum<I: Iterator<Item = BleuStats>>(stats: I) -> BleuStats {
        stats.fold(BleuStats::default(), |sum, s| sum + s)
    }
}

/// Sentence BLEU of one hypothesis against one reference (0–100).
pub fn sentence_bleu(hypothesis: &str, reference: &str) -> f64 {
    BleuStats::of_segment(hypothesis, reference).score(true)
}

/// Corpus BLEU of aligned hypotheses and references (0–100): the segments'
/// statistics are summed, then scored once.
pub fn corpus_bleu<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> f64 {
    pairs
        .into_iter()
        .map(|(hypothesis, reference)| BleuStats::of_segment(hypothesis, reference))
        .sum::<BleuStats>()
        .score(false)
}

/// Every n-gram of order 1 to [`MAX_ORDER`] with its count.
fn ngram_counts<'t, 's>(tokens: &'t [&'s str]) -> HashMap<&'t [&'s str], usize> {
    let mut counts = HashMap::with_capacity(tokens.len() * MAX_ORDER);
    for n in 1..=MAX_ORDER.min(tokens.len()) {
        for ngram in tokens.windows(n) {
            *counts.entry(ngram).or_insert(0) += 1;
        }
    }
    counts
}

/// Python's `str.isspace()`: Unicode white space plus the four ASCII
/// separators U+001C–U+001F, which Python splits on and Rust does not.
pub(crate) fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

fn rstrip(text: &str) -> &str {
    text.trim_end_matches(is_python_space)
}

/// The `13a` tokenizer: tokens separated by single spaces.
///
/// The same steps as sacrebleu's `Tokenizer13a` and `TokenizerRegexp`: drop
/// `<skipped>` and hyphenated line breaks, unescape four HTML entities, put
/// spaces around most ASCII punctuation, split `.` and `,` off unless they sit
/// between digits, split `-` after a digit, and collapse white space.
pub fn tokenize_13a(line: &str) -> String {
    let mut line = line
        .replace("<skipped>", "")
        .replace("-\n", "")
        .replace('\n', " ");
    if line.contains('&') {
        line = line
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
            .replace("&lt;", "<")
            .replace("&gt;", ">");
    }
    let chars: Vec<char> = format!(" {line} ").chars().collect();

    // 1. Spaces around the punctuation in [{-~[-` -&(-+:-@/].
    let mut spaced = Vec::with_capacity(chars.len() * 2);
    for &c in &chars {
        if is_13a_punctuation(c) {
            spaced.extend([' ', c, ' ']);
        } else {
            spaced.push(c);
        }
    }
    // 2. ([^0-9])([.,]) → "\1 \2 "
    let spaced = replace_pairs(
        &spaced,
        |a, b| !a.is_ascii_digit() && is_period_or_comma(b),
        |a, b| [Some(a), Some(' '), Some(b), Some(' ')],
    );
    // 3. ([.,])([^0-9]) → " \1 \2"
    let spaced = replace_pairs(
        &spaced,
        |a, b| is_period_or_comma(a) && !b.is_ascii_digit(),
        |a, b| [Some(' '), Some(a), Some(' '), Some(b)],
    );
    // 4. ([0-9])(-) → "\1 \2 "
    let spaced = replace_pairs(
        &spaced,
        |a, b| a.is_ascii_digit() && b == '-',
        |a, b| [Some(a), Some(' '), Some(b), Some(' ')],
    );

    let text: String = spaced.into_iter().collect();
    let mut tokens = String::with_capacity(text.len());
    for token in text.split(is_python_space).filter(|t| !t.is_empty()) {
        if !tokens.is_empty() {
            tokens.push(' ');
        }
        tokens.push_str(token);
    }
    tokens
}

fn is_13a_punctuation(c: char) -> bool {
    matches!(c, '{'..='~' | '['..='`' | ' '..='&' | '('..='+' | ':'..='@' | '/')
}

fn is_period_or_comma(c: char) -> bool {
    c == '.' || c == ','
}

/// A regex substitution of a two-character pattern, scanning left to right
/// without overlaps, as Python's `re.sub` does.
fn replace_pairs(
    chars: &[char],
    matches: impl Fn(char, char) -> bool,
    replacement: impl Fn(char, char) -> [Option<char>; 4],
) -> Vec<char> {
    let mut out = Vec::with_capacity(chars.len() + chars.len() / 2);
    let mut i = 0;
    while i < chars.len() {
        match chars.get(i + 1) {
            Some(&next) if matches(chars[i], next) => {
                out.extend(replacement(chars[i], next).into_iter().flatten());
                i += 2;
            }
            _ => {
                out.push(chars[i]);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizes_like_13a() {
        assert_eq!(tokenize_13a("Hello, world."), "Hello , world .");
        assert_eq!(tokenize_13a("3.14 and 1,000 stay"), "3.14 and 1,000 stay");
        assert_eq!(tokenize_13a("pages 10-20"), "pages 10 - 20");
        assert_eq!(tokenize_13a("Tom &amp; Jerry"), "Tom & Jerry");
        assert_eq!(tokenize_13a("don't (stop)"), "don't ( stop )");
        assert_eq!(tokenize_13a("a.. b"), "a . . b");
        assert_eq!(tokenize_13a("<skipped>x"), "x");
        assert_eq!(tokenize_13a("  \t "), "");
    }

    #[test]
    fn identical_sentences_score_100() {
        let score = sentence_bleu("The cat sat on the mat.", "The cat sat on the mat.");
        assert!((score - 100.0).abs() < 1e-9, "{score}");
    }

    #[test]
    fn no_match_scores_zero() {
        assert_eq!(sentence_bleu("alpha beta", "gamma delta"), 0.0);
        assert_eq!(sentence_bleu("", "gamma delta"), 0.0);
        assert_eq!(corpus_bleu([("", "")]), 0.0);
    }

    #[test]
    fn a_short_hypothesis_is_penalised() {
        let full = sentence_bleu("one two three four five six", "one two three four five six");
        let short = sentence_bleu("one two three four", "one two three four five six");
        assert!(short < full);
        // bp = exp(1 - 6/4); all precisions are 100.
        assert!((short - 100.0 * (1.0_f64 - 1.5).exp()).abs() < 1e-9, "{short}");
    }

    #[test]
    fn corpus_bleu_sums_statistics_before_scoring() {
        let pairs = [("a b c d", "a b c d"), ("e f g h", "e f x h")];
        let by_hand =
            BleuStats::of_segment("a b c d", "a b c d") + BleuStats::of_segment("e f g h", "e f x h");
        let by_hand = by_hand.score(false);
        assert_eq!(corpus_bleu(pairs), by_hand);
        let mean_of_sentences =
            (sentence_bleu("a b c d", "a b c d") + sentence_bleu("e f g h", "e f x h")) / 2.0;
        assert_ne!(corpus_bleu(pairs), mean_of_sentences);
    }
}
