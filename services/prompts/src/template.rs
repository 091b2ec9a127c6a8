//! Prompt templates: text with `{{ variable }}` placeholders.
//!
//! - A placeholder is `{{`, optional whitespace, a name (`[A-Za-z_]` then
//!   `[A-Za-z0-9_]`, at most 64 characters), optional whitespace, `}}`.
//! - `\{{` is a literal `{{` (the backslash is dropped); any other backslash
//!   and any `}}` outside a placeholder are literal text. In a run of three or
//!   more `{`, the placeholder takes the last two (`{{{x}}` is `{` then `x`).
//!   [`escape`] turns any text into a template that renders to it; the one
//!   thing that cannot be written is a literal `\` (optionally followed by
//!   `{`s) directly before a placeholder.
//! - [`parse`] reports every problem with its line and column (1-based, in
//!   characters): an unclosed `{{`, an empty or invalid name.
//! - [`check_declared`] compares the variables used with those declared
//!   (undeclared uses and unused declarations, with positions).
//! - [`Template::render`] substitutes values, falling back to declared
//!   defaults; missing values are an error naming every one.

use std::collections::{BTreeSet, HashMap};

pub const MAX_NAME_CHARS: usize = 64;

/// A position in the template text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// A problem found in a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateProblem {
    pub position: Position,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Variable { name: String, position: Position },
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

/// A declared variable with an optional default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    pub name: String,
    pub default: Option<String>,
}

/// Rendering needs values for these variables.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("missing values for: {}", .0.join(", "))]
pub struct MissingVariables(pub Vec<String>);

/// Whether `name` can be a variable name.
pub fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.chars().count() <= MAX_NAME_CHARS
}

/// Parses `text`, reporting every problem.
pub fn parse(text: &str) -> Result<Template, Vec<TemplateProblem>> {
    let chars: Vec<char> = text.chars().collect();
    let ahead = Lookahead::of(&chars);
    let mut parts = Vec::new();
    let mut problems = Vec::new();
    let mut literal = String::new();
    let (mut line, mut column) = (1, 1);
    let mut i = 0;
    let advance = |c: char, line: &mut usize, column: &mut usize| {
        if c == '\n' {
            *line += 1;
            *column = 1;
        } else {
            *column += 1;
        }
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '\\' && chars.get(i + 1) == Some(&'{') && chars.get(i + 2) == Some(&'{') {
            literal.push_str("{{");
            column += 3;
            i += 3;
            continue;
        }
        if c == '{' && chars.get(i + 1) == Some(&'{') && chars.get(i + 2) == Some(&'{') {
            // `{{{x}}` is a literal `{` before `{{x}}`.
            literal.push(c);
            column += 1;
            i += 1;
            continue;
        }
        if c == '{' && chars.get(i + 1) == Some(&'{') {
            let start = Position { line, column };
            // Linear on any input: where the next `}}` and the next line
            // break are was computed once, not searched for at every `{{`.
            let close = ahead.close_from(i + 2);
            let newline_before_close = close.is_none_or(|j| ahead.newline_from(i + 2) < j);
            match close {
                Some(j) if !newline_before_close => {
                    let name: String = chars[i + 2..j].iter().collect::<String>().trim().to_owned();
                    if name.is_empty() {
                        problems.push(TemplateProblem {
                            position: start,
                            message: "empty variable name".into(),
                        });
                    } else if !is_valid_name(&name) {
                        problems.push(TemplateProblem {
                            position: start,
                            message: format!(
                                "invalid variable name {name:?}: use letters, digits and _ (not first), at most {MAX_NAME_CHARS}"
                            ),
                        });
                    }
                    if !literal.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Variable {
                        name,
                        position: start,
                    });
                    for &consumed in &chars[i..j + 2] {
                        advance(consumed, &mut line, &mut column);
                    }
                    i = j + 2;
                }
                _ => {
                    problems.push(TemplateProblem {
                        position: start,
                        message:
                            "unclosed {{ (close it with }} on the same line, or write \\{{ for a literal {{)"
                                .into(),
                    });
                    literal.push_str("{{");
                    column += 2;
                    i += 2;
                }
            }
            continue;
        }
        literal.push(c);
        advance(c, &mut line, &mut column);
        i += 1;
    }
    if !literal.is_empty() {
        parts.push(Part::Text(literal));
    }
    if problems.is_empty() {
        return Ok(Template { parts });
    }
    // An answer lists the first problems, not one per `{{` of a huge text.
    if problems.len() > MAX_PROBLEMS {
        let more = problems.len() - MAX_PROBLEMS;
        problems.truncate(MAX_PROBLEMS);
        let position = problems
            .last()
            .map(|p| p.position)
            .unwrap_or(Position { line: 0, column: 0 });
        problems.push(TemplateProblem {
            position,
            message: format!("and {more} more problems after this one"),
        });
    }
    Err(problems)
}

/// The most problems [`parse`] lists (then one line counting the rest).
pub const MAX_PROBLEMS: usize = 100;

/// For every position, where the next `}}` and the next `\n` start.
struct Lookahead {
    close: Vec<usize>,
    newline: Vec<usize>,
}

impl Lookahead {
    fn of(chars: &[char]) -> Self {
        let n = chars.len();
        let mut close = vec![n; n + 1];
        let mut newline = vec![n; n + 1];
        for k in (0..n).rev() {
            close[k] = if chars[k] == '}' && chars.get(k + 1) == Some(&'}') {
                k
            } else {
                close[k + 1]
            };
            newline[k] = if chars[k] == '\n' { k } else { newline[k + 1] };
        }
        Self { close, newline }
    }

    /// The first `}}` at or after `k`.
    fn close_from(&self, k: usize) -> Option<usize> {
        self.close.get(k).copied().filter(|&j| j < self.close.len() - 1)
    }

    /// The first line break at or after `k` (the length when there is none).
    fn newline_from(&self, k: usize) -> usize {
        self.newline.get(k).copied().unwrap_or(self.newline.len() - 1)
    }
}

impl Template {
    /// How many bytes [`Template::render`] would produce with these values
    /// (saturating), computed without building the text: a caller refuses an
    /// oversized result before allocating it.
    pub fn rendered_len(&self, values: &HashMap<String, String>, declared: &[Declared]) -> usize {
        self.parts.iter().fold(0usize, |total, part| {
            let len = match part {
                Part::Text(text) => text.len(),
                Part::Variable { name, .. } => values
                    .get(name)
                    .map(String::len)
                    .or_else(|| {
                        declared
                            .iter()
                            .find(|d| d.name == *name)
                            .and_then(|d| d.default.as_ref().map(String::len))
                    })
                    .unwrap_or(0),
            };
            total.saturating_add(len)
        })
    }

    /// The variables used, each once, in order of first use.
    pub fn variables(&self) -> Vec<&str> {
        let mut seen = BTreeSet::new();
        self.parts
            .iter()
            .filter_map(|p| match p {
                Part::Variable { name, .. } if seen.insert(name.as_str()) => Some(name.as_str()),
                _ => None,
            })
            .collect()
    }

    /// The text with every variable replaced by its value or declared default.
    pub fn render(
        &self,
        values: &HashMap<String, String>,
        declared: &[Declared],
    ) -> Result<String, MissingVariables> {
        let defaults: HashMap<&str, &str> = declared
            .iter()
            .filter_map(|d| Some((d.name.as_str(), d.default.as_deref()?)))
            .collect();
        let mut out = String::new();
        let mut missing = Vec::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Variable { name, .. } => match values
                    .get(name)
                    .map(String::as_str)
                    .or(defaults.get(name.as_str()).copied())
                {
                    Some(value) => out.push_str(value),
                    None if !missing.contains(name) => missing.push(name.clone()),
                    None => {}
                },
            }
        }
        if missing.is_empty() {
            Ok(out)
        } else {
            Err(MissingVariables(missing))
        }
    }
}

/// Uses of variables not in `declared`, each reported once at its first use.
pub fn check_undeclared(template: &Template, declared: &BTreeSet<&str>) -> Vec<TemplateProblem> {
    let mut problems = Vec::new();
    let mut reported = BTreeSet::new();
    for part in &template.parts {
        if let Part::Variable { name, position } = part
            && !declared.contains(name.as_str())
            && reported.insert(name.as_str())
        {
            problems.push(TemplateProblem {
                position: *position,
                message: format!("variable {name:?} is used but not declared"),
            });
        }
    }
    problems
}

/// Variables used but not declared, and declared but not used.
pub fn check_declared(template: &Template, declared: &[Declared]) -> Vec<TemplateProblem> {
    let declared_names: BTreeSet<&str> = declared.iter().map(|d| d.name.as_str()).collect();
    let mut problems = check_undeclared(template, &declared_names);
    let used: BTreeSet<&str> = template.variables().into_iter().collect();
    for d in declared {
        if !used.contains(d.name.as_str()) {
            problems.push(TemplateProblem {
                position: Position { line: 0, column: 0 },
                message: format!("variable {:?} is declared but not used", d.name),
            });
        }
    }
    problems
}

/// `text` as a template that renders to exactly `text`: every `{{` escaped.
pub fn escape(text: &str) -> String {
    text.replace("{{", "\\{{")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn variables_with_whitespace_render() {
        let t = parse("Hello {{name}}, {{  name }} from {{ place\t}}!").unwrap();
        assert_eq!(t.variables(), ["name", "place"]);
        let out = t
            .render(&values(&[("name", "Ada"), ("place", "London")]), &[])
            .unwrap();
        assert_eq!(out, "Hello Ada, Ada from London!");
    }

    #[test]
    fn escapes_and_stray_braces_are_literal() {
        let t = parse(r#"JSON: \{{"a": 1}} and }} and \n and {single}"#).unwrap();
        assert!(t.variables().is_empty());
        assert_eq!(
            t.render(&values(&[]), &[]).unwrap(),
            r#"JSON: {{"a": 1}} and }} and \n and {single}"#
        );
    }

    #[test]
    fn unclosed_runs_parse_in_linear_time() {
        // Quadratic scanning made this ~10^10 steps; linear, it is instant.
        let text = "{{ a".repeat(50_000);
        let problems = parse(&text).unwrap_err();
        assert_eq!(problems.len(), MAX_PROBLEMS + 1);
        assert_eq!(
            problems[MAX_PROBLEMS].message,
            "and 49900 more problems after this one"
        );
        let lines = "{{ a\n".repeat(50_000);
        assert_eq!(parse(&lines).unwrap_err().len(), MAX_PROBLEMS + 1);
    }

    #[test]
    fn the_rendered_length_is_known_before_rendering() {
        let t = parse("{{x}}-{{ y }}-{{x}}").unwrap();
        let declared = [Declared {
            name: "y".into(),
            default: Some("four".into()),
        }];
        let values = values(&[("x", "abc")]);
        assert_eq!(
            t.rendered_len(&values, &declared),
            t.render(&values, &declared).unwrap().len()
        );
        // 2,000 uses of a 100 KB value: 200 MB that nobody has to allocate to refuse.
        let big = parse(&"{{x}}".repeat(2_000)).unwrap();
        let huge = HashMap::from([("x".to_owned(), "x".repeat(100_000))]);
        assert_eq!(big.rendered_len(&huge, &[]), 200_000_000);
    }

    #[test]
    fn problems_have_positions() {
        let problems = parse("line one\n  {{ ok }} {{ bad-name }}\n{{ }} and {{ open").unwrap_err();
        let found: Vec<(String, &str)> = problems
            .iter()
            .map(|p| (p.position.to_string(), p.message.split(' ').next().unwrap_or("")))
            .collect();
        assert_eq!(
            found,
            [
                ("2:12".to_owned(), "invalid"),
                ("3:1".to_owned(), "empty"),
                ("3:11".to_owned(), "unclosed")
            ]
        );
    }

    #[test]
    fn a_placeholder_cannot_span_lines() {
        let problems = parse("{{ name\n}}").unwrap_err();
        assert_eq!(problems[0].position, Position { line: 1, column: 1 });
    }

    #[test]
    fn missing_values_are_all_named_and_defaults_fill_in() {
        let t = parse("{{a}} {{b}} {{c}} {{a}}").unwrap();
        let declared = [Declared {
            name: "b".into(),
            default: Some("B".into()),
        }];
        assert_eq!(
            t.render(&values(&[]), &declared),
            Err(MissingVariables(vec!["a".into(), "c".into()]))
        );
        assert_eq!(
            t.render(&values(&[("a", "1"), ("c", "3")]), &declared).unwrap(),
            "1 B 3 1"
        );
        assert_eq!(
            t.render(&values(&[("a", "1"), ("b", "2"), ("c", "3")]), &declared)
                .unwrap(),
            "1 2 3 1"
        );
    }

    #[test]
    fn declared_and_used_variables_are_compared() {
        let t = parse("Hi {{name}} {{name}} {{extra}}").unwrap();
        let declared = [
            Declared {
                name: "name".into(),
                default: None,
            },
            Declared {
                name: "unused".into(),
                default: None,
            },
        ];
        let problems: Vec<String> = check_declared(&t, &declared)
            .into_iter()
            .map(|p| p.message)
            .collect();
        assert_eq!(
            problems,
            [
                "variable \"extra\" is used but not declared",
                "variable \"unused\" is declared but not used"
            ]
        );
    }

    #[test]
    fn text_without_placeholders_renders_unchanged() {
        // A small exhaustive property check over an alphabet that includes
        // the special characters, for every string up to length 4.
        let alphabet = ['a', '{', '}', '\\', '\n', 'é'];
        let mut strings = vec![String::new()];
        for _ in 0..4 {
            let next: Vec<String> = strings
                .iter()
                .flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}")))
                .collect();
            strings.extend(next);
        }
        for s in strings {
            if s.contains("{{") {
                continue;
            }
            let t = parse(&s).unwrap_or_else(|e| panic!("{s:?}: {e:?}"));
            assert_eq!(t.render(&HashMap::new(), &[]).unwrap(), s, "{s:?}");
        }
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::*;

        proptest! {
            /// Any text, escaped, parses and renders back to itself.
            #[test]
            fn escaped_text_renders_to_itself(text in "(?s).{0,200}|[{}\\\\a ]{0,40}") {
                let parsed = parse(&escape(&text)).expect("escaped text parses");
                prop_assert!(parsed.variables().is_empty());
                prop_assert_eq!(parsed.render(&HashMap::new(), &[]).expect("renders"), text);
            }

            /// Text around placeholders survives rendering with the values put in.
            #[test]
            fn placeholders_render_their_values(
                before in "(?s).{0,50}",
                after in "(?s).{0,50}",
                value in "(?s).{0,20}",
                padding in " {0,3}",
            ) {
                prop_assume!(!before.trim_end_matches('{').ends_with('\\'));
                let source = format!("{}{{{{{padding}x{padding}}}}}{}", escape(&before), escape(&after));
                let parsed = parse(&source).expect("parses");
                let values = HashMap::from([("x".to_owned(), value.clone())]);
                prop_assert_eq!(parsed.render(&values, &[]).expect("renders"), format!("{before}{value}{after}"));
            }
        }
    }
}
