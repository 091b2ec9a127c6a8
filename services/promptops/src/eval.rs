//! `promptops eval score`: offline scoring of files, like sacrebleu's CLI.
//!
//! Reads one segment per line from the hypotheses and the references
//! (aligned, UTF-8) and prints one JSON document:
//! `{"metric": …, "corpus": …, "sentences": [...]}`.
//!
//! Exit codes: 0 scored; 65 the input is not scorable (not UTF-8, different
//! line counts, no lines, `--stem` with BLEU); 66 a file cannot be read.

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use promptops_evaluation::metrics::{ReferenceMetric, score_corpus};

const DATA_ERROR: u8 = 65;
const NO_INPUT: u8 = 66;

pub fn score(metric: ReferenceMetric, hypotheses: &Path, references: &Path, stem: bool) -> ExitCode {
    let (hypotheses, references) = match (read_segments(hypotheses), read_segments(references)) {
        (Ok(h), Ok(r)) => (h, r),
        (Err((code, message)), _) | (_, Err((code, message))) => {
            eprintln!("{message}");
            return ExitCode::from(code);
        }
    };
    let scores = match score_corpus(metric, &hypotheses, &references, stem) {
        Ok(scores) => scores,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::from(DATA_ERROR);
        }
    };
    let json = match serde_json::to_string(&scores) {
        Ok(json) => json,
        Err(err) => {
            eprintln!("cannot write the scores: {err}");
            return ExitCode::FAILURE;
        }
    };
    match writeln!(std::io::stdout().lock(), "{json}") {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("cannot write the scores: {err}");
            ExitCode::FAILURE
        }
    }
}

/// The file's lines: split at `\n`, without the empty piece after a final
/// newline. A line's other characters, `\r` included, are kept as they are
/// (both metrics treat them as white space or separators).
fn read_segments(path: &Path) -> Result<Vec<String>, (u8, String)> {
    let bytes =
        std::fs::read(path).map_err(|e| (NO_INPUT, format!("cannot read {}: {e}", path.display())))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
        (
            DATA_ERROR,
            format!("{}: line {line} is not valid UTF-8", path.display()),
        )
    })?;
    let mut lines: Vec<String> = text.split('\n').map(str::to_owned).collect();
    if text.ends_with('\n') || text.is_empty() {
        lines.pop();
    }
    Ok(lines)
}

/// Exit code of `eval run` when the gate metric regressed against the base run.
const REGRESSED: u8 = 3;

/// `promptops eval run --spec FILE [--against RUN --gate-metric NAME
/// [--threshold T]]`: starts an evaluation run from a JSON spec (the body of
/// `POST /api/v1/evaluation-runs`), follows it to its end, prints the run as
/// JSON, and — with a gate — fails when any case of the gate metric
/// regressed against the base run by more than the threshold.
///
/// Exit codes: 0 completed (and no regression), 1 the run failed or was
/// cancelled, 2 the platform is unreachable, 3 regressed, 64 bad
/// configuration, 65 the spec or the request was refused, 66 unreadable file.
pub fn run(spec: &Path, against: Option<&str>, gate_metric: Option<&str>, threshold: f64) -> ExitCode {
    let target = match crate::client::Target::from_env() {
        Ok(target) => target,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::from(64);
        }
    };
    if against.is_some() != gate_metric.is_some() {
        eprintln!("--against and --gate-metric go together");
        return ExitCode::from(64);
    }
    let body = match std::fs::read(spec) {
        Ok(body) => body,
        Err(e) => {
            eprintln!("cannot read {}: {e}", spec.display());
            return ExitCode::from(NO_INPUT);
        }
    };
    if let Err(e) = serde_json::from_slice::<serde_json::Value>(&body) {
        eprintln!("{}: not JSON: {e}", spec.display());
        return ExitCode::from(DATA_ERROR);
    }
    let runtime = match crate::files::runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    runtime.block_on(async {
        let client = reqwest::Client::new();
        let call = |method: reqwest::Method, path: String| target.request(&client, method, &path);
        let started = call(reqwest::Method::POST, "/api/v1/evaluation-runs".into())
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        let (status, run) = match answer(started).await {
            Ok(answer) => answer,
            Err(code) => return code,
        };
        if !status.is_success() {
            report_problem(&run);
            return ExitCode::from(if status.is_client_error() { DATA_ERROR } else { 1 });
        }
        let id = run["id"].as_str().unwrap_or_default().to_owned();
        eprintln!("evaluation run {id}: {} cases", run["total"]);
        let mut last_done = u64::MAX;
        let finished = loop {
            let (status, now) = match answer(
                call(reqwest::Method::GET, format!("/api/v1/evaluation-runs/{id}"))
                    .send()
                    .await,
            )
            .await
            {
                Ok(answer) => answer,
                Err(code) => return code,
            };
            if !status.is_success() {
                report_problem(&now);
                return ExitCode::from(1);
            }
            let done = now["done"].as_u64().unwrap_or(0);
            if done != last_done {
                eprintln!("{done}/{} scored, {} failed", now["total"], now["failed"]);
                last_done = done;
            }
            if now["status"] != "running" {
                break now;
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        };
        if writeln!(std::io::stdout().lock(), "{finished}").is_err() {
            return ExitCode::from(74);
        }
        if finished["status"] != "completed" {
            eprintln!("the run ended {}: {}", finished["status"], finished["error"]);
            return ExitCode::from(1);
        }
        let (Some(base), Some(metric)) = (against, gate_metric) else {
            return ExitCode::SUCCESS;
        };
        let comparison = call(
            reqwest::Method::GET,
            format!("/api/v1/evaluation-runs/{id}/comparison"),
        )
        .query(&[
            ("against", base),
            ("metric", metric),
            ("threshold", &threshold.to_string()),
        ])
        .send()
        .await;
        let (status, comparison) = match answer(comparison).await {
            Ok(answer) => answer,
            Err(code) => return code,
        };
        if !status.is_success() {
            report_problem(&comparison);
            return ExitCode::from(DATA_ERROR);
        }
        let regressed = comparison["regressed"].as_array().cloned().unwrap_or_default();
        eprintln!(
            "{metric}: mean {} → {} against {base}; {} regressed, {} improved",
            comparison["base_mean"],
            comparison["candidate_mean"],
            regressed.len(),
            comparison["improved"]
        );
        if regressed.is_empty() {
            return ExitCode::SUCCESS;
        }
        for case in &regressed {
            let id = case["case_id"].as_str().unwrap_or_default();
            eprintln!("  regressed {id}: {} → {}", case["base"], case["candidate"]);
        }
        ExitCode::from(REGRESSED)
    })
}

/// The status and JSON body of an answer; exit 2 when there was none.
async fn answer(
    sent: Result<reqwest::Response, reqwest::Error>,
) -> Result<(reqwest::StatusCode, serde_json::Value), ExitCode> {
    let response = sent.map_err(|err| {
        eprintln!("cannot reach promptops: {err}");
        ExitCode::from(2)
    })?;
    let status = response.status();
    let body = response.json().await.unwrap_or(serde_json::Value::Null);
    Ok((status, body))
}

/// A problem JSON, its detail and each field, on stderr.
fn report_problem(problem: &serde_json::Value) {
    eprintln!(
        "{}: {}",
        problem["title"].as_str().unwrap_or("error"),
        problem["detail"].as_str().unwrap_or_default()
    );
    for error in problem["errors"].as_array().into_iter().flatten() {
        eprintln!(
            "  {}: {}",
            error["field"].as_str().unwrap_or_default(),
            error["description"].as_str().unwrap_or_default()
        );
    }
}
