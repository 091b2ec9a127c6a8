//! `promptops eval score` on files: the same numbers as sacrebleu and
//! rouge-score (the evaluation crate's parity fixtures), and clear refusals.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn fixtures() -> Value {
    let text = include_str!("../../evaluation/tests/fixtures/parity.json");
    serde_json::from_str(text).unwrap_or_else(|e| unreachable!("parity.json: {e}"))
}

/// The fixture pairs of one line each, written as two aligned files.
fn single_line_files(dir: &Path, fixtures: &Value) -> Vec<usize> {
    let indices: Vec<usize> = fixtures["corpus_bleu"]["single_line"]["indices"]
        .as_array()
        .unwrap_or_else(|| unreachable!("indices"))
        .iter()
        .filter_map(Value::as_u64)
        .map(|i| i as usize)
        .collect();
    let column = |key: &str| -> String {
        indices
            .iter()
            .map(|&i| format!("{}\n", fixtures["pairs"][i][key].as_str().unwrap_or_default()))
            .collect()
    };
    std::fs::write(dir.join("hyp.txt"), column("hypothesis")).unwrap_or_else(|e| unreachable!("{e}"));
    std::fs::write(dir.join("ref.txt"), column("reference")).unwrap_or_else(|e| unreachable!("{e}"));
    indices
}

fn promptops(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_promptops"))
        .args(["eval", "score"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| unreachable!("run promptops: {e}"))
}

fn json(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| unreachable!("stdout is JSON: {e}"))
}

fn close(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(a), Some(b)) => (a - b).abs() <= 1e-9,
        _ => false,
    }
}

#[test]
fn bleu_of_files_matches_sacrebleu() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| unreachable!("{e}"));
    let fixtures = fixtures();
    let indices = single_line_files(dir.path(), &fixtures);
    assert!(indices.len() >= 200);
    let out = json(&promptops(
        &[
            "--metric",
            "bleu",
            "--hypotheses",
            "hyp.txt",
            "--references",
            "ref.txt",
        ],
        dir.path(),
    ));
    assert_eq!(out["metric"], "bleu");
    assert!(
        close(&out["corpus"], &fixtures["corpus_bleu"]["single_line"]["bleu"]),
        "{}",
        out["corpus"]
    );
    let sentences = out["sentences"]
        .as_array()
        .unwrap_or_else(|| unreachable!("sentences"));
    assert_eq!(sentences.len(), indices.len());
    for (sentence, &i) in sentences.iter().zip(&indices) {
        assert!(
            close(sentence, &fixtures["pairs"][i]["sentence_bleu"]),
            "pair {i}: {sentence}"
        );
    }
}

#[test]
fn rouge_of_files_matches_rouge_score_with_stemming() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| unreachable!("{e}"));
    let fixtures = fixtures();
    let indices = single_line_files(dir.path(), &fixtures);
    for (metric, stem) in [("rougeL", true), ("rouge2", false)] {
        let mut args = vec![
            "--metric",
            metric,
            "--hypotheses",
            "hyp.txt",
            "--references",
            "ref.txt",
        ];
        if stem {
            args.push("--stem");
        }
        let out = json(&promptops(&args, dir.path()));
        assert_eq!(out["metric"], metric);
        let key = if stem { "rouge_stemmed" } else { "rouge" };
        let mut f1_sum = 0.0;
        for (sentence, &i) in out["sentences"]
            .as_array()
            .unwrap_or_else(|| unreachable!("sentences"))
            .iter()
            .zip(&indices)
        {
            let expected = &fixtures["pairs"][i][key][metric];
            assert!(close(&sentence["precision"], &expected[0]), "pair {i} precision");
            assert!(close(&sentence["recall"], &expected[1]), "pair {i} recall");
            assert!(close(&sentence["f1"], &expected[2]), "pair {i} f1");
            f1_sum += expected[2].as_f64().unwrap_or_default();
        }
        let mean = f1_sum / indices.len() as f64;
        assert!((out["corpus"].as_f64().unwrap_or_default() - mean).abs() < 1e-9);
    }
}

#[test]
fn bad_input_is_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| unreachable!("{e}"));
    std::fs::write(dir.path().join("two.txt"), "one\ntwo\n").unwrap_or_else(|e| unreachable!("{e}"));
    std::fs::write(dir.path().join("three.txt"), "one\ntwo\nthree").unwrap_or_else(|e| unreachable!("{e}"));
    std::fs::write(dir.path().join("latin1.txt"), b"ok\ncaf\xe9\n").unwrap_or_else(|e| unreachable!("{e}"));

    let stderr = |o: &Output| String::from_utf8_lossy(&o.stderr).into_owned();
    let out = promptops(
        &[
            "--metric",
            "bleu",
            "--hypotheses",
            "two.txt",
            "--references",
            "three.txt",
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(65));
    assert!(
        stderr(&out).contains("2 hypotheses but 3 references"),
        "{}",
        stderr(&out)
    );

    let out = promptops(
        &[
            "--metric",
            "bleu",
            "--hypotheses",
            "two.txt",
            "--references",
            "missing.txt",
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(66));
    assert!(stderr(&out).contains("missing.txt"), "{}", stderr(&out));

    let out = promptops(
        &[
            "--metric",
            "rouge1",
            "--hypotheses",
            "latin1.txt",
            "--references",
            "two.txt",
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(65));
    assert!(
        stderr(&out).contains("line 2 is not valid UTF-8"),
        "{}",
        stderr(&out)
    );

    let out = promptops(
        &[
            "--metric",
            "bleu",
            "--stem",
            "--hypotheses",
            "two.txt",
            "--references",
            "two.txt",
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(65));
    assert!(stderr(&out).contains("ROUGE only"), "{}", stderr(&out));

    let out = promptops(
        &[
            "--metric",
            "meteor",
            "--hypotheses",
            "two.txt",
            "--references",
            "two.txt",
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("rougeLsum"), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
}
