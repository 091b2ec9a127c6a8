//! Parity with the reference implementations: every score in
//! `tests/fixtures/parity.json` was computed by sacrebleu 2.6.0 and
//! rouge-score 0.1.2 (with NLTK 3.10.4's Porter stemmer) from the pairs beside
//! it, by `scripts/eval-reference/make_parity_fixtures.py`. The metrics must
//! agree to far better than the 4 decimal places the product promises: they
//! do the same arithmetic, so only floating-point noise may differ.

use promptops_evaluation::metrics::bleu::{corpus_bleu, sentence_bleu};
use promptops_evaluation::metrics::porter;
use promptops_evaluation::metrics::rouge::{RougeKind, rouge};
use serde_json::Value;

const TOLERANCE: f64 = 1e-9;

fn fixtures() -> Value {
    let text = include_str!("fixtures/parity.json");
    serde_json::from_str(text).unwrap_or_else(|e| unreachable!("parity.json is valid JSON: {e}"))
}

fn number(value: &Value) -> f64 {
    value
        .as_f64()
        .unwrap_or_else(|| unreachable!("a number: {value}"))
}

fn text(value: &Value) -> &str {
    value
        .as_str()
        .unwrap_or_else(|| unreachable!("a string: {value}"))
}

fn pairs(fixtures: &Value) -> &Vec<Value> {
    fixtures["pairs"]
        .as_array()
        .unwrap_or_else(|| unreachable!("pairs"))
}

#[test]
fn at_least_200_varied_pairs() {
    let fixtures = fixtures();
    let pairs = pairs(&fixtures);
    assert!(pairs.len() >= 200, "{}", pairs.len());
    let has = |f: &dyn Fn(&str, &str) -> bool| {
        pairs
            .iter()
            .any(|p| f(text(&p["hypothesis"]), text(&p["reference"])))
    };
    assert!(has(&|h, r| h == r && !h.is_empty()), "identical pairs");
    assert!(has(&|h, _| h.is_empty()), "empty hypotheses");
    assert!(has(&|_, r| r.is_empty()), "empty references");
    assert!(has(&|h, _| !h.is_ascii()), "unicode");
    assert!(has(&|h, _| h.contains("3.14") || h.contains("1,000")), "numbers");
    assert!(has(&|h, _| h.contains('\n')), "several lines");
}

#[test]
fn sentence_bleu_matches_sacrebleu() {
    let fixtures = fixtures();
    let mut worst = 0.0_f64;
    for (i, pair) in pairs(&fixtures).iter().enumerate() {
        let expected = number(&pair["sentence_bleu"]);
        let actual = sentence_bleu(text(&pair["hypothesis"]), text(&pair["reference"]));
        worst = worst.max((expected - actual).abs());
        assert!(
            (expected - actual).abs() <= TOLERANCE,
            "pair {i}: sacrebleu {expected}, ours {actual}\n  hyp {:?}\n  ref {:?}",
            pair["hypothesis"],
            pair["reference"]
        );
    }
    eprintln!("sentence BLEU: largest difference {worst:e}");
}

#[test]
fn corpus_bleu_matches_sacrebleu() {
    let fixtures = fixtures();
    let pairs = pairs(&fixtures);
    let slices = fixtures["corpus_bleu"]
        .as_object()
        .unwrap_or_else(|| unreachable!("corpus_bleu"));
    assert!(slices.len() >= 4);
    for (name, slice) in slices {
        let indices = slice["indices"]
            .as_array()
            .unwrap_or_else(|| unreachable!("indices"));
        let selected = indices.iter().map(|i| {
            let pair = &pairs[i.as_u64().unwrap_or_else(|| unreachable!("index")) as usize];
            (text(&pair["hypothesis"]), text(&pair["reference"]))
        });
        let expected = number(&slice["bleu"]);
        let actual = corpus_bleu(selected);
        assert!(
            (expected - actual).abs() <= TOLERANCE,
            "{name}: sacrebleu {expected}, ours {actual}"
        );
    }
}

#[test]
fn rouge_matches_rouge_score_with_and_without_stemming() {
    let fixtures = fixtures();
    let mut checked = 0;
    for (i, pair) in pairs(&fixtures).iter().enumerate() {
        for (key, stem) in [("rouge", false), ("rouge_stemmed", true)] {
            for kind in RougeKind::ALL {
                let expected = &pair[key][kind.name()];
                let actual = rouge(kind, text(&pair["reference"]), text(&pair["hypothesis"]), stem);
                for (field, value) in [
                    ("precision", actual.precision),
                    ("recall", actual.recall),
                    ("f1", actual.f1),
                ] {
                    let index = ["precision", "recall", "f1"]
                        .iter()
                        .position(|f| *f == field)
                        .unwrap_or(0);
                    let reference_value = number(&expected[index]);
                    assert!(
                        (reference_value - value).abs() <= TOLERANCE,
                        "pair {i} {kind} stem={stem} {field}: rouge-score {reference_value}, ours {value}\n  hyp {:?}\n  ref {:?}",
                        pair["hypothesis"],
                        pair["reference"]
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= 200 * 4 * 3 * 2);
}

#[test]
fn porter_stems_match_nltk() {
    let table = include_str!("fixtures/porter.tsv");
    let mut wrong = Vec::new();
    let mut total = 0;
    for line in table.lines() {
        let (word, expected) = line
            .split_once('\t')
            .unwrap_or_else(|| unreachable!("word<TAB>stem: {line}"));
        total += 1;
        let actual = porter::stem(word);
        if actual != expected {
            wrong.push(format!("{word}: nltk {expected}, ours {actual}"));
        }
    }
    assert!(total > 5000, "{total}");
    assert!(
        wrong.is_empty(),
        "{} of {total} differ:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}
