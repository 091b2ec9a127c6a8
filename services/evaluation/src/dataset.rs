//! Test cases and their file formats: import from CSV or JSON Lines with
//! every problem reported by line, export to both, and the check that every
//! case has the variables a prompt needs. Pure: bytes in, cases out.
//!
//! A case is an id, the template variables, an optional expected output and
//! string metadata.
//!
//! - **JSON Lines**: one object per line, keys `id` (optional), `variables`
//!   (object), `expected` (optional string), `metadata` (optional object).
//!   Values of `variables` and `metadata` are strings, numbers or booleans
//!   (numbers and booleans become their JSON text); `null` means absent.
//!   Blank lines are skipped; other keys are an error.
//! - **CSV**: a header row, then one case per row. Column `id` is the case
//!   id, `expected` the expected output, `metadata.<key>` a metadata entry,
//!   every other column a variable. An empty cell means absent (CSV has no
//!   null): a variable left empty is reported missing by
//!   [`missing_variables`].
//!
//! Cases without an id are numbered `case-1`, `case-2`, … by position; ids
//! are unique within a set of cases.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use serde_json::{Map, Value};

/// Cases in one dataset version, at most.
pub const MAX_CASES: usize = 100_000;
/// A case id, at most, in characters.
pub const MAX_ID_CHARS: usize = 200;
/// Problems reported for one import, at most (the count of the rest is given).
pub const MAX_REPORTED: usize = 100;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Case {
    pub id: String,
    pub variables: BTreeMap<String, String>,
    pub expected: Option<String>,
    pub metadata: BTreeMap<String, String>,
}

/// A file format for cases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    JsonLines,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::JsonLines => "jsonl",
        }
    }

    /// The format for a name or media type: `csv`, `text/csv`, `jsonl`,
    /// `application/jsonl`, `application/x-ndjson`.
    pub fn parse(name: &str) -> Option<Format> {
        let name = name
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match name.as_str() {
            "csv" | "text/csv" => Some(Format::Csv),
            "jsonl" | "ndjson" | "application/jsonl" | "application/x-ndjson" | "application/x-jsonlines" => {
                Some(Format::JsonLines)
            }
            _ => None,
        }
    }

    pub fn media_type(self) -> &'static str {
        match self {
            Format::Csv => "text/csv; charset=utf-8",
            Format::JsonLines => "application/jsonl",
        }
    }
}

/// One problem in an imported file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// 1-based; 0 when the problem is the file as a whole.
    pub line: u64,
    pub message: String,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            f.write_str(&self.message)
        } else {
            write!(f, "line {}: {}", self.line, self.message)
        }
    }
}

/// Every problem found in an import (up to [`MAX_REPORTED`]), in line order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} problem(s) in the {format} file, the first: {}", .total, .errors.first().map(ToString::to_string).unwrap_or_default())]
pub struct ImportErrors {
    pub format: &'static str,
    pub errors: Vec<LineError>,
    /// All problems found, reported or not.
    pub total: usize,
}

struct Collector {
    errors: Vec<LineError>,
    total: usize,
}

impl Collector {
    fn new() -> Self {
        Self {
            errors: Vec::new(),
            total: 0,
        }
    }

    fn push(&mut self, line: u64, message: impl Into<String>) {
        self.total += 1;
        if self.errors.len() < MAX_REPORTED {
            self.errors.push(LineError {
                line,
                message: message.into(),
            });
        }
    }

    fn finish(mut self, format: Format, cases: Vec<(u64, Case)>) -> Result<Vec<Case>, ImportErrors> {
        let cases = number_and_check_ids(cases, &mut self);
        if self.total > 0 {
            self.errors.sort_by_key(|e| e.line);
            return Err(ImportErrors {
                format: format.name(),
                errors: self.errors,
                total: self.total,
            });
        }
        Ok(cases)
    }
}

/// Reads cases from a file in `format`.
pub fn import(format: Format, bytes: &[u8]) -> Result<Vec<Case>, ImportErrors> {
    let bytes = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(bytes);
    match format {
        Format::Csv => import_csv(bytes),
        Format::JsonLines => import_jsonl(bytes),
    }
}

fn import_jsonl(bytes: &[u8]) -> Result<Vec<Case>, ImportErrors> {
    let mut problems = Collector::new();
    let mut cases = Vec::new();
    for (index, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = index as u64 + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let value: Value = match serde_json::from_slice(raw) {
            Ok(value) => value,
            Err(e) if e.is_data() || e.is_syntax() || e.is_eof() => {
                problems.push(line, format!("not valid JSON: {}", strip_position(&e)));
                continue;
            }
            Err(e) => {
                problems.push(line, format!("not valid JSON: {e}"));
                continue;
            }
        };
        let Value::Object(object) = value else {
            problems.push(line, "a case must be a JSON object");
            continue;
        };
        if let Some(case) = case_from_object(object, line, &mut problems) {
            cases.push((line, case));
        }
        if cases.len() > MAX_CASES {
            problems.push(line, format!("more than {MAX_CASES} cases"));
            break;
        }
    }
    problems.finish(Format::JsonLines, cases)
}

/// serde_json's message without its " at line 1 column N" (the line is ours).
fn strip_position(e: &serde_json::Error) -> String {
    let message = e.to_string();
    match message.rfind(" at line ") {
        Some(at) => format!("{} (column {})", &message[..at], e.column()),
        None => message,
    }
}

fn case_from_object(object: Map<String, Value>, line: u64, problems: &mut Collector) -> Option<Case> {
    let mut case = Case::default();
    let before = problems.total;
    for (key, value) in object {
        match key.as_str() {
            "id" => match value {
                Value::String(id) => case.id = id,
                Value::Number(n) => case.id = n.to_string(),
                Value::Null => {}
                _ => problems.push(line, "id must be a string"),
            },
            "expected" => match value {
                Value::String(expected) => case.expected = Some(expected),
                Value::Null => {}
                _ => problems.push(line, "expected must be a string"),
            },
            "variables" | "metadata" => {
                let target = if key == "variables" {
                    &mut case.variables
                } else {
                    &mut case.metadata
                };
                match value {
                    Value::Object(entries) => {
                        for (name, value) in entries {
                            match scalar_text(value) {
                                Ok(Some(text)) => {
                                    target.insert(name, text);
                                }
                                Ok(None) => {}
                                Err(()) => problems
                                    .push(line, format!("{key}.{name} must be a string, number or boolean")),
                            }
                        }
                    }
                    Value::Null => {}
                    _ => problems.push(line, format!("{key} must be an object")),
                }
            }
            other => problems.push(
                line,
                format!("unknown key {other:?}: a case has id, variables, expected and metadata"),
            ),
        }
    }
    (problems.total == before).then_some(case)
}

fn scalar_text(value: Value) -> Result<Option<String>, ()> {
    match value {
        Value::String(s) => Ok(Some(s)),
        Value::Number(n) => Ok(Some(n.to_string())),
        Value::Bool(b) => Ok(Some(b.to_string())),
        Value::Null => Ok(None),
        Value::Array(_) | Value::Object(_) => Err(()),
    }
}

/// What a CSV column holds.
#[derive(Debug, Clone, PartialEq)]
enum Column {
    Id,
    Expected,
    Metadata(String),
    Variable(String),
}

fn import_csv(bytes: &[u8]) -> Result<Vec<Case>, ImportErrors> {
    let mut problems = Collector::new();
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(bytes);
    let headers = match reader.headers() {
        Ok(headers) => headers.clone(),
        Err(e) => {
            problems.push(csv_line(&e).unwrap_or(1), csv_message(&e));
            return problems.finish(Format::Csv, Vec::new());
        }
    };
    if headers.is_empty() {
        problems.push(0, "the file is empty: a CSV dataset starts with a header row");
        return problems.finish(Format::Csv, Vec::new());
    }
    let mut columns = Vec::with_capacity(headers.len());
    let mut seen = HashMap::new();
    for (index, name) in headers.iter().enumerate() {
        let name = name.trim();
        if name.is_empty() {
            problems.push(1, format!("column {} has no name", index + 1));
        } else if let Some(first) = seen.insert(name.to_owned(), index) {
            problems.push(
                1,
                format!(
                    "column {name:?} appears twice (columns {} and {})",
                    first + 1,
                    index + 1
                ),
            );
        }
        columns.push(match name {
            "id" => Column::Id,
            "expected" => Column::Expected,
            _ => match name.strip_prefix("metadata.") {
                Some(key) => Column::Metadata(key.to_owned()),
                None => Column::Variable(name.to_owned()),
            },
        });
    }
    if problems.total > 0 {
        return problems.finish(Format::Csv, Vec::new());
    }
    let mut cases = Vec::new();
    for record in reader.records() {
        let record = match record {
            Ok(record) => record,
            Err(e) => {
                problems.push(csv_line(&e).unwrap_or(0), csv_message(&e));
                continue;
            }
        };
        let line = record.position().map_or(0, csv::Position::line);
        if record.len() != columns.len() {
            problems.push(
                line,
                format!("{} fields, but the header has {}", record.len(), columns.len()),
            );
            continue;
        }
        let mut case = Case::default();
        for (column, cell) in columns.iter().zip(record.iter()) {
            if cell.is_empty() {
                continue;
            }
            match column {
                Column::Id => case.id = cell.to_owned(),
                Column::Expected => case.expected = Some(cell.to_owned()),
                Column::Metadata(key) => {
                    case.metadata.insert(key.clone(), cell.to_owned());
                }
                Column::Variable(name) => {
                    case.variables.insert(name.clone(), cell.to_owned());
                }
            }
        }
        cases.push((line, case));
        if cases.len() > MAX_CASES {
            problems.push(line, format!("more than {MAX_CASES} cases"));
            break;
        }
    }
    problems.finish(Format::Csv, cases)
}

fn csv_line(e: &csv::Error) -> Option<u64> {
    e.position().map(csv::Position::line)
}

fn csv_message(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Utf8 { err, .. } => format!("field {} is not valid UTF-8", err.field() + 1),
        _ => e.to_string(),
    }
}

/// Gives cases without an id their position's id and reports duplicates.
fn number_and_check_ids(cases: Vec<(u64, Case)>, problems: &mut Collector) -> Vec<Case> {
    let mut first_line: HashMap<String, u64> = HashMap::new();
    cases
        .into_iter()
        .enumerate()
        .map(|(index, (line, mut case))| {
            if case.id.is_empty() {
                case.id = format!("case-{}", index + 1);
            } else if case.id.chars().count() > MAX_ID_CHARS {
                problems.push(line, format!("id is longer than {MAX_ID_CHARS} characters"));
            }
            if let Some(first) = first_line.insert(case.id.clone(), line) {
                problems.push(line, format!("id {:?} is used on line {first} already", case.id));
            }
            case
        })
        .collect()
}

/// Writes cases in `format`; [`import`] reads them back unchanged.
pub fn export(format: Format, cases: &[Case]) -> Vec<u8> {
    match format {
        Format::JsonLines => {
            let mut out = Vec::new();
            for case in cases {
                let mut object = Map::new();
                object.insert("id".into(), Value::String(case.id.clone()));
                object.insert("variables".into(), string_map(&case.variables));
                if let Some(expected) = &case.expected {
                    object.insert("expected".into(), Value::String(expected.clone()));
                }
                if !case.metadata.is_empty() {
                    object.insert("metadata".into(), string_map(&case.metadata));
                }
                out.extend_from_slice(Value::Object(object).to_string().as_bytes());
                out.push(b'\n');
            }
            out
        }
        Format::Csv => export_csv(cases),
    }
}

fn string_map(map: &BTreeMap<String, String>) -> Value {
    Value::Object(
        map.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

fn export_csv(cases: &[Case]) -> Vec<u8> {
    let variables: BTreeSet<&str> = cases
        .iter()
        .flat_map(|c| c.variables.keys().map(String::as_str))
        .collect();
    let metadata: BTreeSet<&str> = cases
        .iter()
        .flat_map(|c| c.metadata.keys().map(String::as_str))
        .collect();
    use promptops_platform::spreadsheet::cell;
    let mut writer = csv::Writer::from_writer(Vec::new());
    let header = std::iter::once("id".to_owned())
        .chain(variables.iter().map(|v| (*v).to_owned()))
        .chain(std::iter::once("expected".to_owned()))
        .chain(metadata.iter().map(|m| format!("metadata.{m}")));
    // Writing to a Vec cannot fail. Every cell is a tenant's text: made
    // spreadsheet-safe (JSONL is the lossless export).
    let _ = writer.write_record(header.map(|h| cell(&h).into_owned()));
    for case in cases {
        let row = std::iter::once(case.id.as_str())
            .chain(
                variables
                    .iter()
                    .map(|v| case.variables.get(*v).map_or("", String::as_str)),
            )
            .chain(std::iter::once(case.expected.as_deref().unwrap_or("")))
            .chain(
                metadata
                    .iter()
                    .map(|m| case.metadata.get(*m).map_or("", String::as_str)),
            );
        let _ = writer.write_record(row.map(|c| cell(c).into_owned()));
    }
    writer.into_inner().unwrap_or_default()
}

/// A case that lacks variables a prompt needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingVariables {
    /// 1-based position in the dataset.
    pub row: usize,
    pub case_id: String,
    pub missing: Vec<String>,
}

impl fmt::Display for MissingVariables {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "row {} ({}): missing {}",
            self.row,
            self.case_id,
            self.missing.join(", ")
        )
    }
}

/// Every case that lacks one of `required`, with what it lacks.
pub fn missing_variables(cases: &[Case], required: &[String]) -> Vec<MissingVariables> {
    cases
        .iter()
        .enumerate()
        .filter_map(|(index, case)| {
            let missing: Vec<String> = required
                .iter()
                .filter(|name| !case.variables.contains_key(*name))
                .cloned()
                .collect();
            (!missing.is_empty()).then(|| MissingVariables {
                row: index + 1,
                case_id: case.id.clone(),
                missing,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(id: &str, variables: &[(&str, &str)], expected: Option<&str>) -> Case {
        Case {
            id: id.into(),
            variables: variables
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
            expected: expected.map(Into::into),
            metadata: BTreeMap::new(),
        }
    }

    #[test]
    fn a_csv_export_never_holds_a_formula_a_spreadsheet_would_run() {
        let cases = [case(
            "c1",
            &[("q", "=HYPERLINK(\"http://x\",\"y\")")],
            Some("-1+1"),
        )];
        let csv = String::from_utf8(export(Format::Csv, &cases)).unwrap_or_default();
        assert!(csv.contains("'=HYPERLINK"), "{csv}");
        assert!(csv.contains("'-1+1"), "{csv}");
        // JSONL keeps the text as it is.
        let jsonl = String::from_utf8(export(Format::JsonLines, &cases)).unwrap_or_default();
        assert!(jsonl.contains("\"=HYPERLINK"), "{jsonl}");
    }

    fn imported(format: Format, text: &str) -> Vec<Case> {
        import(format, text.as_bytes()).unwrap_or_else(|e| unreachable!("{e:?}"))
    }

    fn problems(format: Format, text: &str) -> Vec<String> {
        match import(format, text.as_bytes()) {
            Ok(cases) => unreachable!("expected errors, got {cases:?}"),
            Err(e) => e.errors.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn reads_json_lines() {
        let cases = imported(
            Format::JsonLines,
            "{\"variables\": {\"name\": \"Ada\", \"age\": 36, \"vip\": true}, \"expected\": \"Hi Ada\"}\n\n\
             {\"id\": \"b\", \"variables\": {\"name\": \"Bob\", \"age\": null}, \"metadata\": {\"split\": \"test\"}}\r\n",
        );
        assert_eq!(cases.len(), 2);
        assert_eq!(cases[0].id, "case-1");
        assert_eq!(cases[0].variables["age"], "36");
        assert_eq!(cases[0].variables["vip"], "true");
        assert_eq!(cases[0].expected.as_deref(), Some("Hi Ada"));
        assert_eq!(cases[1].id, "b");
        assert!(!cases[1].variables.contains_key("age"));
        assert_eq!(cases[1].metadata["split"], "test");
    }

    #[test]
    fn json_lines_problems_are_all_reported_by_line() {
        let errors = problems(
            Format::JsonLines,
            "{\"variables\": {}}\n{not json\n[1]\n{\"variables\": {\"x\": [1]}, \"extra\": 1}\n{\"id\": \"case-1\"}\n",
        );
        assert_eq!(errors.len(), 5, "{errors:?}");
        assert!(errors[0].starts_with("line 2: not valid JSON"), "{errors:?}");
        assert_eq!(errors[1], "line 3: a case must be a JSON object");
        assert!(
            errors[2..4]
                .iter()
                .any(|e| e == "line 4: variables.x must be a string, number or boolean")
        );
        assert!(
            errors[2..4]
                .iter()
                .any(|e| e.starts_with("line 4: unknown key \"extra\""))
        );
        assert_eq!(errors[4], "line 5: id \"case-1\" is used on line 1 already");
    }

    #[test]
    fn reads_csv_with_quotes_metadata_and_empty_cells() {
        let cases = imported(
            Format::Csv,
            "\u{feff}id,question,context,expected,metadata.split\n\
             q1,\"Why, though?\",\"two\nlines\",Because.,train\n\
             ,What?,,,\n",
        );
        assert_eq!(cases.len(), 2);
        assert_eq!(cases[0].variables["question"], "Why, though?");
        assert_eq!(cases[0].variables["context"], "two\nlines");
        assert_eq!(cases[0].metadata["split"], "train");
        assert_eq!(cases[1].id, "case-2");
        assert!(!cases[1].variables.contains_key("context"));
        assert_eq!(cases[1].expected, None);
    }

    #[test]
    fn csv_problems_name_their_lines() {
        let errors = problems(Format::Csv, "a,b\n1,2\n1,2,3\n4\n");
        assert_eq!(
            errors,
            [
                "line 3: 3 fields, but the header has 2",
                "line 4: 1 fields, but the header has 2"
            ]
        );
        let errors = problems(Format::Csv, "a,,a\n1,2,3\n");
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors.iter().any(|e| e == "line 1: column 2 has no name"));
        assert!(
            errors
                .iter()
                .any(|e| e.contains("\"a\" appears twice (columns 1 and 3)"))
        );
        assert_eq!(
            problems(Format::Csv, ""),
            ["the file is empty: a CSV dataset starts with a header row"]
        );
        let mut latin1 = b"a,b\n1,caf".to_vec();
        latin1.extend_from_slice(b"\xe9\n");
        let problems = import(Format::Csv, &latin1).err().map(|e| e.errors);
        assert_eq!(
            problems.map(|p| p[0].to_string()),
            Some("line 2: field 2 is not valid UTF-8".to_owned())
        );
    }

    #[test]
    fn many_problems_are_capped_but_counted() {
        let text: String = (0..150).map(|_| "nope\n").collect();
        let err = import(Format::JsonLines, text.as_bytes()).err();
        let err = err.unwrap_or_else(|| unreachable!("errors"));
        assert_eq!(err.errors.len(), MAX_REPORTED);
        assert_eq!(err.total, 150);
    }

    #[test]
    fn export_round_trips_in_both_formats() {
        let mut with_metadata = case("x,1", &[("q", "say \"hi\"\nplease"), ("n", "1")], Some("hi"));
        with_metadata.metadata.insert("split".into(), "test".into());
        let cases = vec![with_metadata, case("y", &[("q", "only q")], None)];
        for format in [Format::Csv, Format::JsonLines] {
            let bytes = export(format, &cases);
            assert_eq!(
                import(format, &bytes),
                Ok(cases.clone()),
                "{}",
                String::from_utf8_lossy(&bytes)
            );
        }
    }

    #[test]
    fn missing_variables_are_listed_by_row() {
        let cases = vec![
            case("a", &[("name", "Ada"), ("topic", "math")], None),
            case("b", &[("name", "Bob")], None),
            case("c", &[], None),
        ];
        let required = vec!["name".to_owned(), "topic".to_owned()];
        let missing: Vec<String> = missing_variables(&cases, &required)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            missing,
            ["row 2 (b): missing topic", "row 3 (c): missing name, topic"]
        );
    }

    #[test]
    fn formats_parse_from_names_and_media_types() {
        assert_eq!(Format::parse("text/csv; charset=utf-8"), Some(Format::Csv));
        assert_eq!(Format::parse("application/x-ndjson"), Some(Format::JsonLines));
        assert_eq!(Format::parse("jsonl"), Some(Format::JsonLines));
        assert_eq!(Format::parse("application/json"), None);
    }
}
