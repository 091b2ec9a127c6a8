//! `promptops billing reconcile` (against a running platform) and the
//! rebuild of the usage ledger (`promptops projections rebuild usage_ledger`,
//! against the billing service's stores, with the service stopped).

use std::io::Write as _;
use std::process::ExitCode;

use promptops_platform::config::{CommonConfig, Env};

use crate::client::Target;
use crate::files::runtime;

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// `promptops billing reconcile [--from T] [--to T]` (default: the last 30
/// days): prints the comparison as JSON; exit 0 when the ledger matches the
/// log's terminal runs, 1 with a gap (each listed on stderr), 2 when the
/// platform cannot be reached, 65 for a refused range.
pub fn reconcile(from: Option<&str>, to: Option<&str>) -> ExitCode {
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
    let now = time::OffsetDateTime::now_utc();
    let to = to.map_or_else(|| rfc3339(now + time::Duration::seconds(1)), str::to_owned);
    let from = from.map_or_else(|| rfc3339(now - time::Duration::days(30)), str::to_owned);
    runtime.block_on(async {
        let client = reqwest::Client::new();
        let request = target
            .request(&client, reqwest::Method::GET, "/api/v1/billing/reconcile")
            .query(&[("from", from.as_str()), ("to", to.as_str())]);
        let (status, body) = match target.send_json(request).await {
            Ok(answer) => answer,
            Err(code) => return code,
        };
        if !status.is_success() {
            eprintln!(
                "reconciliation refused ({status}): {}",
                body["detail"].as_str().unwrap_or_default()
            );
            return ExitCode::from(if status.is_client_error() && status != 401 && status != 403 {
                65
            } else if status.is_server_error() {
                2
            } else {
                1
            });
        }
        if writeln!(std::io::stdout().lock(), "{body}").is_err() {
            return ExitCode::from(74);
        }
        if body["reconciled"] == serde_json::Value::Bool(true) {
            return ExitCode::SUCCESS;
        }
        let gaps = body["gaps"].as_array().cloned().unwrap_or_default();
        eprintln!(
            "ledger NOT reconciled: {} terminal runs, {} lines, {} gap(s)",
            body["terminal_runs"],
            body["ledger_lines"],
            gaps.len()
        );
        for gap in gaps {
            eprintln!(
                "  {} {}: {}",
                gap["kind"].as_str().unwrap_or_default(),
                gap["run_id"].as_str().unwrap_or_default(),
                gap["detail"].as_str().unwrap_or_default()
            );
        }
        ExitCode::from(1)
    })
}

/// Drops the usage ledger and replays it from the start of the log.
pub fn rebuild_ledger() -> ExitCode {
    let env = Env::from_process();
    let common = match CommonConfig::from_env(&env) {
        Ok(common) => common,
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
        let log = match crate::files::event_log(&common.event_log).await {
            Ok(log) => log,
            Err(code) => return code,
        };
        let db =
            match promptops_platform::db::open(&common.database, "billing", promptops_billing::MIGRATIONS)
                .await
            {
                Ok(db) => db,
                Err(err) => {
                    eprintln!("{err}");
                    return ExitCode::from(69);
                }
            };
        match promptops_billing::ledger::rebuild(&log, &db).await {
            Ok(position) => {
                let out = serde_json::json!({
                    "projection": promptops_billing::ledger::PROJECTION,
                    "replayed_to": { "EVT_EXECUTION": position },
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
