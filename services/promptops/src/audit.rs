//! `promptops audit verify` (against a running platform) and
//! `promptops projections rebuild <name>` (against its stores, with the
//! owning service stopped).

use std::io::Write as _;
use std::process::ExitCode;

use promptops_platform::config::{CommonConfig, Env};

use crate::client::Target;
use crate::files::runtime;

/// `promptops audit verify [--from T] [--to T]`: prints the verification as
/// JSON; exit 0 when intact, 1 when broken (the first broken entry named on
/// stderr), 2 when the platform cannot be reached, 65 for a refused range.
pub fn verify(from: Option<&str>, to: Option<&str>) -> ExitCode {
    let target = match Target::from_env() {
        Ok(target) => target,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::from(64);
        }
    };
    let runtime = match runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    runtime.block_on(async {
        let client = reqwest::Client::new();
        let mut query = Vec::new();
        if let Some(from) = from {
            query.push(("from", from));
        }
        if let Some(to) = to {
            query.push(("to", to));
        }
        let request = target
            .request(&client, reqwest::Method::GET, "/api/v1/audit/verify")
            .query(&query);
        let (status, body) = match target.send_json(request).await {
            Ok(answer) => answer,
            Err(code) => return code,
        };
        if !status.is_success() {
            eprintln!(
                "verification refused ({status}): {}",
                body["detail"].as_str().unwrap_or_default()
            );
            return ExitCode::from(if status.is_client_error() && status != 401 && status != 403 {
                65
            } else {
                1
            });
        }
        if writeln!(std::io::stdout().lock(), "{body}").is_err() {
            return ExitCode::from(74);
        }
        if body["intact"] == serde_json::Value::Bool(true) {
            ExitCode::SUCCESS
        } else {
            let b = &body["first_break"];
            eprintln!(
                "audit trail BROKEN in {} at entry {} ({}): {}",
                b["chain"].as_str().unwrap_or_default(),
                b["chain_sequence"],
                b["event_id"]
                    .as_str()
                    .filter(|s| !s.is_empty())
                    .unwrap_or("missing"),
                b["reason"].as_str().unwrap_or_default()
            );
            ExitCode::from(1)
        }
    })
}

/// `promptops projections rebuild <name>`: replays the projection from the
/// start of the log into the configured database (`DATABASE_URL`, or the
/// data dir's SQLite files; `NATS_URL` or the embedded log).
pub fn rebuild(name: &str) -> ExitCode {
    if !promptops_audit::rebuild::NAMES.contains(&name) {
        eprintln!(
            "no projection {name:?}; known: {}",
            promptops_audit::rebuild::NAMES.join(", ")
        );
        return ExitCode::from(64);
    }
    let env = Env::from_process();
    let (common, signing) = match (
        CommonConfig::from_env(&env),
        promptops_audit::signing::KeySource::from_env(&env).load(),
    ) {
        (Ok(common), Ok(signing)) => (common, signing),
        (Err(err), _) | (_, Err(err)) => {
            eprintln!("{err}");
            return ExitCode::from(64);
        }
    };
    let runtime = match runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    runtime.block_on(async {
        let log = match crate::files::event_log(&common.event_log).await {
            Ok(log) => log,
            Err(code) => return code,
        };
        let migrations = promptops_audit::migrations();
        let db = match promptops_platform::db::open(&common.database, "audit", &migrations).await {
            Ok(db) => db,
            Err(err) => {
                eprintln!("{err}");
                return ExitCode::from(69);
            }
        };
        match promptops_audit::rebuild::rebuild(&log, &db, &signing, name).await {
            Ok(rebuilt) => {
                let positions: serde_json::Map<String, serde_json::Value> = rebuilt
                    .positions
                    .iter()
                    .map(|(stream, at)| ((*stream).to_owned(), serde_json::json!(at)))
                    .collect();
                let out = serde_json::json!({
                    "projection": rebuilt.projection,
                    "replayed_to": positions,
                    "checkpoints_signed": rebuilt.checkpoints_signed,
                });
                if writeln!(std::io::stdout().lock(), "{out}").is_err() {
                    return ExitCode::from(74);
                }
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("rebuild failed: {err}");
                ExitCode::from(1)
            }
        }
    })
}
