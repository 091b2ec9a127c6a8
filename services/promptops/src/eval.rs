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
