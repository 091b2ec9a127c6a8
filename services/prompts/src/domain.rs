//! The Prompt aggregate: pure decisions, no I/O.
//!
//! `decide(&state, command) -> events` and `evolve(state, &event) -> state`.
//! The API loads the events, folds them with [`evolve`], asks [`decide`] and
//! appends what it returns (`promptops_eventlog::aggregate::execute`).
//!
//! A prompt's id is derived from its org, folder and name
//! ([`prompt_id_for`]), so "one name per folder" is the aggregate's own
//! existence check: creating a taken name finds the aggregate already there.
//! Names and folders therefore never change; archived prompts keep theirs.

use std::collections::{BTreeMap, BTreeSet};

use promptops_platform::errors::FieldViolation;
use promptops_proto::common::v1::Actor;
use promptops_proto::prompts::v1::{
    ChatRole, LabelMoved, LabelRemoved, ModelConfig, PromptArchived, PromptCreated, PromptDetailsChanged,
    PromptRestored, PromptVersion, Template, Variable, VersionCreated, VersionInput, template,
};
use sha2::{Digest, Sha256};

use crate::template::{self as tpl, Declared};

/// Limits on user input, documented in the API.
pub const MAX_NAME_CHARS: usize = 200;
pub const MAX_DESCRIPTION_CHARS: usize = 2_000;
pub const MAX_FOLDER_CHARS: usize = 500;
pub const MAX_TAGS: usize = 20;
pub const MAX_TAG_CHARS: usize = 50;
/// The template of one version, all messages together.
pub const MAX_TEMPLATE_BYTES: usize = 256 * 1024;
pub const MAX_MESSAGES: usize = 100;
pub const MAX_VARIABLES: usize = 100;
pub const MAX_COMMIT_MESSAGE_CHARS: usize = 1_000;
pub const MAX_REASON_CHARS: usize = 1_000;
pub const MAX_LABEL_CHARS: usize = 63;
pub const MAX_STOP_SEQUENCES: usize = 4;
pub const MAX_FALLBACK_MODELS: usize = 5;
/// The implicit label that always means the newest version.
pub const LATEST: &str = "latest";

/// The id of the prompt named `name` in `folder` of `org_id`: a UUID (v8)
/// made from a SHA-256 of the three, so the name is the identity.
pub fn prompt_id_for(org_id: &str, folder: &str, name: &str) -> String {
    let mut hasher = Sha256::new();
    for part in [org_id, &normalize_folder(folder), name] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    let digest = hasher.finalize();
    let mut bytes = [0_u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Uuid::new_v8(bytes).hyphenated().to_string()
}

/// What every prompt has besides versions and labels.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PromptHead {
    pub prompt_id: String,
    pub name: String,
    pub folder: String,
    pub description: String,
    pub tags: Vec<String>,
    pub archived: bool,
}

/// The state of one prompt, rebuilt from its events.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PromptState {
    /// `None` until the prompt is created.
    pub head: Option<PromptHead>,
    /// Version `n` is `versions[n - 1]`.
    pub versions: Vec<PromptVersion>,
    pub labels: BTreeMap<String, u64>,
    /// The aggregate version: the number of events applied.
    pub version: u64,
}

impl PromptState {
    pub fn latest(&self) -> Option<&PromptVersion> {
        self.versions.last()
    }

    pub fn latest_number(&self) -> u64 {
        self.versions.len() as u64
    }

    pub fn version_number(&self, number: u64) -> Option<&PromptVersion> {
        let index = usize::try_from(number.checked_sub(1)?).ok()?;
        self.versions.get(index)
    }

    /// The version a label points at (`latest` is the newest).
    pub fn label(&self, label: &str) -> Option<&PromptVersion> {
        if label == LATEST {
            return self.latest();
        }
        self.version_number(*self.labels.get(label)?)
    }
}

/// Events of the prompt aggregate.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptEvent {
    Created(PromptCreated),
    VersionCreated(VersionCreated),
    LabelMoved(LabelMoved),
    LabelRemoved(LabelRemoved),
    DetailsChanged(PromptDetailsChanged),
    Archived(PromptArchived),
    Restored(PromptRestored),
}

/// Commands on the prompt aggregate.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptCommand {
    Create(CreatePrompt),
    AddVersion(AddVersion),
    MoveLabel(MoveLabel),
    RemoveLabel(RemoveLabel),
    Update(UpdatePrompt),
    Archive { reason: String },
    Restore { reason: String },
}

/// Who is acting and when: the parts of a new version the caller supplies.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Authorship {
    pub author: Actor,
    pub at: prost_types::Timestamp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CreatePrompt {
    pub prompt_id: String,
    pub name: String,
    pub description: String,
    pub folder: String,
    pub tags: Vec<String>,
    pub version: VersionInput,
    pub by: Authorship,
}

#[derive(Debug, Clone, PartialEq)]
pub enum VersionSource {
    New(VersionInput),
    /// A rollback by copy: the content of an existing version, as the newest.
    CopyOf {
        version: u64,
        commit_message: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct AddVersion {
    pub source: VersionSource,
    /// Refuse unless the latest version is this one (0 = no check).
    pub expected_latest: u64,
    pub by: Authorship,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MoveLabel {
    pub label: String,
    pub version: u64,
    pub reason: String,
    /// Whether the org's policy protects this label …
    pub protected: bool,
    /// … and whether the caller may move protected labels.
    pub may_move_protected: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RemoveLabel {
    pub label: String,
    pub reason: String,
    pub protected: bool,
    pub may_move_protected: bool,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct UpdatePrompt {
    pub description: Option<String>,
    pub tags: Option<Vec<String>>,
}

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PromptError {
    #[error("invalid input")]
    Invalid(Vec<FieldViolation>),
    #[error("a prompt named {name:?} already exists in folder {folder:?}")]
    AlreadyExists { name: String, folder: String },
    #[error("no such prompt")]
    NotFound,
    #[error("the prompt is archived; restore it first")]
    Archived,
    #[error("the latest version is {actual}, not {expected}")]
    StaleLatest { expected: u64, actual: u64 },
    #[error("label {0:?} is protected: moving it needs the labels:move-protected permission")]
    ProtectedLabel(String),
    #[error("label {0:?} does not exist")]
    NoSuchLabel(String),
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> PromptError {
    PromptError::Invalid(vec![FieldViolation::new(field, message)])
}

pub fn decide(state: &PromptState, command: PromptCommand) -> Result<Vec<PromptEvent>, PromptError> {
    let existing = || match &state.head {
        Some(head) => Ok((head, head.prompt_id.clone())),
        None => Err(PromptError::NotFound),
    };
    match command {
        PromptCommand::Create(create) => decide_create(state, create),
        PromptCommand::AddVersion(add) => {
            let (head, prompt_id) = existing()?;
            if head.archived {
                return Err(PromptError::Archived);
            }
            let latest = state.latest_number();
            if add.expected_latest != 0 && add.expected_latest != latest {
                return Err(PromptError::StaleLatest {
                    expected: add.expected_latest,
                    actual: latest,
                });
            }
            let (input, copied_from) = match add.source {
                VersionSource::New(input) => (input, 0),
                VersionSource::CopyOf {
                    version,
                    commit_message,
                } => {
                    let old = state.version_number(version).ok_or_else(|| {
                        invalid(
                            "copy_from",
                            format!("version {version} does not exist; the latest is {latest}"),
                        )
                    })?;
                    let commit_message = if commit_message.is_empty() {
                        format!("copy of version {version}")
                    } else {
                        commit_message
                    };
                    (
                        VersionInput {
                            template: old.template.clone(),
                            model: old.model.clone(),
                            variables: old.variables.clone(),
                            commit_message,
                        },
                        version,
                    )
                }
            };
            let violations = validate_version(&input, "version");
            if !violations.is_empty() {
                return Err(PromptError::Invalid(violations));
            }
            let mut version = new_version(latest + 1, input, add.by);
            version.copied_from = copied_from;
            Ok(vec![PromptEvent::VersionCreated(VersionCreated {
                prompt_id,
                version: Some(version),
            })])
        }
        PromptCommand::MoveLabel(mv) => {
            let (head, prompt_id) = existing()?;
            if head.archived {
                return Err(PromptError::Archived);
            }
            let mut violations = validate_label(&mv.label, "label");
            violations.extend(validate_reason(&mv.reason));
            if state.version_number(mv.version).is_none() {
                violations.push(FieldViolation::new(
                    "version",
                    format!(
                        "version {} does not exist; the latest is {}",
                        mv.version,
                        state.latest_number()
                    ),
                ));
            }
            if !violations.is_empty() {
                return Err(PromptError::Invalid(violations));
            }
            if mv.protected && !mv.may_move_protected {
                return Err(PromptError::ProtectedLabel(mv.label));
            }
            let previous = state.labels.get(&mv.label).copied().unwrap_or(0);
            if previous == mv.version {
                return Ok(Vec::new());
            }
            Ok(vec![PromptEvent::LabelMoved(LabelMoved {
                prompt_id,
                label: mv.label,
                version: mv.version,
                previous_version: previous,
                reason: mv.reason,
            })])
        }
        PromptCommand::RemoveLabel(rm) => {
            let (head, prompt_id) = existing()?;
            if head.archived {
                return Err(PromptError::Archived);
            }
            let mut violations = validate_label(&rm.label, "label");
            violations.extend(validate_reason(&rm.reason));
            if !violations.is_empty() {
                return Err(PromptError::Invalid(violations));
            }
            let Some(&previous) = state.labels.get(&rm.label) else {
                return Err(PromptError::NoSuchLabel(rm.label));
            };
            if rm.protected && !rm.may_move_protected {
                return Err(PromptError::ProtectedLabel(rm.label));
            }
            Ok(vec![PromptEvent::LabelRemoved(LabelRemoved {
                prompt_id,
                label: rm.label,
                previous_version: previous,
                reason: rm.reason,
            })])
        }
        PromptCommand::Update(update) => {
            let (head, prompt_id) = existing()?;
            let description = update.description.unwrap_or_else(|| head.description.clone());
            let tags = update.tags.unwrap_or_else(|| head.tags.clone());
            let mut violations = validate_description(&description);
            violations.extend(validate_tags(&tags));
            if !violations.is_empty() {
                return Err(PromptError::Invalid(violations));
            }
            if description == head.description && tags == head.tags {
                return Ok(Vec::new());
            }
            Ok(vec![PromptEvent::DetailsChanged(PromptDetailsChanged {
                prompt_id,
                description,
                tags,
            })])
        }
        PromptCommand::Archive { reason } => {
            let (head, prompt_id) = existing()?;
            if let Some(v) = validate_reason(&reason) {
                return Err(PromptError::Invalid(vec![v]));
            }
            if head.archived {
                return Ok(Vec::new());
            }
            Ok(vec![PromptEvent::Archived(PromptArchived { prompt_id, reason })])
        }
        PromptCommand::Restore { reason } => {
            let (head, prompt_id) = existing()?;
            if let Some(v) = validate_reason(&reason) {
                return Err(PromptError::Invalid(vec![v]));
            }
            if !head.archived {
                return Ok(Vec::new());
            }
            Ok(vec![PromptEvent::Restored(PromptRestored { prompt_id, reason })])
        }
    }
}

fn decide_create(state: &PromptState, create: CreatePrompt) -> Result<Vec<PromptEvent>, PromptError> {
    if let Some(head) = &state.head {
        return Err(PromptError::AlreadyExists {
            name: head.name.clone(),
            folder: head.folder.clone(),
        });
    }
    let mut violations = validate_name(&create.name);
    violations.extend(validate_description(&create.description));
    violations.extend(validate_folder(&create.folder));
    violations.extend(validate_tags(&create.tags));
    violations.extend(validate_version(&create.version, "version"));
    if !violations.is_empty() {
        return Err(PromptError::Invalid(violations));
    }
    Ok(vec![PromptEvent::Created(PromptCreated {
        prompt_id: create.prompt_id,
        name: create.name,
        description: create.description,
        folder: normalize_folder(&create.folder),
        tags: create.tags,
        first_version: Some(new_version(1, create.version, create.by)),
        ..Default::default()
    })])
}

fn new_version(number: u64, input: VersionInput, by: Authorship) -> PromptVersion {
    PromptVersion {
        number,
        template: input.template,
        model: input.model,
        variables: input.variables,
        commit_message: input.commit_message,
        author: Some(by.author),
        created_at: Some(by.at),
        copied_from: 0,
    }
}

pub fn evolve(mut state: PromptState, event: &PromptEvent) -> PromptState {
    match event {
        PromptEvent::Created(created) => {
            state.head = Some(PromptHead {
                prompt_id: created.prompt_id.clone(),
                name: created.name.clone(),
                folder: created.folder.clone(),
                description: created.description.clone(),
                tags: created.tags.clone(),
                archived: false,
            });
            #[allow(deprecated, reason = "upcasting events written before versions existed")]
            let first = created.first_version.clone().unwrap_or_else(|| PromptVersion {
                number: 1,
                template: Some(Template {
                    kind: Some(template::Kind::Text(created.template.clone())),
                }),
                ..Default::default()
            });
            state.versions = vec![first];
        }
        PromptEvent::VersionCreated(created) => {
            if let Some(version) = &created.version {
                state.versions.push(version.clone());
            }
        }
        PromptEvent::LabelMoved(moved) => {
            state.labels.insert(moved.label.clone(), moved.version);
        }
        PromptEvent::LabelRemoved(removed) => {
            state.labels.remove(&removed.label);
        }
        PromptEvent::DetailsChanged(changed) => {
            if let Some(head) = &mut state.head {
                head.description = changed.description.clone();
                head.tags = changed.tags.clone();
            }
        }
        PromptEvent::Archived(_) => {
            if let Some(head) = &mut state.head {
                head.archived = true;
            }
        }
        PromptEvent::Restored(_) => {
            if let Some(head) = &mut state.head {
                head.archived = false;
            }
        }
    }
    state.version += 1;
    state
}

// ---- validation -----------------------------------------------------------

pub fn validate_name(name: &str) -> Vec<FieldViolation> {
    let trimmed = name.trim();
    let problem = if trimmed.is_empty() {
        Some("must not be empty".to_owned())
    } else if trimmed.chars().count() > MAX_NAME_CHARS {
        Some(format!("must be at most {MAX_NAME_CHARS} characters"))
    } else if trimmed != name {
        Some("must not start or end with whitespace".to_owned())
    } else if name.chars().any(|c| c.is_control() || c == '/') {
        Some("must not contain '/' or control characters".to_owned())
    } else {
        None
    };
    problem
        .map(|p| FieldViolation::new("name", p))
        .into_iter()
        .collect()
}

pub fn validate_description(description: &str) -> Vec<FieldViolation> {
    if description.chars().count() > MAX_DESCRIPTION_CHARS {
        vec![FieldViolation::new(
            "description",
            format!("must be at most {MAX_DESCRIPTION_CHARS} characters"),
        )]
    } else {
        Vec::new()
    }
}

pub fn validate_folder(folder: &str) -> Vec<FieldViolation> {
    if folder.chars().count() > MAX_FOLDER_CHARS {
        return vec![FieldViolation::new(
            "folder",
            format!("must be at most {MAX_FOLDER_CHARS} characters"),
        )];
    }
    let bad_segment = normalize_folder(folder)
        .split('/')
        .filter(|s| !s.is_empty())
        .any(|segment| {
            segment.trim() != segment
                || segment.chars().any(char::is_control)
                || segment == "."
                || segment == ".."
        });
    if bad_segment {
        return vec![FieldViolation::new(
            "folder",
            "segments must not be '.', '..', padded with whitespace or contain control characters",
        )];
    }
    Vec::new()
}

pub fn validate_tags(tags: &[String]) -> Vec<FieldViolation> {
    let mut violations = Vec::new();
    if tags.len() > MAX_TAGS {
        violations.push(FieldViolation::new("tags", format!("at most {MAX_TAGS} tags")));
    }
    for (i, tag) in tags.iter().enumerate() {
        if tag.is_empty()
            || tag.chars().count() > MAX_TAG_CHARS
            || tag.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            violations.push(FieldViolation::new(
                format!("tags[{i}]"),
                format!("must be 1-{MAX_TAG_CHARS} characters without whitespace"),
            ));
        } else if tags[..i].contains(tag) {
            violations.push(FieldViolation::new(format!("tags[{i}]"), "duplicate tag"));
        }
    }
    violations
}

/// Label names: lowercase letters, digits, `.`, `_`, `-`; not `latest`.
pub fn validate_label(label: &str, field: &str) -> Vec<FieldViolation> {
    let mut chars = label.chars();
    let well_formed = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
        && label.len() <= MAX_LABEL_CHARS;
    if !well_formed {
        vec![FieldViolation::new(
            field,
            format!(
                "must be 1-{MAX_LABEL_CHARS} characters of a-z, 0-9, '.', '_', '-', starting with a letter or digit"
            ),
        )]
    } else if label == LATEST {
        vec![FieldViolation::new(
            field,
            "`latest` is implicit (always the newest version) and cannot be moved",
        )]
    } else {
        Vec::new()
    }
}

fn validate_reason(reason: &str) -> Option<FieldViolation> {
    (reason.chars().count() > MAX_REASON_CHARS)
        .then(|| FieldViolation::new("reason", format!("must be at most {MAX_REASON_CHARS} characters")))
}

fn valid_model_id(model: &str) -> bool {
    model.split_once('/').is_some_and(|(provider, name)| {
        !provider.is_empty()
            && !name.is_empty()
            && provider
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
            && !model.chars().any(|c| c.is_whitespace() || c.is_control())
            && model.len() <= 200
    })
}

/// The template's parts as (field path, text); the paths start with
/// `prefix.` (no prefix when it is empty).
pub(crate) fn template_texts<'a>(template: &'a Template, prefix: &str) -> Vec<(String, &'a str)> {
    let at = |field: String| {
        if prefix.is_empty() {
            field
        } else {
            format!("{prefix}.{field}")
        }
    };
    match &template.kind {
        Some(template::Kind::Text(text)) => vec![(at("template".to_owned()), text.as_str())],
        Some(template::Kind::Chat(chat)) => chat
            .messages
            .iter()
            .enumerate()
            .map(|(i, m)| (at(format!("messages[{i}].content")), m.content.as_str()))
            .collect(),
        None => Vec::new(),
    }
}

/// Every problem with a version's content, each naming its field under `prefix`.
pub fn validate_version(input: &VersionInput, prefix: &str) -> Vec<FieldViolation> {
    let mut violations = Vec::new();
    let at = |field: &str| format!("{prefix}.{field}");
    let template = input.template.as_ref().and_then(|t| t.kind.as_ref().map(|_| t));
    let Some(template) = template else {
        violations.push(FieldViolation::new(
            at("template"),
            "a template is required: text or chat messages",
        ));
        return violations;
    };
    if let Some(template::Kind::Chat(chat)) = &template.kind {
        if chat.messages.is_empty() {
            violations.push(FieldViolation::new(at("messages"), "at least one message"));
        }
        if chat.messages.len() > MAX_MESSAGES {
            violations.push(FieldViolation::new(
                at("messages"),
                format!("at most {MAX_MESSAGES} messages"),
            ));
        }
        for (i, message) in chat.messages.iter().enumerate() {
            if ChatRole::try_from(message.role).unwrap_or(ChatRole::Unspecified) == ChatRole::Unspecified {
                violations.push(FieldViolation::new(
                    at(&format!("messages[{i}].role")),
                    "must be system, user or assistant",
                ));
            }
        }
    }
    let texts = template_texts(template, prefix);
    let total: usize = texts.iter().map(|(_, t)| t.len()).sum();
    if total > MAX_TEMPLATE_BYTES {
        violations.push(FieldViolation::new(
            at("template"),
            format!("is {total} bytes; the limit is {MAX_TEMPLATE_BYTES} bytes"),
        ));
        return violations;
    }
    if let Some(template::Kind::Text(text)) = &template.kind
        && text.is_empty()
    {
        violations.push(FieldViolation::new(at("template"), "must not be empty"));
    }
    let declared: Vec<Declared> = input
        .variables
        .iter()
        .map(|v| Declared {
            name: v.name.clone(),
            default: v.default_value.clone(),
        })
        .collect();
    violations.extend(validate_variables(&input.variables, prefix));
    let declared_names: BTreeSet<&str> = declared.iter().map(|d| d.name.as_str()).collect();
    let mut used = BTreeSet::new();
    let mut all_parsed = true;
    for (field, text) in &texts {
        match tpl::parse(text) {
            Ok(parsed) => {
                used.extend(parsed.variables().into_iter().map(str::to_owned));
                if !declared.is_empty() {
                    violations.extend(
                        tpl::check_undeclared(&parsed, &declared_names)
                            .into_iter()
                            .map(|p| {
                                FieldViolation::new(field.clone(), format!("{}: {}", p.position, p.message))
                            }),
                    );
                }
            }
            Err(problems) => {
                all_parsed = false;
                violations.extend(
                    problems.into_iter().map(|p| {
                        FieldViolation::new(field.clone(), format!("{}: {}", p.position, p.message))
                    }),
                );
            }
        }
    }
    // Which variables are used is only known when every part parsed.
    for (i, variable) in input.variables.iter().enumerate() {
        if all_parsed && !used.contains(&variable.name) {
            violations.push(FieldViolation::new(
                at(&format!("variables[{i}]")),
                format!("variable {:?} is declared but not used", variable.name),
            ));
        }
    }
    if let Some(model) = &input.model {
        violations.extend(validate_model(model, &at("model")));
    }
    if input.commit_message.chars().count() > MAX_COMMIT_MESSAGE_CHARS {
        violations.push(FieldViolation::new(
            at("commit_message"),
            format!("must be at most {MAX_COMMIT_MESSAGE_CHARS} characters"),
        ));
    }
    violations
}

fn validate_variables(variables: &[Variable], prefix: &str) -> Vec<FieldViolation> {
    let mut violations = Vec::new();
    if variables.len() > MAX_VARIABLES {
        violations.push(FieldViolation::new(
            format!("{prefix}.variables"),
            format!("at most {MAX_VARIABLES} variables"),
        ));
    }
    for (i, variable) in variables.iter().enumerate() {
        let field = format!("{prefix}.variables[{i}].name");
        if !tpl::is_valid_name(&variable.name) {
            violations.push(FieldViolation::new(
                field,
                format!(
                    "{:?} is not a variable name: letters, digits and _ (not first), at most {}",
                    variable.name,
                    tpl::MAX_NAME_CHARS
                ),
            ));
        } else if variables[..i].iter().any(|v| v.name == variable.name) {
            violations.push(FieldViolation::new(field, "declared twice"));
        }
    }
    violations
}

fn validate_model(model: &ModelConfig, prefix: &str) -> Vec<FieldViolation> {
    let mut violations = Vec::new();
    let mut check = |ok: bool, field: &str, message: &str| {
        if !ok {
            violations.push(FieldViolation::new(format!("{prefix}.{field}"), message));
        }
    };
    check(
        model.model.is_empty() || valid_model_id(&model.model),
        "model",
        "must be <provider>/<model>, e.g. openai/gpt-4o or mock/echo",
    );
    let in_range =
        |v: Option<f64>, lo: f64, hi: f64| v.is_none_or(|v| v.is_finite() && (lo..=hi).contains(&v));
    check(
        in_range(model.temperature, 0.0, 2.0),
        "temperature",
        "must be between 0 and 2",
    );
    check(
        in_range(model.top_p, 0.0, 1.0),
        "top_p",
        "must be between 0 and 1",
    );
    check(
        in_range(model.presence_penalty, -2.0, 2.0),
        "presence_penalty",
        "must be between -2 and 2",
    );
    check(
        in_range(model.frequency_penalty, -2.0, 2.0),
        "frequency_penalty",
        "must be between -2 and 2",
    );
    check(
        model.max_tokens.is_none_or(|m| (1..=1_000_000).contains(&m)),
        "max_tokens",
        "must be between 1 and 1000000",
    );
    check(
        model.stop.len() <= MAX_STOP_SEQUENCES && model.stop.iter().all(|s| !s.is_empty() && s.len() <= 100),
        "stop",
        "at most 4 non-empty sequences of at most 100 bytes",
    );
    check(
        model.fallback_models.len() <= MAX_FALLBACK_MODELS
            && model.fallback_models.iter().all(|m| valid_model_id(m)),
        "fallback_models",
        "at most 5 model ids of the form <provider>/<model>",
    );
    violations
}

/// `/a//b/` → `a/b`: folders are stored without empty segments.
pub fn normalize_folder(folder: &str) -> String {
    folder
        .split('/')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("/")
}

/// A version's content as a [`VersionInput`], e.g. to compare with new input.
pub fn content_of(version: &PromptVersion) -> VersionInput {
    VersionInput {
        template: version.template.clone(),
        model: version.model.clone(),
        variables: version.variables.clone(),
        commit_message: String::new(),
    }
}

/// Whether `input` would save the same content as `version` (commit message aside).
pub fn same_content(version: &PromptVersion, input: &VersionInput) -> bool {
    let normalized_model = |m: &Option<ModelConfig>| m.clone().unwrap_or_default();
    version.template == input.template
        && normalized_model(&version.model) == normalized_model(&input.model)
        && version.variables == input.variables
}

#[cfg(test)]
mod tests {
    use promptops_proto::prompts::v1::{ChatMessage, ChatTemplate};

    use super::*;

    fn text(t: &str) -> VersionInput {
        VersionInput {
            template: Some(Template {
                kind: Some(template::Kind::Text(t.into())),
            }),
            ..Default::default()
        }
    }

    fn create() -> CreatePrompt {
        CreatePrompt {
            prompt_id: "p1".into(),
            name: "greeting".into(),
            description: "says hello".into(),
            folder: "/support//emails/".into(),
            tags: vec!["email".into(), "v1".into()],
            version: text("Hello {{name}}"),
            by: Authorship::default(),
        }
    }

    fn add(t: &str) -> PromptCommand {
        PromptCommand::AddVersion(AddVersion {
            source: VersionSource::New(text(t)),
            expected_latest: 0,
            by: Authorship::default(),
        })
    }

    fn move_label(label: &str, version: u64) -> MoveLabel {
        MoveLabel {
            label: label.into(),
            version,
            reason: "ship it".into(),
            protected: false,
            may_move_protected: false,
        }
    }

    /// Given these events, when this command, then these events or this error.
    fn given_when(given: &[PromptEvent], when: PromptCommand) -> Result<Vec<PromptEvent>, PromptError> {
        let state = given.iter().fold(PromptState::default(), evolve);
        decide(&state, when)
    }

    fn then_state(given: &[PromptEvent]) -> PromptState {
        given.iter().fold(PromptState::default(), evolve)
    }

    /// A prompt with versions 1..=n.
    fn with_versions(n: u64) -> Vec<PromptEvent> {
        let mut events = given_when(&[], PromptCommand::Create(create())).unwrap();
        for i in 2..=n {
            events.extend(given_when(&events, add(&format!("v{i} {{{{name}}}}"))).unwrap());
        }
        events
    }

    #[test]
    fn creating_a_new_prompt_emits_created_with_version_one_and_a_normalized_folder() {
        let events = given_when(&[], PromptCommand::Create(create())).unwrap();
        let [PromptEvent::Created(created)] = events.as_slice() else {
            panic!("one Created event expected, got {events:?}");
        };
        assert_eq!(created.folder, "support/emails");
        assert_eq!(created.first_version.as_ref().unwrap().number, 1);
        let state = then_state(&events);
        assert_eq!(state.latest_number(), 1);
        assert_eq!(state.head.unwrap().tags, ["email", "v1"]);
    }

    #[test]
    fn creating_twice_is_refused_naming_the_prompt() {
        let given = with_versions(1);
        let err = given_when(&given, PromptCommand::Create(create())).unwrap_err();
        assert_eq!(
            err,
            PromptError::AlreadyExists {
                name: "greeting".into(),
                folder: "support/emails".into()
            }
        );
    }

    #[test]
    fn versions_are_numbered_in_order_and_immutable() {
        let events = with_versions(3);
        let state = then_state(&events);
        assert_eq!(state.latest_number(), 3);
        assert_eq!(
            state.versions.iter().map(|v| v.number).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!(state.label("latest").unwrap().number, 3);
    }

    #[test]
    fn a_version_on_a_missing_prompt_is_not_found() {
        assert_eq!(given_when(&[], add("x")).unwrap_err(), PromptError::NotFound);
    }

    #[test]
    fn expected_latest_guards_against_lost_updates() {
        let given = with_versions(2);
        let cmd = PromptCommand::AddVersion(AddVersion {
            source: VersionSource::New(text("late")),
            expected_latest: 1,
            by: Authorship::default(),
        });
        assert_eq!(
            given_when(&given, cmd).unwrap_err(),
            PromptError::StaleLatest {
                expected: 1,
                actual: 2
            }
        );
    }

    #[test]
    fn rollback_by_copy_creates_a_new_version_with_the_old_content() {
        let given = with_versions(3);
        let cmd = PromptCommand::AddVersion(AddVersion {
            source: VersionSource::CopyOf {
                version: 1,
                commit_message: String::new(),
            },
            expected_latest: 0,
            by: Authorship::default(),
        });
        let events = given_when(&given, cmd).unwrap();
        let [PromptEvent::VersionCreated(created)] = events.as_slice() else {
            panic!("{events:?}");
        };
        let version = created.version.as_ref().unwrap();
        assert_eq!((version.number, version.copied_from), (4, 1));
        assert_eq!(version.commit_message, "copy of version 1");
        assert_eq!(version.template, then_state(&given).versions[0].template);
    }

    #[test]
    fn labels_move_forward_and_back_each_move_an_event() {
        let mut events = with_versions(3);
        events.extend(given_when(&events, PromptCommand::MoveLabel(move_label("production", 3))).unwrap());
        events.extend(given_when(&events, PromptCommand::MoveLabel(move_label("production", 2))).unwrap());
        let Some(PromptEvent::LabelMoved(last)) = events.last() else {
            panic!("{events:?}");
        };
        assert_eq!((last.version, last.previous_version), (2, 3));
        assert_eq!(then_state(&events).label("production").unwrap().number, 2);
        // Moving to where it already is changes nothing.
        assert!(
            given_when(&events, PromptCommand::MoveLabel(move_label("production", 2)))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_label_on_a_missing_version_names_the_field() {
        let given = with_versions(2);
        let Err(PromptError::Invalid(v)) =
            given_when(&given, PromptCommand::MoveLabel(move_label("staging", 9)))
        else {
            panic!("expected Invalid");
        };
        assert_eq!(v[0].field, "version");
        assert!(v[0].description.contains("latest is 2"), "{}", v[0].description);
    }

    #[test]
    fn label_names_are_checked_and_latest_is_reserved() {
        let given = with_versions(1);
        for bad in ["Prod", "", "latest", "has space", &"x".repeat(64)] {
            let result = given_when(&given, PromptCommand::MoveLabel(move_label(bad, 1)));
            assert!(matches!(result, Err(PromptError::Invalid(_))), "{bad:?}");
        }
    }

    #[test]
    fn protected_labels_need_the_permission() {
        let given = with_versions(1);
        let mut mv = move_label("production", 1);
        mv.protected = true;
        assert_eq!(
            given_when(&given, PromptCommand::MoveLabel(mv.clone())).unwrap_err(),
            PromptError::ProtectedLabel("production".into())
        );
        mv.may_move_protected = true;
        assert_eq!(given_when(&given, PromptCommand::MoveLabel(mv)).unwrap().len(), 1);
    }

    #[test]
    fn removing_a_label_that_is_not_there_is_an_error() {
        let given = with_versions(1);
        let rm = RemoveLabel {
            label: "staging".into(),
            reason: String::new(),
            protected: false,
            may_move_protected: false,
        };
        assert_eq!(
            given_when(&given, PromptCommand::RemoveLabel(rm)).unwrap_err(),
            PromptError::NoSuchLabel("staging".into())
        );
    }

    #[test]
    fn archived_prompts_refuse_changes_until_restored() {
        let mut events = with_versions(1);
        events.extend(
            given_when(
                &events,
                PromptCommand::Archive {
                    reason: "retired".into(),
                },
            )
            .unwrap(),
        );
        assert!(then_state(&events).head.unwrap().archived);
        assert_eq!(given_when(&events, add("x")).unwrap_err(), PromptError::Archived);
        // Archiving again is a no-op.
        assert!(
            given_when(
                &events,
                PromptCommand::Archive {
                    reason: String::new()
                }
            )
            .unwrap()
            .is_empty()
        );
        events.extend(
            given_when(
                &events,
                PromptCommand::Restore {
                    reason: "back".into(),
                },
            )
            .unwrap(),
        );
        assert_eq!(given_when(&events, add("x {{name}}")).unwrap().len(), 1);
    }

    #[test]
    fn updating_details_changes_only_what_differs() {
        let given = with_versions(1);
        let same = PromptCommand::Update(UpdatePrompt {
            description: Some("says hello".into()),
            tags: None,
        });
        assert!(given_when(&given, same).unwrap().is_empty());
        let changed = PromptCommand::Update(UpdatePrompt {
            description: None,
            tags: Some(vec!["new".into()]),
        });
        let events = given_when(&given, changed).unwrap();
        let [PromptEvent::DetailsChanged(c)] = events.as_slice() else {
            panic!("{events:?}")
        };
        assert_eq!(
            (c.description.as_str(), c.tags.as_slice()),
            ("says hello", &["new".to_owned()][..])
        );
    }

    #[test]
    fn every_invalid_field_is_reported_at_once() {
        let bad = CreatePrompt {
            prompt_id: "p1".into(),
            name: " ".into(),
            description: "x".repeat(MAX_DESCRIPTION_CHARS + 1),
            folder: "a/../b".into(),
            tags: vec!["ok".into(), "has space".into(), "ok".into()],
            version: text(""),
            by: Authorship::default(),
        };
        let Err(PromptError::Invalid(violations)) = given_when(&[], PromptCommand::Create(bad)) else {
            panic!("expected Invalid");
        };
        let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "name",
                "description",
                "folder",
                "tags[1]",
                "tags[2]",
                "version.template"
            ]
        );
    }

    #[test]
    fn templates_are_parsed_on_save_with_positions() {
        let mut c = create();
        c.version = text("Hi {{ name }}\nand {{ oops");
        let Err(PromptError::Invalid(violations)) = given_when(&[], PromptCommand::Create(c)) else {
            panic!("expected Invalid");
        };
        assert_eq!(violations.len(), 1);
        assert_eq!(violations[0].field, "version.template");
        assert!(
            violations[0].description.starts_with("2:5: unclosed"),
            "{}",
            violations[0].description
        );
    }

    #[test]
    fn chat_templates_check_roles_and_declared_variables_per_message() {
        let input = VersionInput {
            template: Some(Template {
                kind: Some(template::Kind::Chat(ChatTemplate {
                    messages: vec![
                        ChatMessage {
                            role: ChatRole::System as i32,
                            content: "You help {{ customer }}.".into(),
                        },
                        ChatMessage {
                            role: 0,
                            content: "Q: {{question}} {{ extra }}".into(),
                        },
                    ],
                })),
            }),
            variables: vec![
                Variable {
                    name: "customer".into(),
                    ..Default::default()
                },
                Variable {
                    name: "question".into(),
                    ..Default::default()
                },
                Variable {
                    name: "unused".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let v = validate_version(&input, "version");
        let got: Vec<(&str, &str)> = v
            .iter()
            .map(|v| (v.field.as_str(), v.description.as_str()))
            .collect();
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[0].0, "version.messages[1].role");
        assert_eq!(got[1].0, "version.messages[1].content");
        assert!(got[1].1.starts_with("1:17: variable \"extra\""), "{}", got[1].1);
        assert_eq!(got[2].0, "version.variables[2]");
    }

    #[test]
    fn templates_over_the_size_limit_are_refused_with_the_limit() {
        let v = validate_version(&text(&"a".repeat(MAX_TEMPLATE_BYTES + 1)), "version");
        assert_eq!(v.len(), 1);
        assert!(v[0].description.contains("262144"), "{}", v[0].description);
        assert!(validate_version(&text(&"a".repeat(MAX_TEMPLATE_BYTES)), "version").is_empty());
    }

    #[test]
    fn model_configuration_is_range_checked() {
        let mut input = text("x");
        input.model = Some(ModelConfig {
            model: "gpt4".into(),
            temperature: Some(3.0),
            top_p: Some(f64::NAN),
            max_tokens: Some(0),
            stop: vec![String::new()],
            fallback_models: vec!["openai/gpt-4o-mini".into()],
            ..Default::default()
        });
        let fields: Vec<String> = validate_version(&input, "v")
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(
            fields,
            [
                "v.model.model",
                "v.model.temperature",
                "v.model.top_p",
                "v.model.max_tokens",
                "v.model.stop"
            ]
        );
    }

    #[test]
    fn prompt_ids_follow_org_folder_and_name() {
        let a = prompt_id_for("org1", "/support/", "greeting");
        assert_eq!(a, prompt_id_for("org1", "support", "greeting"));
        assert_ne!(a, prompt_id_for("org2", "support", "greeting"));
        assert_ne!(a, prompt_id_for("org1", "", "support/greeting"));
        assert!(uuid::Uuid::parse_str(&a).is_ok());
    }

    #[test]
    fn names_are_bounded_and_clean() {
        for (name, ok) in [
            ("a", true),
            ("Support reply — ünïcode", true),
            (&"n".repeat(MAX_NAME_CHARS), true),
            (&"n".repeat(MAX_NAME_CHARS + 1), false),
            ("a/b", false),
            ("tab\there", false),
            (" padded", false),
        ] {
            assert_eq!(validate_name(name).is_empty(), ok, "{name:?}");
        }
    }
}
