//! `promptops prompts push DIR` and `promptops prompts pull DIR`: a directory
//! of YAML prompt files synced with the registry over the HTTP API.
//!
//! - One file per prompt, `<folder>/<name>.yaml` (see
//!   [`promptops_prompts::exchange::PromptFile`]); the folder is the file's
//!   directory under DIR, the name its `name:` (or the file name).
//! - `push` validates every file locally, then sends them as one import
//!   document: the server validates everything before writing anything and
//!   creates a version only where the content differs from the latest, so
//!   pushing unchanged files does nothing. `--dry-run` prints the plan.
//! - `pull` writes the latest version of every prompt (or of `--folder`).
//!
//! Exit codes: 0 done, 65 invalid files (each problem printed with its file
//! and line), 1 refused by the server, 2 unreachable, 64 bad usage.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use promptops_prompts::exchange::{self, Document, PromptFile};
use promptops_proto::prompts::v1::DocumentFormat;

use crate::client::Target;

const EXIT_INVALID: u8 = 65;

/// Opens the configured event log for a CLI command; exit code 69 (said
/// on stderr) when it cannot be.
pub(crate) async fn event_log(
    config: &promptops_platform::config::EventLogConfig,
) -> Result<promptops_eventlog::EventLog, ExitCode> {
    promptops_platform::eventlog::open(config).await.map_err(|err| {
        eprintln!("cannot open the event log: {err}");
        ExitCode::from(69)
    })
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| {
            eprintln!("cannot start: {err}");
            ExitCode::from(70)
        })
}

/// Every `*.yaml` / `*.yml` under `dir`, sorted.
fn yaml_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// The files as a document, or every problem with its file.
fn read_files(dir: &Path) -> Result<(Document, Vec<PathBuf>), Vec<String>> {
    let files = yaml_files(dir).map_err(|e| vec![format!("{}: {e}", dir.display())])?;
    let mut problems = Vec::new();
    let mut prompts = Vec::new();
    let mut paths = Vec::new();
    for path in files {
        let relative = path.strip_prefix(dir).unwrap_or(&path);
        let folder = relative
            .parent()
            .map(|p| {
                p.components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/")
            })
            .unwrap_or_default();
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) => {
                problems.push(format!("{}: {err}", relative.display()));
                continue;
            }
        };
        match exchange::parse_document::<PromptFile>(&text, DocumentFormat::Yaml) {
            Ok(file) => {
                prompts.push(file.into_doc(&folder, &stem));
                paths.push(relative.to_path_buf());
            }
            Err(problem) => problems.push(format!("{}: {}", relative.display(), problem.description)),
        }
    }
    if problems.is_empty() {
        Ok((
            Document {
                format: exchange::FORMAT.to_owned(),
                prompts,
            },
            paths,
        ))
    } else {
        Err(problems)
    }
}

/// `prompts[3].versions[0].template` → `support/greeting.yaml: template`.
fn locate(field: &str, paths: &[PathBuf]) -> String {
    let parsed = field
        .strip_prefix("prompts[")
        .and_then(|rest| rest.split_once(']'))
        .and_then(|(index, rest)| Some((index.parse::<usize>().ok()?, rest)));
    match parsed.and_then(|(i, rest)| Some((paths.get(i)?, rest))) {
        Some((path, rest)) => {
            let rest = rest.trim_start_matches('.');
            let rest = rest.strip_prefix("versions[0].").unwrap_or(rest);
            format!("{}: {rest}", path.display())
        }
        None => field.to_owned(),
    }
}

/// `promptops prompts push DIR [--dry-run]`.
pub fn push(dir: &Path, dry_run: bool) -> ExitCode {
    let target = match Target::from_env() {
        Ok(target) => target,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::from(64);
        }
    };
    let (document, paths) = match read_files(dir) {
        Ok(read) => read,
        Err(problems) => {
            for problem in problems {
                eprintln!("{problem}");
            }
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let body = match exchange::format_document(&document, DocumentFormat::Json) {
        Ok(body) => body,
        Err(err) => {
            eprintln!("cannot encode the files: {err}");
            return ExitCode::from(70);
        }
    };
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    runtime.block_on(async {
        let client = reqwest::Client::new();
        let request = target
            .request(&client, reqwest::Method::POST, "/api/v1/prompts/import")
            .query(&[("dry_run", dry_run)])
            .header("content-type", "application/json")
            .body(body);
        let response = match request.send().await {
            Ok(response) => response,
            Err(err) => {
                eprintln!("cannot reach promptops at {}: {err}", target.url);
                return ExitCode::from(2);
            }
        };
        let status = response.status();
        let answer: serde_json::Value = response.json().await.unwrap_or(serde_json::Value::Null);
        if !status.is_success() {
            eprintln!(
                "push refused ({status}): {}",
                answer["detail"].as_str().unwrap_or("")
            );
            let errors = answer["errors"].as_array().cloned().unwrap_or_default();
            for error in &errors {
                eprintln!(
                    "  {}: {}",
                    locate(error["field"].as_str().unwrap_or(""), &paths),
                    error["description"].as_str().unwrap_or("")
                );
            }
            return ExitCode::from(if status.as_u16() == 400 { EXIT_INVALID } else { 1 });
        }
        let mut out = std::io::stdout().lock();
        let verb = if dry_run { "would" } else { "did" };
        let mut changed = 0;
        for action in answer["actions"].as_array().cloned().unwrap_or_default() {
            let kind = action["action"].as_str().unwrap_or("");
            if kind != "unchanged" {
                changed += 1;
            }
            let folder = action["folder"].as_str().unwrap_or("");
            let name = action["name"].as_str().unwrap_or("");
            let path = if folder.is_empty() {
                name.to_owned()
            } else {
                format!("{folder}/{name}")
            };
            let detail = action["detail"].as_str().unwrap_or("");
            if writeln!(out, "{kind:<9} {path} {detail}").is_err() {
                return ExitCode::from(74);
            }
        }
        let _ = writeln!(
            out,
            "{} file(s), {changed} change(s) {verb} apply{}",
            paths.len(),
            if dry_run { " (dry run)" } else { "" }
        );
        ExitCode::SUCCESS
    })
}

/// `promptops prompts pull DIR [--folder F]`.
pub fn pull(dir: &Path, folder: Option<&str>) -> ExitCode {
    let target = match Target::from_env() {
        Ok(target) => target,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::from(64);
        }
    };
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let document = runtime.block_on(async {
        let client = reqwest::Client::new();
        let mut query = vec![("latest_only", "true"), ("format", "json")];
        if let Some(folder) = folder {
            query.push(("folder", folder));
        }
        let response = target
            .request(&client, reqwest::Method::GET, "/api/v1/prompts/export")
            .query(&query)
            .send()
            .await
            .map_err(|err| {
                eprintln!("cannot reach promptops at {}: {err}", target.url);
                ExitCode::from(2)
            })?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            eprintln!("pull refused ({status}): {text}");
            return Err(ExitCode::from(1));
        }
        exchange::parse_document::<Document>(&text, DocumentFormat::Json).map_err(|e| {
            eprintln!("unexpected answer: {}", e.description);
            ExitCode::from(1)
        })
    });
    let document = match document {
        Ok(document) => document,
        Err(code) => return code,
    };
    let mut written = 0;
    for doc in &document.prompts {
        let mut path = dir.to_path_buf();
        for segment in doc.folder.split('/').filter(|s| !s.is_empty()) {
            path.push(exchange::file_stem(segment));
        }
        path.push(format!("{}.yaml", exchange::file_stem(&doc.name)));
        let text = match exchange::format_document(&PromptFile::from_doc(doc), DocumentFormat::Yaml) {
            Ok(text) => text,
            Err(err) => {
                eprintln!("cannot write {}: {err}", doc.name);
                return ExitCode::from(70);
            }
        };
        let result = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&path, text));
        if let Err(err) = result {
            eprintln!("{}: {err}", path.display());
            return ExitCode::from(73);
        }
        written += 1;
    }
    let _ = writeln!(
        std::io::stdout().lock(),
        "{written} prompt(s) written to {}",
        dir.display()
    );
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_paths_point_at_files() {
        let paths = vec![PathBuf::from("a.yaml"), PathBuf::from("support/b.yaml")];
        assert_eq!(
            locate("prompts[1].versions[0].template", &paths),
            "support/b.yaml: template"
        );
        assert_eq!(locate("prompts[0].name", &paths), "a.yaml: name");
        assert_eq!(locate("format", &paths), "format");
    }

    #[test]
    fn files_become_documents_with_folders_from_directories_and_problems_with_lines() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("support/emails")).unwrap();
        std::fs::write(
            dir.path().join("support/emails/greeting.yaml"),
            "template: Hello {{ name }}\ntags: [email]\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("root.yml"), "name: Root prompt\ntemplate: hi\n").unwrap();
        let (doc, paths) = read_files(dir.path()).unwrap();
        let names: Vec<(&str, &str)> = doc
            .prompts
            .iter()
            .map(|p| (p.folder.as_str(), p.name.as_str()))
            .collect();
        assert_eq!(names, [("", "Root prompt"), ("support/emails", "greeting")]);
        assert_eq!(paths.len(), 2);

        std::fs::write(
            dir.path().join("bad.yaml"),
            "template: x\nmodel: {temperature: [1\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("worse.yaml"), "templat: x\n").unwrap();
        let problems = read_files(dir.path()).unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("bad.yaml: line "), "{}", problems[0]);
        assert!(problems[1].contains("unknown field `templat`"), "{}", problems[1]);
    }
}
