//! Prompts as documents: the JSON / YAML form of import, export and the
//! files `promptops prompts push` / `pull` sync, and the pure planning of an
//! import (validate everything, then say which commands to run).
//!
//! ```yaml
//! format: promptops.prompts/v1
//! prompts:
//!   - name: greeting
//!     folder: support/emails
//!     description: First reply to a customer
//!     tags: [email]
//!     labels: {production: 2}
//!     versions:
//!       - version: 1
//!         template: "Hello {{ name }}"
//!       - version: 2
//!         messages:
//!           - {role: system, content: "You are kind."}
//!           - {role: user, content: "Greet {{ name }}"}
//!         model: {model: openai/gpt-4o-mini, temperature: 0.2}
//!         variables: [{name: name, default: there}]
//!         message: chat form
//! ```
//!
//! Import rules: a numbered version that exists must have the same content
//! (versions are immutable); a numbered version that does not exist must be
//! the next number; an unnumbered version is appended when its content
//! differs from the latest. Labels listed are moved; others are left alone.
//! `archived: true` archives. Authors and times are not exported: an import
//! records its own caller and time.

use std::collections::{BTreeMap, HashMap};

use promptops_platform::errors::FieldViolation;
use promptops_proto::prompts::v1::{
    ChatMessage, ChatRole, ChatTemplate, DocumentFormat, ImportAction, ModelConfig, PromptVersion, Template,
    Variable, VersionInput, template,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::{
    self, AddVersion, Authorship, CreatePrompt, MoveLabel, PromptCommand, PromptState, UpdatePrompt,
    VersionSource,
};

/// The `format` every document carries.
pub const FORMAT: &str = "promptops.prompts/v1";
/// The largest document accepted, in bytes.
pub const MAX_DOCUMENT_BYTES: usize = 16 * 1024 * 1024;

fn is_false(b: &bool) -> bool {
    !*b
}

/// A set of prompts with their versions and labels.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Document {
    pub format: String,
    #[serde(default)]
    pub prompts: Vec<PromptDoc>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PromptDoc {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub folder: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// `true` archives the prompt; absent leaves it as it is.
    #[serde(default, skip_serializing_if = "is_false")]
    pub archived: bool,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, u64>,
    #[serde(default)]
    pub versions: Vec<VersionDoc>,
}

/// One version's content: `template` (text) or `messages` (chat).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VersionDoc {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<MessageDoc>>,
    #[serde(default, skip_serializing_if = "ModelDoc::is_empty")]
    pub model: ModelDoc,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variables: Vec<VariableDoc>,
    /// The commit message.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageDoc {
    /// `system`, `user` or `assistant`.
    pub role: String,
    pub content: String,
}

/// The model configuration; every field optional.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelDoc {
    /// `<provider>/<model>`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallback_models: Vec<String>,
}

impl ModelDoc {
    pub fn is_empty(&self) -> bool {
        *self == ModelDoc::default()
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VariableDoc {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// One prompt as a file for `promptops prompts push` / `pull`: its current
/// content, flat. The folder is the file's directory under the synced one.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PromptFile {
    /// Defaults to the file name without its extension.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<MessageDoc>>,
    #[serde(default, skip_serializing_if = "ModelDoc::is_empty")]
    pub model: ModelDoc,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variables: Vec<VariableDoc>,
    /// The commit message of the version a push creates.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

impl PromptFile {
    /// The file as a document entry whose one version is unnumbered: pushed,
    /// it creates a version only when the content differs from the latest.
    pub fn into_doc(self, folder: &str, default_name: &str) -> PromptDoc {
        PromptDoc {
            name: if self.name.is_empty() {
                default_name.to_owned()
            } else {
                self.name
            },
            folder: folder.to_owned(),
            description: self.description,
            tags: self.tags,
            archived: false,
            labels: BTreeMap::new(),
            versions: vec![VersionDoc {
                version: None,
                template: self.template,
                messages: self.messages,
                model: self.model,
                variables: self.variables,
                message: self.message,
            }],
        }
    }

    /// A prompt's latest version as a file (the commit message left out).
    pub fn from_doc(doc: &PromptDoc) -> PromptFile {
        let latest = doc.versions.last().cloned().unwrap_or_default();
        PromptFile {
            name: doc.name.clone(),
            description: doc.description.clone(),
            tags: doc.tags.clone(),
            template: latest.template,
            messages: latest.messages,
            model: latest.model,
            variables: latest.variables,
            message: String::new(),
        }
    }
}

/// A file name for a prompt name: `[A-Za-z0-9._-]` kept, the rest `-`.
pub fn file_stem(name: &str) -> String {
    let stem: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let stem = stem.trim_start_matches('.');
    if stem.is_empty() {
        "prompt".to_owned()
    } else {
        stem.to_owned()
    }
}

// ---- conversions ----------------------------------------------------------

pub fn role_name(role: i32) -> &'static str {
    match ChatRole::try_from(role).unwrap_or(ChatRole::Unspecified) {
        ChatRole::System => "system",
        ChatRole::User => "user",
        ChatRole::Assistant => "assistant",
        ChatRole::Unspecified => "unspecified",
    }
}

pub fn role_from_name(name: &str) -> Option<ChatRole> {
    match name {
        "system" => Some(ChatRole::System),
        "user" => Some(ChatRole::User),
        "assistant" => Some(ChatRole::Assistant),
        _ => None,
    }
}

impl From<&ModelConfig> for ModelDoc {
    fn from(m: &ModelConfig) -> Self {
        ModelDoc {
            model: m.model.clone(),
            temperature: m.temperature,
            top_p: m.top_p,
            max_tokens: m.max_tokens,
            stop: m.stop.clone(),
            presence_penalty: m.presence_penalty,
            frequency_penalty: m.frequency_penalty,
            fallback_models: m.fallback_models.clone(),
        }
    }
}

impl From<&ModelDoc> for ModelConfig {
    fn from(m: &ModelDoc) -> Self {
        ModelConfig {
            model: m.model.clone(),
            temperature: m.temperature,
            top_p: m.top_p,
            max_tokens: m.max_tokens,
            stop: m.stop.clone(),
            presence_penalty: m.presence_penalty,
            frequency_penalty: m.frequency_penalty,
            fallback_models: m.fallback_models.clone(),
        }
    }
}

/// A version's content as a document (numbered when `number` is given).
pub fn version_doc(version: &PromptVersion, numbered: bool) -> VersionDoc {
    let mut doc = content_doc(&domain::content_of(version));
    doc.version = numbered.then_some(version.number);
    doc.message = version.commit_message.clone();
    doc
}

/// A [`VersionInput`] as a document, without a number.
pub fn content_doc(input: &VersionInput) -> VersionDoc {
    let (template, messages) = match input.template.as_ref().and_then(|t| t.kind.as_ref()) {
        Some(template::Kind::Text(text)) => (Some(text.clone()), None),
        Some(template::Kind::Chat(chat)) => (
            None,
            Some(
                chat.messages
                    .iter()
                    .map(|m| MessageDoc {
                        role: role_name(m.role).to_owned(),
                        content: m.content.clone(),
                    })
                    .collect(),
            ),
        ),
        None => (None, None),
    };
    VersionDoc {
        version: None,
        template,
        messages,
        model: input.model.as_ref().map(ModelDoc::from).unwrap_or_default(),
        variables: input
            .variables
            .iter()
            .map(|v| VariableDoc {
                name: v.name.clone(),
                default: v.default_value.clone(),
                description: v.description.clone(),
            })
            .collect(),
        message: input.commit_message.clone(),
    }
}

/// A document version as API input; problems name fields under `prefix`.
pub fn version_input(doc: &VersionDoc, prefix: &str) -> Result<VersionInput, Vec<FieldViolation>> {
    let mut violations = Vec::new();
    let kind = match (&doc.template, &doc.messages) {
        (Some(text), None) => Some(template::Kind::Text(text.clone())),
        (None, Some(messages)) => {
            let mut converted = Vec::with_capacity(messages.len());
            for (i, m) in messages.iter().enumerate() {
                let role = role_from_name(&m.role).unwrap_or_else(|| {
                    violations.push(FieldViolation::new(
                        format!("{prefix}.messages[{i}].role"),
                        format!("{:?} is not system, user or assistant", m.role),
                    ));
                    ChatRole::Unspecified
                });
                converted.push(ChatMessage {
                    role: role as i32,
                    content: m.content.clone(),
                });
            }
            Some(template::Kind::Chat(ChatTemplate { messages: converted }))
        }
        (Some(_), Some(_)) => {
            violations.push(FieldViolation::new(
                format!("{prefix}.template"),
                "give either template (text) or messages (chat), not both",
            ));
            None
        }
        (None, None) => {
            violations.push(FieldViolation::new(
                format!("{prefix}.template"),
                "a template is required: template (text) or messages (chat)",
            ));
            None
        }
    };
    if !violations.is_empty() {
        return Err(violations);
    }
    Ok(VersionInput {
        template: Some(Template { kind }),
        model: (!doc.model.is_empty()).then(|| ModelConfig::from(&doc.model)),
        variables: doc
            .variables
            .iter()
            .map(|v| Variable {
                name: v.name.clone(),
                default_value: v.default.clone(),
                description: v.description.clone(),
            })
            .collect(),
        commit_message: doc.message.clone(),
    })
}

/// A prompt's export: its details, labels and versions (all, numbered; or
/// only the latest, unnumbered and without labels).
pub fn prompt_doc(state: &PromptState, latest_only: bool) -> Option<PromptDoc> {
    let head = state.head.as_ref()?;
    let versions = if latest_only {
        state
            .latest()
            .map(|v| version_doc(v, false))
            .into_iter()
            .collect()
    } else {
        state.versions.iter().map(|v| version_doc(v, true)).collect()
    };
    Some(PromptDoc {
        name: head.name.clone(),
        folder: head.folder.clone(),
        description: head.description.clone(),
        tags: head.tags.clone(),
        archived: head.archived && !latest_only,
        labels: if latest_only {
            BTreeMap::new()
        } else {
            state.labels.clone()
        },
        versions,
    })
}

// ---- text formats ---------------------------------------------------------

/// JSON or YAML; unspecified means JSON.
pub fn is_yaml(format: DocumentFormat) -> bool {
    format == DocumentFormat::Yaml
}

/// Parses a document; a syntax error names its line and column.
pub fn parse_document<T: serde::de::DeserializeOwned>(
    text: &str,
    format: DocumentFormat,
) -> Result<T, FieldViolation> {
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(FieldViolation::new(
            "document",
            format!("is larger than {MAX_DOCUMENT_BYTES} bytes"),
        ));
    }
    if is_yaml(format) {
        // Aliases re-read what an anchor holds: a small document can expand
        // to gigabytes. A first pass builds nothing and counts what the
        // document expands to; only a document within budget is decoded.
        // (A syntax error stops the count early; the decoding below reports it
        // with its position, having expanded no more than the count did.)
        let budget = yaml_expansion_budget(text.len());
        if expanded_size(text) > budget {
            return Err(FieldViolation::new(
                "document",
                format!(
                    "expands to more than {budget} bytes (YAML anchors and aliases repeat content); \
                     write the repeated parts out"
                ),
            ));
        }
        serde_yaml_ng::from_str(text).map_err(|e| yaml_violation(&e))
    } else {
        serde_json::from_str(text).map_err(|e| {
            let message = e.to_string();
            let message = message.split(" at line ").next().unwrap_or(&message).to_owned();
            FieldViolation::new(
                "document",
                format!("line {} column {}: {message}", e.line(), e.column()),
            )
        })
    }
}

/// How much a YAML document of `len` bytes may expand to (scalar bytes plus
/// 16 per node): twice its size and 64 KiB, room for an alias or two.
pub fn yaml_expansion_budget(len: usize) -> usize {
    len.saturating_mul(2).saturating_add(64 * 1024)
}

fn yaml_violation(e: &serde_yaml_ng::Error) -> FieldViolation {
    let at = e
        .location()
        .map(|l| format!("line {} column {}: ", l.line(), l.column()))
        .unwrap_or_default();
    let message = e.to_string();
    // The message ends with its own " at line … column …"; keep one.
    let message = message.split(" at line ").next().unwrap_or(&message).to_owned();
    FieldViolation::new("document", format!("{at}{message}"))
}

/// What a YAML document expands to (scalar bytes + 16 per node), counted
/// without building any of it. Counting stops past the budget of its size
/// (then the result is over it) or at a syntax error (then it is what was
/// counted up to there).
fn expanded_size(text: &str) -> usize {
    use serde::de::DeserializeSeed as _;
    let counter = ExpansionCounter {
        spent: std::cell::Cell::new(0),
        budget: yaml_expansion_budget(text.len()),
    };
    let _counted_to_the_end = counter
        .seed()
        .deserialize(serde_yaml_ng::Deserializer::from_str(text))
        .is_ok();
    counter.spent.get()
}

struct ExpansionCounter {
    spent: std::cell::Cell<usize>,
    budget: usize,
}

impl ExpansionCounter {
    fn seed(&self) -> CountNode<'_> {
        CountNode(self)
    }

    fn spend<E: serde::de::Error>(&self, bytes: usize) -> Result<(), E> {
        let spent = self.spent.get().saturating_add(bytes).saturating_add(16);
        self.spent.set(spent);
        if spent > self.budget {
            Err(E::custom("the document expands past its budget"))
        } else {
            Ok(())
        }
    }
}

/// One node of the document, counted and dropped.
#[derive(Clone, Copy)]
struct CountNode<'a>(&'a ExpansionCounter);

impl<'de> serde::de::DeserializeSeed<'de> for CountNode<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for CountNode<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<(), E> {
        self.0.spend(0)
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<(), E> {
        self.0.spend(0)
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<(), E> {
        self.0.spend(0)
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<(), E> {
        self.0.spend(0)
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        self.0.spend(v.len())
    }
    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<(), E> {
        self.0.spend(v.len())
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.0.spend(0)
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<(), E> {
        self.0.spend(0)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.0.spend(0)?;
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.0.spend(0)?;
        while map.next_key_seed(self)?.is_some() {
            map.next_value_seed(self)?;
        }
        Ok(())
    }
    fn visit_enum<A: serde::de::EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        use serde::de::VariantAccess as _;
        let ((), variant) = data.variant_seed(self)?;
        variant.newtype_variant_seed(self)
    }
}

/// Writes a document as pretty JSON or YAML.
pub fn format_document<T: Serialize>(value: &T, format: DocumentFormat) -> Result<String, String> {
    if is_yaml(format) {
        serde_yaml_ng::to_string(value).map_err(|e| e.to_string())
    } else {
        serde_json::to_string_pretty(value)
            .map(|mut s| {
                s.push('\n');
                s
            })
            .map_err(|e| e.to_string())
    }
}

// ---- import planning ------------------------------------------------------

/// The commands for one prompt of a document.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedPrompt {
    pub prompt_id: String,
    pub commands: Vec<PromptCommand>,
    pub actions: Vec<ImportAction>,
}

/// What an import may do with labels.
#[derive(Debug, Clone)]
pub struct LabelRights {
    pub protected_labels: Vec<String>,
    pub may_move_protected: bool,
}

/// Validates the whole document against the registry's current states
/// (`existing`, by prompt id) and plans the commands; every problem is
/// reported with its path, and nothing is planned if there is any.
pub fn plan_import(
    org_id: &str,
    document: &Document,
    existing: &HashMap<String, PromptState>,
    rights: &LabelRights,
    by: &Authorship,
) -> Result<Vec<PlannedPrompt>, Vec<FieldViolation>> {
    let mut problems = Vec::new();
    if document.format != FORMAT {
        problems.push(FieldViolation::new("format", format!("must be {FORMAT:?}")));
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut plans = Vec::new();
    for (i, doc) in document.prompts.iter().enumerate() {
        let at = format!("prompts[{i}]");
        let prompt_id = domain::prompt_id_for(org_id, &doc.folder, &doc.name);
        if let Some(first) = seen.insert(prompt_id.clone(), i) {
            problems.push(FieldViolation::new(
                format!("{at}.name"),
                format!("prompts[{first}] has the same folder and name"),
            ));
            continue;
        }
        match plan_prompt(doc, &at, prompt_id, existing, rights, by) {
            Ok(plan) => plans.push(plan),
            Err(mut found) => problems.append(&mut found),
        }
    }
    if problems.is_empty() {
        Ok(plans)
    } else {
        Err(problems)
    }
}

fn prefixed(at: &str, violations: Vec<FieldViolation>) -> impl Iterator<Item = FieldViolation> + '_ {
    violations
        .into_iter()
        .map(move |v| FieldViolation::new(format!("{at}.{}", v.field), v.description))
}

fn action(kind: &str, doc: &PromptDoc, prompt_id: &str, detail: String) -> ImportAction {
    ImportAction {
        action: kind.to_owned(),
        folder: domain::normalize_folder(&doc.folder),
        name: doc.name.clone(),
        prompt_id: prompt_id.to_owned(),
        detail,
    }
}

fn plan_prompt(
    doc: &PromptDoc,
    at: &str,
    prompt_id: String,
    existing: &HashMap<String, PromptState>,
    rights: &LabelRights,
    by: &Authorship,
) -> Result<PlannedPrompt, Vec<FieldViolation>> {
    let mut problems = Vec::new();
    problems.extend(prefixed(at, domain::validate_name(&doc.name)));
    problems.extend(prefixed(at, domain::validate_folder(&doc.folder)));
    problems.extend(prefixed(at, domain::validate_description(&doc.description)));
    problems.extend(prefixed(at, domain::validate_tags(&doc.tags)));
    let mut inputs = Vec::new();
    for (j, version) in doc.versions.iter().enumerate() {
        let path = format!("{at}.versions[{j}]");
        match version_input(version, &path) {
            Ok(input) => {
                let found = domain::validate_version(&input, &path);
                if found.is_empty() {
                    inputs.push((j, version.version, input));
                } else {
                    problems.extend(found);
                }
            }
            Err(found) => problems.extend(found),
        }
    }
    let current = existing.get(&prompt_id).filter(|s| s.head.is_some());
    if current.is_none() && doc.versions.is_empty() {
        problems.push(FieldViolation::new(
            format!("{at}.versions"),
            "a new prompt needs at least one version",
        ));
    }
    if !problems.is_empty() {
        return Err(problems);
    }

    let mut commands = Vec::new();
    let mut actions = Vec::new();
    // The versions as they will be: existing, then planned.
    let mut versions: Vec<VersionInput> = current
        .map(|s| s.versions.iter().map(domain::content_of).collect())
        .unwrap_or_default();
    let mut inputs = inputs.into_iter().peekable();
    match current {
        None => {
            if let Some((j, number, input)) = inputs.next() {
                if number.is_some_and(|n| n != 1) {
                    problems.push(FieldViolation::new(
                        format!("{at}.versions[{j}].version"),
                        "the first version of a new prompt is number 1",
                    ));
                }
                versions.push(input.clone());
                commands.push(PromptCommand::Create(CreatePrompt {
                    prompt_id: prompt_id.clone(),
                    name: doc.name.clone(),
                    description: doc.description.clone(),
                    folder: doc.folder.clone(),
                    tags: doc.tags.clone(),
                    version: input,
                    by: by.clone(),
                }));
                actions.push(action("create", doc, &prompt_id, "version 1".into()));
            }
        }
        Some(state) => {
            let head = state.head.clone().unwrap_or_default();
            if head.description != doc.description || head.tags != doc.tags {
                commands.push(PromptCommand::Update(UpdatePrompt {
                    description: Some(doc.description.clone()),
                    tags: Some(doc.tags.clone()),
                }));
                actions.push(action("update", doc, &prompt_id, "description and tags".into()));
            }
            if head.archived && !doc.versions.is_empty() && versions_would_change(state, &doc.versions) {
                problems.push(FieldViolation::new(
                    at.to_owned(),
                    "the prompt is archived; restore it before adding versions",
                ));
            }
        }
    }
    for (j, number, input) in inputs {
        let path = format!("{at}.versions[{j}]");
        let same_as = |v: &VersionInput| {
            let mut a = v.clone();
            a.commit_message.clear();
            let mut b = input.clone();
            b.commit_message.clear();
            normalized(a) == normalized(b)
        };
        match number {
            Some(n) if n >= 1 && n <= versions.len() as u64 => {
                if !versions.get((n - 1) as usize).is_some_and(same_as) {
                    problems.push(FieldViolation::new(
                        format!("{path}.version"),
                        format!("differs from version {n} in the registry; versions are immutable"),
                    ));
                }
            }
            Some(n) if n != versions.len() as u64 + 1 => problems.push(FieldViolation::new(
                format!("{path}.version"),
                format!(
                    "must be {} (the next number) or an existing version",
                    versions.len() + 1
                ),
            )),
            None if versions.last().is_some_and(same_as) => {}
            _ => {
                let expected_latest = versions.len() as u64;
                versions.push(input.clone());
                commands.push(PromptCommand::AddVersion(AddVersion {
                    source: VersionSource::New(input),
                    expected_latest,
                    by: by.clone(),
                }));
                actions.push(action(
                    "version",
                    doc,
                    &prompt_id,
                    format!("version {}", versions.len()),
                ));
            }
        }
    }
    for (label, &version) in &doc.labels {
        let path = format!("{at}.labels.{label}");
        problems.extend(domain::validate_label(label, &path));
        if version == 0 || version > versions.len() as u64 {
            problems.push(FieldViolation::new(
                path,
                format!(
                    "version {version} does not exist; the latest is {}",
                    versions.len()
                ),
            ));
            continue;
        }
        if current.and_then(|s| s.labels.get(label)) == Some(&version) {
            continue;
        }
        let protected = rights.protected_labels.iter().any(|l| l == label);
        if protected && !rights.may_move_protected {
            problems.push(FieldViolation::new(
                path,
                "is a protected label: moving it needs the labels:move-protected permission",
            ));
            continue;
        }
        commands.push(PromptCommand::MoveLabel(MoveLabel {
            label: label.clone(),
            version,
            reason: "import".into(),
            protected,
            may_move_protected: rights.may_move_protected,
        }));
        actions.push(action(
            "label",
            doc,
            &prompt_id,
            format!("{label} → version {version}"),
        ));
    }
    if doc.archived && !current.is_some_and(|s| s.head.as_ref().is_some_and(|h| h.archived)) {
        commands.push(PromptCommand::Archive {
            reason: "import".into(),
        });
        actions.push(action("archive", doc, &prompt_id, String::new()));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    if actions.is_empty() {
        actions.push(action("unchanged", doc, &prompt_id, String::new()));
    }
    Ok(PlannedPrompt {
        prompt_id,
        commands,
        actions,
    })
}

fn normalized(mut input: VersionInput) -> VersionInput {
    if input.model.as_ref().is_some_and(|m| *m == ModelConfig::default()) {
        input.model = None;
    }
    input
}

/// Whether importing `docs` onto `state` would add a version.
fn versions_would_change(state: &PromptState, docs: &[VersionDoc]) -> bool {
    docs.iter().any(|d| match d.version {
        Some(n) => n > state.latest_number(),
        None => version_input(d, "")
            .map(|input| {
                !state
                    .latest()
                    .is_some_and(|l| domain::same_content(l, &normalized(input)))
            })
            .unwrap_or(true),
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::domain::{PromptEvent, decide, evolve};

    #[test]
    fn yaml_that_expands_through_aliases_is_refused_before_it_is_decoded() {
        // Nine levels of ten aliases each: 10^9 copies of "lol".
        let mut doc = String::from("format: promptops.prompts/v1\nl0: &l0 lol\n");
        for level in 1..10 {
            let refs = vec![format!("*l{}", level - 1); 10].join(", ");
            doc.push_str(&format!("l{level}: &l{level} [{refs}]\n"));
        }
        doc.push_str("prompts: []\n");
        let refused = parse_document::<Document>(&doc, DocumentFormat::Yaml).unwrap_err();
        assert!(
            refused.description.contains("expands to more than"),
            "{}",
            refused.description
        );

        // A document with one small alias, and one without, are fine.
        let with_alias = "format: promptops.prompts/v1\nprompts:\n  - name: a\n    versions:\n      - template: hi\n        model: &m { model: mock/echo }\n  - name: b\n    versions:\n      - template: ho\n        model: *m\n";
        let parsed = parse_document::<Document>(with_alias, DocumentFormat::Yaml).unwrap();
        assert_eq!(parsed.prompts.len(), 2);
        assert_eq!(parsed.prompts[1].versions[0].model.model, "mock/echo");
        // A syntax error is still reported with its line.
        let broken = parse_document::<Document>("format: [", DocumentFormat::Yaml).unwrap_err();
        assert!(broken.description.starts_with("line "), "{}", broken.description);
    }

    fn rights() -> LabelRights {
        LabelRights {
            protected_labels: vec!["production".into()],
            may_move_protected: true,
        }
    }

    fn doc_yaml() -> &'static str {
        r#"format: promptops.prompts/v1
prompts:
  - name: greeting
    folder: support/emails
    description: First reply
    tags: [email]
    labels: {production: 2}
    versions:
      - version: 1
        template: "Hello {{ name }}"
      - version: 2
        messages:
          - {role: system, content: "You are kind."}
          - {role: user, content: "Greet {{ name }}"}
        model: {model: openai/gpt-4o-mini, temperature: 0.2}
        variables: [{name: name, default: there}]
        message: chat form
"#
    }

    /// Applies a plan to the states, as the API does.
    fn apply(existing: &mut HashMap<String, PromptState>, plans: Vec<PlannedPrompt>) {
        for plan in plans {
            let mut state = existing.remove(&plan.prompt_id).unwrap_or_default();
            for command in plan.commands {
                let events: Vec<PromptEvent> = decide(&state, command).unwrap();
                state = events.iter().fold(state, evolve);
            }
            existing.insert(plan.prompt_id, state);
        }
    }

    fn export(existing: &HashMap<String, PromptState>) -> Document {
        let mut prompts: Vec<PromptDoc> = existing.values().filter_map(|s| prompt_doc(s, false)).collect();
        prompts.sort_by(|a, b| (&a.folder, &a.name).cmp(&(&b.folder, &b.name)));
        Document {
            format: FORMAT.into(),
            prompts,
        }
    }

    #[test]
    fn import_into_an_empty_org_then_export_gives_the_same_document() {
        let doc: Document = parse_document(doc_yaml(), DocumentFormat::Yaml).unwrap();
        let mut states = HashMap::new();
        let plans = plan_import("org", &doc, &states, &rights(), &Authorship::default()).unwrap();
        let kinds: Vec<&str> = plans[0].actions.iter().map(|a| a.action.as_str()).collect();
        assert_eq!(kinds, ["create", "version", "label"]);
        apply(&mut states, plans);
        assert_eq!(export(&states), doc);
        // And importing it again changes nothing.
        let again = plan_import("org", &doc, &states, &rights(), &Authorship::default()).unwrap();
        assert!(again[0].commands.is_empty());
        assert_eq!(again[0].actions[0].action, "unchanged");
    }

    #[test]
    fn every_problem_is_reported_with_its_path_and_nothing_is_planned() {
        let text = r#"format: promptops.prompts/v1
prompts:
  - name: ok
    versions: [{template: "fine"}]
  - name: " bad"
    tags: ["a b"]
    labels: {production: 5}
    versions:
      - template: "Hi {{ oops"
      - messages: [{role: robot, content: "x"}]
  - name: ok
    versions: [{template: "dup"}]
"#;
        let doc: Document = parse_document(text, DocumentFormat::Yaml).unwrap();
        let problems =
            plan_import("org", &doc, &HashMap::new(), &rights(), &Authorship::default()).unwrap_err();
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "prompts[1].name",
                "prompts[1].tags[0]",
                "prompts[1].versions[0].template",
                "prompts[1].versions[1].messages[0].role",
                "prompts[2].name",
            ],
            "{problems:?}"
        );
        assert!(
            problems[2].description.starts_with("1:4: unclosed"),
            "{}",
            problems[2].description
        );
    }

    #[test]
    fn changed_history_is_refused_and_unnumbered_versions_append_only_when_different() {
        let doc: Document = parse_document(doc_yaml(), DocumentFormat::Yaml).unwrap();
        let mut states = HashMap::new();
        let plans = plan_import("org", &doc, &states, &rights(), &Authorship::default()).unwrap();
        apply(&mut states, plans);
        let mut edited = doc.clone();
        edited.prompts[0].versions[0].template = Some("Changed {{ name }}".into());
        let problems = plan_import("org", &edited, &states, &rights(), &Authorship::default()).unwrap_err();
        assert_eq!(problems[0].field, "prompts[0].versions[0].version");

        let mut file = doc.clone();
        file.prompts[0].labels.clear();
        file.prompts[0].versions = vec![VersionDoc {
            version: None,
            ..doc.prompts[0].versions[1].clone()
        }];
        let same = plan_import("org", &file, &states, &rights(), &Authorship::default()).unwrap();
        assert!(same[0].commands.is_empty(), "the latest already has this content");
        file.prompts[0].versions[0].template = None;
        file.prompts[0].versions[0].messages = None;
        file.prompts[0].versions[0].template = Some("New {{ name }}".into());
        let changed = plan_import("org", &file, &states, &rights(), &Authorship::default()).unwrap();
        assert_eq!(changed[0].actions[0].detail, "version 3");
    }

    #[test]
    fn protected_labels_in_a_document_need_the_permission() {
        let doc: Document = parse_document(doc_yaml(), DocumentFormat::Yaml).unwrap();
        let no_rights = LabelRights {
            protected_labels: vec!["production".into()],
            may_move_protected: false,
        };
        let problems =
            plan_import("org", &doc, &HashMap::new(), &no_rights, &Authorship::default()).unwrap_err();
        assert_eq!(problems[0].field, "prompts[0].labels.production");
    }

    #[test]
    fn syntax_errors_name_their_line() {
        let err =
            parse_document::<Document>("format: x\nprompts:\n  - name: [unclosed\n", DocumentFormat::Yaml)
                .unwrap_err();
        assert!(err.description.starts_with("line "), "{}", err.description);
        let err = parse_document::<Document>("{\n \"format\": 1\n}", DocumentFormat::Json).unwrap_err();
        assert!(
            err.description.starts_with("line 2 column"),
            "{}",
            err.description
        );
        let err = parse_document::<Document>("format: x\nsurprise: 1\n", DocumentFormat::Yaml).unwrap_err();
        assert!(
            err.description.contains("unknown field `surprise`"),
            "{}",
            err.description
        );
    }

    fn text_strategy() -> impl Strategy<Value = String> {
        "(?s).{0,40}|[ \\n\\t:#'\"{}\\[\\]-]{0,12}|(true|null|1e3|0x1F|~|yes)"
    }

    fn version_strategy() -> impl Strategy<Value = VersionDoc> {
        (
            prop::option::of(1_u64..1000),
            prop::bool::ANY,
            text_strategy(),
            prop::option::of(0.0_f64..2.0),
            prop::option::of(1_u32..100_000),
            prop::collection::vec(text_strategy(), 0..3),
            prop::option::of(text_strategy()),
        )
            .prop_map(
                |(version, chat, text, temperature, max_tokens, stop, default)| VersionDoc {
                    version,
                    template: (!chat).then(|| text.clone()),
                    messages: chat.then(|| {
                        vec![MessageDoc {
                            role: "user".into(),
                            content: text.clone(),
                        }]
                    }),
                    model: ModelDoc {
                        model: "openai/gpt-4o".into(),
                        temperature,
                        max_tokens,
                        stop,
                        ..Default::default()
                    },
                    variables: vec![VariableDoc {
                        name: "v".into(),
                        default,
                        description: text,
                    }],
                    message: String::new(),
                },
            )
    }

    fn document_strategy() -> impl Strategy<Value = Document> {
        prop::collection::vec(
            (
                text_strategy(),
                text_strategy(),
                prop::collection::vec("[a-z]{1,8}", 0..3),
                prop::bool::ANY,
                prop::collection::btree_map("[a-z]{1,8}", 1_u64..9, 0..3),
                prop::collection::vec(version_strategy(), 0..3),
            )
                .prop_map(
                    |(name, description, tags, archived, labels, versions)| PromptDoc {
                        name,
                        folder: "a/b".into(),
                        description,
                        tags,
                        archived,
                        labels,
                        versions,
                    },
                ),
            0..3,
        )
        .prop_map(|prompts| Document {
            format: FORMAT.into(),
            prompts,
        })
    }

    proptest! {
        /// Any document written as JSON or YAML reads back equal.
        #[test]
        fn documents_round_trip_through_json_and_yaml(doc in document_strategy()) {
            for format in [DocumentFormat::Json, DocumentFormat::Yaml] {
                let text = format_document(&doc, format).unwrap();
                let back: Document = parse_document(&text, format).unwrap();
                prop_assert_eq!(&back, &doc, "{:?}:\n{}", format, text);
            }
        }
    }
}
