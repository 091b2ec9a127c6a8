//! Scoring one output with the metrics a run asks for, aggregating scores,
//! and comparing two runs. Pure.
//!
//! Reference metrics (`bleu`, `rouge*`) compare with the case's expected
//! output; a case without one gets no score for them. Assertions score 1
//! (pass) or 0 (fail): `exact_match`, `contains` (any or all), `regex`,
//! `json_valid`, `length` (characters), `latency` (ms), `cost` (nano-USD).

use std::collections::HashSet;

use promptops_platform::errors::FieldViolation;
use promptops_proto::evaluation::v1::{
    CaseDelta, EvaluationComparison, MetricAggregate, MetricScore, MetricSpec,
};
use regex::Regex;

use crate::metrics::bleu::sentence_bleu;
use crate::metrics::rouge::{RougeKind, rouge};
use crate::sandbox;

/// Metrics per run, at most.
pub const MAX_METRICS: usize = 20;
/// A metric's name, at most, in characters.
pub const MAX_METRIC_NAME_CHARS: usize = 64;
const MAX_PATTERN_BYTES: usize = 4096;
const MAX_VALUES: usize = 100;

/// A metric ready to score: its spec checked, its pattern compiled.
#[derive(Debug, Clone)]
pub struct Metric {
    pub name: String,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    Bleu,
    Rouge {
        kind: RougeKind,
        stem: bool,
    },
    ExactMatch {
        values: Vec<String>,
        ignore_case: bool,
    },
    Contains {
        values: Vec<String>,
        all: bool,
        ignore_case: bool,
    },
    Regex(Regex),
    JsonValid,
    Length {
        min: u64,
        max: u64,
    },
    Latency {
        max_ms: u64,
    },
    Cost {
        max_nano_usd: u64,
    },
    /// Scored by a model, not here (see [`parse_judgement`]).
    Judge,
    JsonSchema(std::sync::Arc<jsonschema::Validator>),
    Script(std::sync::Arc<rhai::AST>),
    /// Cosine of embeddings from a model, not here (see [`cosine`]).
    Embedding,
}

/// What one execution produced, as the metrics see it.
#[derive(Debug, Clone, Copy)]
pub struct Output<'a> {
    pub text: &'a str,
    pub expected: Option<&'a str>,
    pub latency_us: u64,
    pub cost_nano_usd: i64,
    /// The case's variables (for scripts).
    pub variables: Option<&'a std::collections::HashMap<String, String>>,
}

/// The name a metric's scores go by: its `name`, or else its `kind`.
pub fn metric_name(spec: &MetricSpec) -> &str {
    if spec.name.is_empty() {
        &spec.kind
    } else {
        &spec.name
    }
}

/// `text` cut to at most `max_bytes`, at a character boundary.
pub fn truncate(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Checks a run's metric specs; every problem is named by its field.
pub fn compile(specs: &[MetricSpec]) -> Result<Vec<Metric>, Vec<FieldViolation>> {
    let mut violations = Vec::new();
    if specs.is_empty() || specs.len() > MAX_METRICS {
        violations.push(FieldViolation::new(
            "metrics",
            format!("give 1 to {MAX_METRICS} metrics"),
        ));
    }
    let mut names = HashSet::new();
    let mut metrics = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let field = |name: &str| format!("metrics[{i}].{name}");
        let name = metric_name(spec).to_owned();
        if name.is_empty()
            || name.chars().count() > MAX_METRIC_NAME_CHARS
            || name.chars().any(char::is_control)
        {
            violations.push(FieldViolation::new(
                field("name"),
                format!("1 to {MAX_METRIC_NAME_CHARS} characters, no control characters"),
            ));
        }
        if !names.insert(name.clone()) {
            violations.push(FieldViolation::new(
                field("name"),
                format!("{name:?} is used by another metric; give each a distinct name"),
            ));
        }
        if spec.values.len() > MAX_VALUES || spec.values.iter().any(|v| v.len() > MAX_PATTERN_BYTES) {
            violations.push(FieldViolation::new(
                field("values"),
                format!("at most {MAX_VALUES} values of at most {MAX_PATTERN_BYTES} bytes"),
            ));
        }
        let kind = match spec.kind.as_str() {
            "bleu" => Some(Kind::Bleu),
            "exact_match" => Some(Kind::ExactMatch {
                values: spec.values.clone(),
                ignore_case: spec.ignore_case,
            }),
            "contains" if spec.values.is_empty() => {
                violations.push(FieldViolation::new(
                    field("values"),
                    "contains needs the strings to look for",
                ));
                None
            }
            "contains" => Some(Kind::Contains {
                values: spec.values.clone(),
                all: spec.all,
                ignore_case: spec.ignore_case,
            }),
            "regex" if spec.pattern.len() > MAX_PATTERN_BYTES => {
                violations.push(FieldViolation::new(
                    field("pattern"),
                    format!("at most {MAX_PATTERN_BYTES} bytes"),
                ));
                None
            }
            "regex" => match regex::RegexBuilder::new(&spec.pattern)
                .size_limit(1 << 20)
                .build()
            {
                Ok(regex) if !spec.pattern.is_empty() => Some(Kind::Regex(regex)),
                Ok(_) => {
                    violations.push(FieldViolation::new(field("pattern"), "regex needs a pattern"));
                    None
                }
                Err(e) => {
                    let reason = e.to_string().lines().last().unwrap_or_default().trim().to_owned();
                    violations.push(FieldViolation::new(
                        field("pattern"),
                        format!("is not a valid regex: {reason}"),
                    ));
                    None
                }
            },
            "json_valid" => Some(Kind::JsonValid),
            "embedding_similarity" if spec.embedding_model.is_empty() => {
                violations.push(FieldViolation::new(
                    field("embedding_model"),
                    "embedding_similarity needs the embedding model, e.g. mock/embed",
                ));
                None
            }
            "embedding_similarity" => Some(Kind::Embedding),
            "script" => match sandbox::compile(&spec.script) {
                Ok(ast) => Some(Kind::Script(std::sync::Arc::new(ast))),
                Err(reason) => {
                    violations.push(FieldViolation::new(field("script"), reason));
                    None
                }
            },
            "json_schema" => match json_schema(&spec.schema) {
                Ok(validator) => Some(Kind::JsonSchema(std::sync::Arc::new(validator))),
                Err(reason) => {
                    violations.push(FieldViolation::new(field("schema"), reason));
                    None
                }
            },
            "length" if spec.max > 0 && spec.min > spec.max => {
                violations.push(FieldViolation::new(field("min"), "must not exceed max"));
                None
            }
            "length" if spec.min == 0 && spec.max == 0 => {
                violations.push(FieldViolation::new(field("max"), "length needs min or max"));
                None
            }
            "length" => Some(Kind::Length {
                min: spec.min,
                max: spec.max,
            }),
            "latency" | "cost" if spec.max == 0 => {
                violations.push(FieldViolation::new(
                    field("max"),
                    format!("{} needs a max", spec.kind),
                ));
                None
            }
            "latency" => Some(Kind::Latency { max_ms: spec.max }),
            "llm_judge" => {
                let names_prompt = spec
                    .judge_prompt
                    .as_ref()
                    .is_some_and(|p| !p.prompt_id.is_empty() || !p.name.is_empty());
                if names_prompt {
                    Some(Kind::Judge)
                } else {
                    violations.push(FieldViolation::new(
                        field("judge_prompt"),
                        "llm_judge needs the rubric prompt (prompt_id, or folder and name)",
                    ));
                    None
                }
            }
            "cost" => Some(Kind::Cost {
                max_nano_usd: spec.max,
            }),
            other => match other.parse::<RougeKind>() {
                Ok(kind) => Some(Kind::Rouge {
                    kind,
                    stem: spec.stem,
                }),
                Err(_) => {
                    violations.push(FieldViolation::new(
                        field("kind"),
                        format!(
                            "unknown metric {other:?}: use bleu, rouge1, rouge2, rougeL, rougeLsum, exact_match, \
                             contains, regex, json_valid, json_schema, length, latency, cost, llm_judge, script or embedding_similarity"
                        ),
                    ));
                    None
                }
            },
        };
        if let Some(kind) = kind {
            metrics.push(Metric { name, kind });
        }
    }
    if violations.is_empty() {
        Ok(metrics)
    } else {
        Err(violations)
    }
}

impl Metric {
    /// Whether it compares with the expected output.
    pub fn needs_expected(&self) -> bool {
        match &self.kind {
            Kind::Bleu | Kind::Rouge { .. } => true,
            Kind::ExactMatch { values, .. } => values.is_empty(),
            _ => false,
        }
    }

    /// The score of one output; `None` when it needs an expected output and
    /// the case has none.
    pub fn score(&self, output: &Output<'_>) -> Option<f64> {
        self.score_or_note(output).ok().flatten()
    }

    /// The score, none, or why a score that should be there is not (a
    /// script that failed).
    pub fn score_or_note(&self, output: &Output<'_>) -> Result<Option<f64>, String> {
        if let Kind::Script(ast) = &self.kind {
            return sandbox::run(ast, output).map(Some);
        }
        Ok(self.builtin_score(output))
    }

    fn builtin_score(&self, output: &Output<'_>) -> Option<f64> {
        let pass = |ok: bool| Some(if ok { 1.0 } else { 0.0 });
        match &self.kind {
            Kind::Script(_) | Kind::Embedding => None,
            Kind::Bleu => Some(sentence_bleu(output.text, output.expected?)),
            Kind::Rouge { kind, stem } => Some(rouge(*kind, output.expected?, output.text, *stem).f1),
            Kind::ExactMatch { values, ignore_case } => {
                let same = |a: &str, b: &str| {
                    if *ignore_case {
                        a.to_lowercase() == b.to_lowercase()
                    } else {
                        a == b
                    }
                };
                let text = output.text.trim();
                if values.is_empty() {
                    pass(same(text, output.expected?.trim()))
                } else {
                    pass(values.iter().any(|v| same(text, v.trim())))
                }
            }
            Kind::Contains {
                values,
                all,
                ignore_case,
            } => {
                let text = if *ignore_case {
                    output.text.to_lowercase()
                } else {
                    output.text.to_owned()
                };
                let found = |v: &String| {
                    if *ignore_case {
                        text.contains(&v.to_lowercase())
                    } else {
                        text.contains(v.as_str())
                    }
                };
                pass(if *all {
                    values.iter().all(found)
                } else {
                    values.iter().any(found)
                })
            }
            Kind::Regex(regex) => pass(regex.is_match(output.text)),
            Kind::JsonValid => pass(serde_json::from_str::<serde_json::Value>(output.text.trim()).is_ok()),
            Kind::Length { min, max } => {
                let chars = output.text.chars().count() as u64;
                pass(chars >= *min && (*max == 0 || chars <= *max))
            }
            Kind::Latency { max_ms } => pass(output.latency_us <= max_ms.saturating_mul(1000)),
            Kind::Cost { max_nano_usd } => {
                pass(u64::try_from(output.cost_nano_usd).unwrap_or(0) <= *max_nano_usd)
            }
            Kind::Judge => None,
            Kind::JsonSchema(validator) => pass(
                serde_json::from_str::<serde_json::Value>(output.text.trim())
                    .is_ok_and(|value| validator.is_valid(&value)),
            ),
        }
    }

    /// Whether a model scores it (`llm_judge`).
    pub fn is_judge(&self) -> bool {
        matches!(self.kind, Kind::Judge)
    }

    /// Whether it compares embeddings (`embedding_similarity`).
    pub fn is_embedding(&self) -> bool {
        matches!(self.kind, Kind::Embedding)
    }
}

/// A schema's validator; local references only (nothing is fetched).
fn json_schema(text: &str) -> Result<jsonschema::Validator, String> {
    if text.trim().is_empty() {
        return Err("json_schema needs the schema".into());
    }
    if text.len() > MAX_SCHEMA_BYTES {
        return Err(format!("at most {MAX_SCHEMA_BYTES} bytes"));
    }
    let schema: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("is not valid JSON: {e}"))?;
    jsonschema::validator_for(&schema).map_err(|e| format!("is not a valid JSON Schema: {e}"))
}

const MAX_SCHEMA_BYTES: usize = 64 * 1024;

/// The cosine similarity of two vectors (0 when either is all zeros or
/// their lengths differ).
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    if a.len() != b.len() {
        return 0.0;
    }
    let (mut dot, mut aa, mut bb) = (0.0_f64, 0.0_f64, 0.0_f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (f64::from(*x), f64::from(*y));
        dot += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 || bb == 0.0 {
        0.0
    } else {
        dot / (aa.sqrt() * bb.sqrt())
    }
}

/// Reasoning kept from a judge, at most.
pub const MAX_REASONING_BYTES: usize = 4 * 1024;

/// A judge's score and reasoning from its answer: a JSON object with a
/// numeric `score` (and `reasoning`) anywhere in the text, or else the
/// first number in the text (the whole answer is the reasoning).
pub fn parse_judgement(answer: &str) -> Option<(f64, String)> {
    let keep = |text: &str| truncate(text, MAX_REASONING_BYTES).trim().to_owned();
    if let (Some(start), Some(end)) = (answer.find('{'), answer.rfind('}'))
        && start < end
        && let Ok(serde_json::Value::Object(object)) = serde_json::from_str(&answer[start..=end])
    {
        let score = match object.get("score") {
            Some(serde_json::Value::Number(n)) => n.as_f64(),
            Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        };
        if let Some(score) = score.filter(|s: &f64| s.is_finite()) {
            let reasoning = object
                .get("reasoning")
                .and_then(|r| r.as_str())
                .unwrap_or_default();
            return Some((score, keep(reasoning)));
        }
    }
    let number = Regex::new(r"-?\d+(?:\.\d+)?").ok()?.find(answer)?;
    let score: f64 = number.as_str().parse().ok()?;
    Some((score, keep(answer)))
}

/// Every metric's score of one output (those that apply).
/// Every metric's score of one output (those that apply), and notes for
/// the scores that failed (a script's error).
pub fn score_all(metrics: &[Metric], output: &Output<'_>) -> (Vec<MetricScore>, Vec<String>) {
    let mut scores = Vec::new();
    let mut notes = Vec::new();
    for metric in metrics {
        match metric.score_or_note(output) {
            Ok(Some(value)) => scores.push(MetricScore {
                metric: metric.name.clone(),
                value,
                ..Default::default()
            }),
            Ok(None) => {}
            Err(note) => notes.push(format!("{}: {note}", metric.name)),
        }
    }
    (scores, notes)
}

/// Mean, sample standard deviation and the 95% confidence interval of the
/// mean (Student's t with n − 1 degrees of freedom).
pub fn aggregate(target: u32, metric: &str, scores: &[f64]) -> MetricAggregate {
    let n = scores.len();
    let mean = if n == 0 {
        0.0
    } else {
        scores.iter().sum::<f64>() / n as f64
    };
    let std_dev = if n < 2 {
        0.0
    } else {
        (scores.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
    };
    let half_width = if n < 2 {
        0.0
    } else {
        t_975(n - 1) * std_dev / (n as f64).sqrt()
    };
    MetricAggregate {
        target,
        metric: metric.to_owned(),
        count: n as u64,
        mean,
        std_dev,
        ci_low: mean - half_width,
        ci_high: mean + half_width,
    }
}

/// The 97.5% quantile of Student's t with `df` degrees of freedom (exact
/// table to 30, then the usual values; 1.96 beyond 1,000).
fn t_975(df: usize) -> f64 {
    const TABLE: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
        2.045, 2.042,
    ];
    match df {
        0 => f64::NAN,
        1..=30 => TABLE[df - 1],
        31..=40 => 2.021,
        41..=60 => 2.000,
        61..=120 => 1.980,
        121..=1000 => 1.962,
        _ => 1.960,
    }
}

/// One case's score of one metric in a run, for comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseScore {
    pub case_id: String,
    pub value: f64,
}

/// Per-case deltas (candidate − base) of the cases scored in both, in the
/// base's order; cases that fell by more than `threshold` are regressions,
/// worst first.
pub fn compare(
    metric: &str,
    base: &[CaseScore],
    candidate: &[CaseScore],
    threshold: f64,
) -> EvaluationComparison {
    let mean = |scores: &[CaseScore]| {
        if scores.is_empty() {
            0.0
        } else {
            scores.iter().map(|s| s.value).sum::<f64>() / scores.len() as f64
        }
    };
    let candidates: std::collections::HashMap<&str, f64> =
        candidate.iter().map(|s| (s.case_id.as_str(), s.value)).collect();
    let deltas: Vec<CaseDelta> = base
        .iter()
        .filter_map(|b| {
            let c = *candidates.get(b.case_id.as_str())?;
            Some(CaseDelta {
                case_id: b.case_id.clone(),
                base: b.value,
                candidate: c,
                delta: c - b.value,
            })
        })
        .collect();
    let mut regressed: Vec<CaseDelta> = deltas.iter().filter(|d| d.delta < -threshold).cloned().collect();
    regressed.sort_by(|a, b| a.delta.total_cmp(&b.delta));
    let improved = deltas.iter().filter(|d| d.delta > threshold).count() as u64;
    let unchanged = deltas.len() as u64 - improved - regressed.len() as u64;
    EvaluationComparison {
        metric: metric.to_owned(),
        base_mean: mean(base),
        candidate_mean: mean(candidate),
        deltas,
        regressed,
        improved,
        unchanged,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: &str) -> MetricSpec {
        MetricSpec {
            kind: kind.into(),
            ..Default::default()
        }
    }

    fn output<'a>(text: &'a str, expected: Option<&'a str>) -> Output<'a> {
        Output {
            text,
            expected,
            latency_us: 1_500,
            cost_nano_usd: 20,
            variables: None,
        }
    }

    fn one(spec: MetricSpec) -> Metric {
        compile(&[spec])
            .map(|mut m| m.remove(0))
            .unwrap_or_else(|e| unreachable!("{e:?}"))
    }

    #[test]
    fn assertions_pass_and_fail() {
        let contains_all = one(MetricSpec {
            kind: "contains".into(),
            values: vec!["a".into(), "B".into()],
            all: true,
            ignore_case: true,
            ..Default::default()
        });
        assert_eq!(contains_all.score(&output("a b", None)), Some(1.0));
        assert_eq!(contains_all.score(&output("a", None)), Some(0.0));
        let regex = one(MetricSpec {
            kind: "regex".into(),
            pattern: r"^\d{3}$".into(),
            ..Default::default()
        });
        assert_eq!(regex.score(&output("123", None)), Some(1.0));
        assert_eq!(regex.score(&output("12a", None)), Some(0.0));
        let json = one(spec("json_valid"));
        assert_eq!(json.score(&output(" {\"a\": 1} ", None)), Some(1.0));
        assert_eq!(json.score(&output("{a: 1}", None)), Some(0.0));
        let length = one(MetricSpec {
            kind: "length".into(),
            min: 2,
            max: 3,
            ..Default::default()
        });
        assert_eq!(length.score(&output("héé", None)), Some(1.0));
        assert_eq!(length.score(&output("hééé", None)), Some(0.0));
        let latency = one(MetricSpec {
            kind: "latency".into(),
            max: 1,
            ..Default::default()
        });
        assert_eq!(latency.score(&output("x", None)), Some(0.0));
        let cost = one(MetricSpec {
            kind: "cost".into(),
            max: 20,
            ..Default::default()
        });
        assert_eq!(cost.score(&output("x", None)), Some(1.0));
        let exact = one(MetricSpec {
            kind: "exact_match".into(),
            ignore_case: true,
            ..Default::default()
        });
        assert_eq!(exact.score(&output(" Paris ", Some("paris"))), Some(1.0));
        assert_eq!(exact.score(&output("Paris", None)), None);
    }

    #[test]
    fn reference_metrics_need_an_expected_output() {
        let bleu = one(spec("bleu"));
        assert!(bleu.needs_expected());
        assert_eq!(bleu.score(&output("the cat", None)), None);
        let rouge = one(MetricSpec {
            kind: "rougeL".into(),
            stem: true,
            ..Default::default()
        });
        assert_eq!(rouge.score(&output("cats running", Some("cat runs"))), Some(1.0));
        assert!(!one(spec("json_valid")).needs_expected());
    }

    #[test]
    fn bad_specs_are_all_named() {
        let specs = vec![
            spec("meteor"),
            MetricSpec {
                kind: "regex".into(),
                pattern: "(".into(),
                ..Default::default()
            },
            spec("contains"),
            MetricSpec {
                kind: "length".into(),
                min: 5,
                max: 2,
                ..Default::default()
            },
            spec("latency"),
            spec("bleu"),
            spec("bleu"),
        ];
        let fields: Vec<String> = compile(&specs)
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(
            fields,
            [
                "metrics[0].kind",
                "metrics[1].pattern",
                "metrics[2].values",
                "metrics[3].min",
                "metrics[4].max",
                "metrics[6].name"
            ]
        );
        assert!(compile(&[]).is_err());
    }

    #[test]
    fn json_schema_assertions_check_the_parsed_output() {
        let schema =
            r#"{"type": "object", "required": ["answer"], "properties": {"answer": {"type": "integer"}}}"#;
        let metric = one(MetricSpec {
            kind: "json_schema".into(),
            schema: schema.into(),
            ..Default::default()
        });
        assert_eq!(metric.score(&output(r#" {"answer": 4} "#, None)), Some(1.0));
        assert_eq!(metric.score(&output(r#"{"answer": "four"}"#, None)), Some(0.0));
        assert_eq!(metric.score(&output("not json", None)), Some(0.0));
        for bad in ["", "{", r#"{"type": "wat"}"#] {
            let spec = MetricSpec {
                kind: "json_schema".into(),
                schema: bad.into(),
                ..Default::default()
            };
            let fields: Vec<String> = compile(&[spec])
                .err()
                .unwrap_or_default()
                .into_iter()
                .map(|v| v.field)
                .collect();
            assert_eq!(fields, ["metrics[0].schema"], "{bad:?}");
        }
    }

    #[test]
    fn cosine_is_scale_free_and_zero_for_empty_vectors() {
        assert!((cosine(&[1.0, 2.0], &[2.0, 4.0]) - 1.0).abs() < 1e-12);
        assert!(cosine(&[1.0, 0.0], &[0.0, 1.0]).abs() < 1e-12);
        assert!((cosine(&[1.0, 0.0], &[-1.0, 0.0]) + 1.0).abs() < 1e-12);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 1.0]), 0.0);
        assert_eq!(cosine(&[1.0], &[1.0, 1.0]), 0.0);
        let spec = MetricSpec {
            kind: "embedding_similarity".into(),
            ..Default::default()
        };
        let fields: Vec<String> = compile(&[spec])
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(fields, ["metrics[0].embedding_model"]);
    }

    #[test]
    fn judgements_are_read_from_json_or_the_first_number() {
        assert_eq!(
            parse_judgement("Sure! {\"score\": 4, \"reasoning\": \"mostly right\"} Done."),
            Some((4.0, "mostly right".to_owned()))
        );
        assert_eq!(
            parse_judgement("{\"score\": \"0.5\"}"),
            Some((0.5, String::new()))
        );
        assert_eq!(
            parse_judgement("I'd give it 3.5 out of 5."),
            Some((3.5, "I'd give it 3.5 out of 5.".to_owned()))
        );
        assert_eq!(
            parse_judgement("{\"verdict\": \"good\"} 2"),
            Some((2.0, "{\"verdict\": \"good\"} 2".to_owned()))
        );
        assert_eq!(parse_judgement("no idea"), None);
        let judge = MetricSpec {
            kind: "llm_judge".into(),
            ..Default::default()
        };
        let fields: Vec<String> = compile(&[judge])
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(fields, ["metrics[0].judge_prompt"]);
    }

    #[test]
    fn aggregates_give_mean_deviation_and_interval() {
        let a = aggregate(0, "m", &[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(a.count, 4);
        assert!((a.mean - 2.5).abs() < 1e-12);
        let sd = (5.0_f64 / 3.0).sqrt();
        assert!((a.std_dev - sd).abs() < 1e-12);
        assert!((a.ci_high - (2.5 + 3.182 * sd / 2.0)).abs() < 1e-9);
        let single = aggregate(0, "m", &[0.7]);
        assert_eq!((single.std_dev, single.ci_low, single.ci_high), (0.0, 0.7, 0.7));
        assert_eq!(aggregate(0, "m", &[]).count, 0);
    }

    #[test]
    fn comparison_lists_regressions_worst_first() {
        let s = |id: &str, v: f64| CaseScore {
            case_id: id.into(),
            value: v,
        };
        let base = [s("a", 1.0), s("b", 0.5), s("c", 0.8), s("d", 0.2)];
        let candidate = [s("a", 0.2), s("b", 0.6), s("c", 0.7), s("e", 1.0)];
        let cmp = compare("m", &base, &candidate, 0.05);
        assert_eq!(cmp.deltas.len(), 3);
        let regressed: Vec<&str> = cmp.regressed.iter().map(|d| d.case_id.as_str()).collect();
        assert_eq!(regressed, ["a", "c"]);
        assert_eq!((cmp.improved, cmp.unchanged), (1, 0));
    }
}
