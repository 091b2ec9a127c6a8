//! User-defined metrics: Rhai scripts run in a sandbox.
//!
//! The engine is Rhai's raw engine with only its standard library (strings,
//! numbers, arrays, maps, maths): no I/O, no `print`, no modules (built
//! without them), nothing registered from the host. Every run is bounded:
//! [`MAX_OPERATIONS`] operations and [`MAX_RUN_TIME`] of wall time (checked
//! as it goes), strings of at most 1 MiB and arrays and maps of at most
//! 10,000 items (the memory bound), 32 nested calls, expressions 64 deep.
//!
//! In scope: `output` (string), `expected` (string, or `()` when the case
//! has none), `variables` (map of strings), `latency_ms` and
//! `cost_nano_usd` (integers). The script's value is the score: a number,
//! or a bool (1 or 0).

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use rhai::packages::{Package as _, StandardPackage};
use rhai::{AST, Dynamic, Engine, Map, Scope, Shared};

use crate::scoring::Output;

pub const MAX_OPERATIONS: u64 = 1_000_000;
pub const MAX_RUN_TIME: Duration = Duration::from_millis(100);
pub const MAX_SCRIPT_BYTES: usize = 16 * 1024;

static STANDARD: LazyLock<Shared<rhai::Module>> = LazyLock::new(|| StandardPackage::new().as_shared_module());

/// A bounded engine; `deadline` stops a run that takes too long.
fn engine(deadline: Option<Instant>) -> Engine {
    let mut engine = Engine::new_raw();
    engine.register_global_module(STANDARD.clone());
    engine.set_max_operations(MAX_OPERATIONS);
    engine.set_max_string_size(1 << 20);
    engine.set_max_array_size(10_000);
    engine.set_max_map_size(10_000);
    engine.set_max_call_levels(32);
    engine.set_max_expr_depths(64, 32);
    if let Some(deadline) = deadline {
        engine.on_progress(move |_| (Instant::now() > deadline).then(|| Dynamic::from("time limit")));
    }
    engine
}

/// Parses a script (syntax errors name line and column).
pub fn compile(script: &str) -> Result<AST, String> {
    if script.trim().is_empty() {
        return Err("script needs the script".into());
    }
    if script.len() > MAX_SCRIPT_BYTES {
        return Err(format!("at most {MAX_SCRIPT_BYTES} bytes"));
    }
    engine(None)
        .compile(script)
        .map_err(|e| format!("does not parse: {e}"))
}

/// Runs a compiled script on one output: its score, or why there is none.
pub fn run(ast: &AST, output: &Output<'_>) -> Result<f64, String> {
    let mut scope = Scope::new();
    scope.push("output", output.text.to_owned());
    scope.push_dynamic(
        "expected",
        output
            .expected
            .map_or(Dynamic::UNIT, |e| Dynamic::from(e.to_owned())),
    );
    let variables: Map = output
        .variables
        .map(|vars| {
            vars.iter()
                .map(|(k, v)| (k.as_str().into(), Dynamic::from(v.clone())))
                .collect()
        })
        .unwrap_or_default();
    scope.push("variables", variables);
    scope.push(
        "latency_ms",
        i64::try_from(output.latency_us / 1000).unwrap_or(i64::MAX),
    );
    scope.push("cost_nano_usd", output.cost_nano_usd);
    let value = engine(Some(Instant::now() + MAX_RUN_TIME))
        .eval_ast_with_scope::<Dynamic>(&mut scope, ast)
        .map_err(|e| match *e {
            // rhai shows a termination as "Script terminated", without why.
            rhai::EvalAltResult::ErrorTerminated(..) => format!(
                "the script failed: over its time limit of {} ms",
                MAX_RUN_TIME.as_millis()
            ),
            other => format!("the script failed: {other}"),
        })?;
    let score = if let Ok(f) = value.as_float() {
        f
    } else if let Ok(i) = value.as_int() {
        i as f64
    } else if let Ok(b) = value.as_bool() {
        if b { 1.0 } else { 0.0 }
    } else {
        return Err(format!(
            "the script returned {}, not a number or a bool",
            value.type_name()
        ));
    };
    if score.is_finite() {
        Ok(score)
    } else {
        Err("the script returned a number that is not finite".into())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn output<'a>(
        text: &'a str,
        expected: Option<&'a str>,
        variables: &'a HashMap<String, String>,
    ) -> Output<'a> {
        Output {
            text,
            expected,
            latency_us: 2_500,
            cost_nano_usd: 7,
            variables: Some(variables),
        }
    }

    fn score(script: &str, out: &Output<'_>) -> Result<f64, String> {
        run(&compile(script)?, out)
    }

    #[test]
    fn scripts_see_the_case_and_return_scores() {
        let vars: HashMap<String, String> = [("lang".to_owned(), "fr".to_owned())].into_iter().collect();
        let out = output("Bonjour le monde", Some("bonjour"), &vars);
        assert_eq!(score("output.len()", &out), Ok(16.0));
        assert_eq!(score("output.to_lower().contains(expected)", &out), Ok(1.0));
        assert_eq!(
            score("if variables.lang == \"fr\" { 0.5 } else { 0.0 }", &out),
            Ok(0.5)
        );
        assert_eq!(score("latency_ms + cost_nano_usd", &out), Ok(9.0));
        let words = "let n = 0; for w in output.split(' ') { if w.len() > 3 { n += 1 } } n";
        assert_eq!(score(words, &out), Ok(2.0));
        let none = output("x", None, &vars);
        assert_eq!(score("if expected == () { -1 } else { 1 }", &none), Ok(-1.0));
    }

    #[test]
    fn the_sandbox_bounds_time_memory_and_reach() {
        let vars = HashMap::new();
        let out = output("x", None, &vars);
        let endless = score("loop { }", &out).unwrap_err();
        assert!(
            endless.contains("operations") || endless.contains("time limit"),
            "{endless}"
        );
        let huge = score("let s = \"x\"; loop { s += s; }", &out).unwrap_err();
        assert!(huge.contains("too large") || huge.contains("Length"), "{huge}");
        let deep = score("fn f(n) { f(n + 1) } f(0)", &out).unwrap_err();
        assert!(deep.contains("call") || deep.contains("Stack"), "{deep}");
        assert!(compile("import \"std/fs\" as fs;").is_err());
        // The raw engine's `print` and `debug` go nowhere.
        assert_eq!(score("print(\"hi\"); debug(1); 1", &out), Ok(1.0));
        assert!(score("\"text\"", &out).unwrap_err().contains("not a number"));
        assert!(compile("let x = ;").unwrap_err().contains("line 1"));
        assert!(compile("").is_err());
    }
}
