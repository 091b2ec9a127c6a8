//! The difference between two versions: a line diff of the templates (chat
//! messages as `[role]` blocks) by `similar`, and a field diff of the model
//! configuration and the declared variables.

use std::collections::BTreeSet;

use promptops_proto::prompts::v1::{DiffLine, DiffOp, FieldChange, PromptVersion, VersionDiff, template};
use similar::{ChangeTag, TextDiff};

use crate::exchange::{ModelDoc, VariableDoc, role_name, version_doc};

/// The template as the text the diff compares.
pub fn template_text(version: &PromptVersion) -> String {
    match version.template.as_ref().and_then(|t| t.kind.as_ref()) {
        Some(template::Kind::Text(text)) => text.clone(),
        Some(template::Kind::Chat(chat)) => {
            let mut out = String::new();
            for message in &chat.messages {
                out.push('[');
                out.push_str(role_name(message.role));
                out.push_str("]\n");
                out.push_str(&message.content);
                if !message.content.ends_with('\n') {
                    out.push('\n');
                }
            }
            out
        }
        None => String::new(),
    }
}

fn json_fields(value: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    match value {
        serde_json::Value::Object(map) => map,
        _ => serde_json::Map::new(),
    }
}

fn field_changes(
    prefix: &str,
    old: serde_json::Map<String, serde_json::Value>,
    new: serde_json::Map<String, serde_json::Value>,
) -> Vec<FieldChange> {
    let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    keys.into_iter()
        .filter(|k| old.get(*k) != new.get(*k))
        .map(|k| FieldChange {
            field: format!("{prefix}{k}"),
            old_value: old.get(k).map(ToString::to_string).unwrap_or_default(),
            new_value: new.get(k).map(ToString::to_string).unwrap_or_default(),
        })
        .collect()
}

fn variables_by_name(variables: &[VariableDoc]) -> serde_json::Map<String, serde_json::Value> {
    variables
        .iter()
        .map(|v| {
            (
                v.name.clone(),
                serde_json::to_value(v).unwrap_or(serde_json::Value::Null),
            )
        })
        .collect()
}

pub fn diff(old: &PromptVersion, new: &PromptVersion) -> VersionDiff {
    let (old_text, new_text) = (template_text(old), template_text(new));
    let text_diff = TextDiff::from_lines(&old_text, &new_text);
    let template = text_diff
        .iter_all_changes()
        .map(|change| {
            let line = |index: Option<usize>| index.map_or(0, |i| u32::try_from(i + 1).unwrap_or(u32::MAX));
            DiffLine {
                op: match change.tag() {
                    ChangeTag::Equal => DiffOp::Equal,
                    ChangeTag::Insert => DiffOp::Insert,
                    ChangeTag::Delete => DiffOp::Delete,
                } as i32,
                text: change.value().trim_end_matches('\n').to_owned(),
                old_line: line(change.old_index()),
                new_line: line(change.new_index()),
            }
        })
        .collect();
    let unified = text_diff
        .unified_diff()
        .header(
            &format!("version {}", old.number),
            &format!("version {}", new.number),
        )
        .to_string();
    let (old_doc, new_doc) = (version_doc(old, false), version_doc(new, false));
    let model_json = |m: &ModelDoc| json_fields(serde_json::to_value(m).unwrap_or_default());
    VersionDiff {
        from_version: old.number,
        to_version: new.number,
        template,
        model: field_changes("model.", model_json(&old_doc.model), model_json(&new_doc.model)),
        variables: field_changes(
            "variables.",
            variables_by_name(&old_doc.variables),
            variables_by_name(&new_doc.variables),
        ),
        unified,
    }
}

#[cfg(test)]
mod tests {
    use promptops_proto::prompts::v1::{
        ChatMessage, ChatRole, ChatTemplate, ModelConfig, Template, Variable,
    };

    use super::*;

    fn version(number: u64, kind: template::Kind, model: ModelConfig, vars: &[&str]) -> PromptVersion {
        PromptVersion {
            number,
            template: Some(Template { kind: Some(kind) }),
            model: Some(model),
            variables: vars
                .iter()
                .map(|n| Variable {
                    name: (*n).into(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn text_lines_and_model_fields_are_compared() {
        let old = version(
            1,
            template::Kind::Text("Hello {{name}}\nBye\n".into()),
            ModelConfig {
                model: "openai/gpt-4o".into(),
                temperature: Some(0.2),
                ..Default::default()
            },
            &["name"],
        );
        let new = version(
            2,
            template::Kind::Text("Hello {{name}}\nSee you\n".into()),
            ModelConfig {
                model: "openai/gpt-4o".into(),
                max_tokens: Some(100),
                ..Default::default()
            },
            &["name"],
        );
        let d = diff(&old, &new);
        let ops: Vec<(i32, &str)> = d.template.iter().map(|l| (l.op, l.text.as_str())).collect();
        assert_eq!(
            ops,
            [
                (DiffOp::Equal as i32, "Hello {{name}}"),
                (DiffOp::Delete as i32, "Bye"),
                (DiffOp::Insert as i32, "See you"),
            ]
        );
        let fields: Vec<(&str, &str, &str)> = d
            .model
            .iter()
            .map(|c| (c.field.as_str(), c.old_value.as_str(), c.new_value.as_str()))
            .collect();
        assert_eq!(
            fields,
            [("model.max_tokens", "", "100"), ("model.temperature", "0.2", "")]
        );
        assert!(d.variables.is_empty());
        assert!(d.unified.contains("-Bye\n+See you"), "{}", d.unified);
    }

    #[test]
    fn chat_messages_diff_as_role_blocks() {
        let chat = |user: &str| {
            template::Kind::Chat(ChatTemplate {
                messages: vec![
                    ChatMessage {
                        role: ChatRole::System as i32,
                        content: "Be brief.".into(),
                    },
                    ChatMessage {
                        role: ChatRole::User as i32,
                        content: user.into(),
                    },
                ],
            })
        };
        let d = diff(
            &version(1, chat("Hi {{a}}"), ModelConfig::default(), &["a"]),
            &version(2, chat("Hi {{b}}"), ModelConfig::default(), &["b"]),
        );
        let changed: Vec<&str> = d
            .template
            .iter()
            .filter(|l| l.op != DiffOp::Equal as i32)
            .map(|l| l.text.as_str())
            .collect();
        assert_eq!(changed, ["Hi {{a}}", "Hi {{b}}"]);
        let vars: Vec<&str> = d.variables.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(vars, ["variables.a", "variables.b"]);
    }
}
