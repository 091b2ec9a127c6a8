//! The Prompt aggregate: pure decisions, no I/O.
//!
//! `decide(&state, command) -> events` and `evolve(state, &event) -> state`.
//! The command handler in `grpc.rs` loads the events, folds them with
//! [`evolve`], asks [`decide`], and appends what it returns.

use promptops_platform::errors::FieldViolation;
use promptops_proto::prompts::v1::PromptCreated;

/// Limits on user input, documented in the API.
pub const MAX_NAME_CHARS: usize = 200;
pub const MAX_DESCRIPTION_CHARS: usize = 2_000;
pub const MAX_FOLDER_CHARS: usize = 500;
pub const MAX_TAGS: usize = 20;
pub const MAX_TAG_CHARS: usize = 50;
pub const MAX_TEMPLATE_BYTES: usize = 256 * 1024;

/// The state of one prompt, rebuilt from its events.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PromptState {
    /// `None` until the prompt is created.
    pub prompt: Option<PromptCreated>,
    /// The aggregate version: the number of events applied.
    pub version: u64,
}

/// Events of the prompt aggregate.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptEvent {
    Created(PromptCreated),
}

/// Commands on the prompt aggregate.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptCommand {
    Create(CreatePrompt),
}

#[derive(Debug, Clone, PartialEq)]
pub struct CreatePrompt {
    pub prompt_id: String,
    pub name: String,
    pub description: String,
    pub folder: String,
    pub tags: Vec<String>,
    pub template: String,
}

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PromptError {
    #[error("invalid prompt")]
    Invalid(Vec<FieldViolation>),
    #[error("prompt {0} already exists")]
    AlreadyExists(String),
}

pub fn decide(state: &PromptState, command: PromptCommand) -> Result<Vec<PromptEvent>, PromptError> {
    match command {
        PromptCommand::Create(create) => {
            if state.prompt.is_some() {
                return Err(PromptError::AlreadyExists(create.prompt_id));
            }
            let violations = validate_create(&create);
            if !violations.is_empty() {
                return Err(PromptError::Invalid(violations));
            }
            Ok(vec![PromptEvent::Created(PromptCreated {
                prompt_id: create.prompt_id,
                name: create.name,
                description: create.description,
                folder: normalize_folder(&create.folder),
                tags: create.tags,
                template: create.template,
            })])
        }
    }
}

pub fn evolve(mut state: PromptState, event: &PromptEvent) -> PromptState {
    match event {
        PromptEvent::Created(created) => state.prompt = Some(created.clone()),
    }
    state.version += 1;
    state
}

/// Every problem with a create command, each naming its field.
pub fn validate_create(create: &CreatePrompt) -> Vec<FieldViolation> {
    let mut violations = Vec::new();
    let name = create.name.trim();
    if name.is_empty() {
        violations.push(FieldViolation::new("name", "must not be empty"));
    } else if name.chars().count() > MAX_NAME_CHARS {
        violations.push(FieldViolation::new(
            "name",
            format!("must be at most {MAX_NAME_CHARS} characters"),
        ));
    } else if name != create.name {
        violations.push(FieldViolation::new(
            "name",
            "must not start or end with whitespace",
        ));
    } else if name.chars().any(|c| c.is_control() || c == '/') {
        violations.push(FieldViolation::new(
            "name",
            "must not contain '/' or control characters",
        ));
    }
    if create.description.chars().count() > MAX_DESCRIPTION_CHARS {
        violations.push(FieldViolation::new(
            "description",
            format!("must be at most {MAX_DESCRIPTION_CHARS} characters"),
        ));
    }
    if create.folder.chars().count() > MAX_FOLDER_CHARS {
        violations.push(FieldViolation::new(
            "folder",
            format!("must be at most {MAX_FOLDER_CHARS} characters"),
        ));
    } else if normalize_folder(&create.folder)
        .split('/')
        .filter(|s| !s.is_empty())
        .any(|segment| {
            segment.trim() != segment
                || segment.chars().any(char::is_control)
                || segment == "."
                || segment == ".."
        })
    {
        violations.push(FieldViolation::new(
            "folder",
            "segments must not be '.', '..', padded with whitespace or contain control characters",
        ));
    }
    if create.tags.len() > MAX_TAGS {
        violations.push(FieldViolation::new("tags", format!("at most {MAX_TAGS} tags")));
    }
    for (i, tag) in create.tags.iter().enumerate() {
        if tag.is_empty()
            || tag.chars().count() > MAX_TAG_CHARS
            || tag.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            violations.push(FieldViolation::new(
                format!("tags[{i}]"),
                format!("must be 1-{MAX_TAG_CHARS} characters without whitespace"),
            ));
        } else if create.tags[..i].contains(tag) {
            violations.push(FieldViolation::new(format!("tags[{i}]"), "duplicate tag"));
        }
    }
    if create.template.is_empty() {
        violations.push(FieldViolation::new("template", "must not be empty"));
    } else if create.template.len() > MAX_TEMPLATE_BYTES {
        violations.push(FieldViolation::new(
            "template",
            format!("must be at most {MAX_TEMPLATE_BYTES} bytes"),
        ));
    } else if let Err(problems) = crate::template::parse(&create.template) {
        violations.extend(
            problems
                .into_iter()
                .map(|p| FieldViolation::new("template", format!("{}: {}", p.position, p.message))),
        );
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn create() -> CreatePrompt {
        CreatePrompt {
            prompt_id: "p1".into(),
            name: "greeting".into(),
            description: "says hello".into(),
            folder: "/support//emails/".into(),
            tags: vec!["email".into(), "v1".into()],
            template: "Hello {{name}}".into(),
        }
    }

    /// Given these events, when this command, then these events or this error.
    fn given_when(given: &[PromptEvent], when: PromptCommand) -> Result<Vec<PromptEvent>, PromptError> {
        let state = given.iter().fold(PromptState::default(), evolve);
        decide(&state, when)
    }

    #[test]
    fn creating_a_new_prompt_emits_created_with_a_normalized_folder() {
        let events = given_when(&[], PromptCommand::Create(create())).unwrap();
        let [PromptEvent::Created(created)] = events.as_slice() else {
            panic!("one Created event expected, got {events:?}");
        };
        assert_eq!(created.folder, "support/emails");
        assert_eq!(created.name, "greeting");
        assert_eq!(created.tags, ["email", "v1"]);
    }

    #[test]
    fn creating_twice_is_refused() {
        let given = given_when(&[], PromptCommand::Create(create())).unwrap();
        let err = given_when(&given, PromptCommand::Create(create())).unwrap_err();
        assert_eq!(err, PromptError::AlreadyExists("p1".into()));
    }

    #[test]
    fn evolve_counts_versions() {
        let events = given_when(&[], PromptCommand::Create(create())).unwrap();
        let state = events.iter().fold(PromptState::default(), evolve);
        assert_eq!(state.version, 1);
        assert!(state.prompt.is_some());
    }

    #[test]
    fn every_invalid_field_is_reported_at_once() {
        let bad = CreatePrompt {
            prompt_id: "p1".into(),
            name: " ".into(),
            description: "x".repeat(MAX_DESCRIPTION_CHARS + 1),
            folder: "a/../b".into(),
            tags: vec!["ok".into(), "has space".into(), "ok".into()],
            template: String::new(),
        };
        let Err(PromptError::Invalid(violations)) = given_when(&[], PromptCommand::Create(bad)) else {
            panic!("expected Invalid");
        };
        let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            ["name", "description", "folder", "tags[1]", "tags[2]", "template"]
        );
    }

    #[test]
    fn templates_are_parsed_on_save_with_positions() {
        let mut c = create();
        c.template = "Hi {{ name }}\nand {{ oops".into();
        let Err(PromptError::Invalid(violations)) = given_when(&[], PromptCommand::Create(c)) else {
            panic!("expected Invalid");
        };
        assert_eq!(violations.len(), 1);
        assert_eq!(violations[0].field, "template");
        assert!(
            violations[0].description.starts_with("2:5: unclosed"),
            "{}",
            violations[0].description
        );
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
            let mut c = create();
            c.name = name.to_owned();
            assert_eq!(validate_create(&c).is_empty(), ok, "{name:?}");
        }
    }
}
