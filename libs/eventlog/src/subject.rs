//! Bounded contexts, their streams, and the subject of each aggregate.
//!
//! One stream per bounded context; one subject per aggregate instance:
//! `evt.<context>.<org>.<aggregate_type>.<aggregate_id>`. Org and aggregate
//! ids become subject tokens, so they are validated here once.

use std::fmt;

/// A bounded context: each owns one stream of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Context {
    Identity,
    Prompts,
    Execution,
    Evaluation,
    Billing,
}

impl Context {
    /// Every context, in a fixed order (projections over all streams use it).
    pub const ALL: [Context; 5] = [
        Context::Identity,
        Context::Prompts,
        Context::Execution,
        Context::Evaluation,
        Context::Billing,
    ];

    /// The lower-case name used in subjects and configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Context::Identity => "identity",
            Context::Prompts => "prompts",
            Context::Execution => "execution",
            Context::Evaluation => "evaluation",
            Context::Billing => "billing",
        }
    }

    /// The JetStream stream name, e.g. `EVT_PROMPTS`.
    pub fn stream_name(self) -> &'static str {
        match self {
            Context::Identity => "EVT_IDENTITY",
            Context::Prompts => "EVT_PROMPTS",
            Context::Execution => "EVT_EXECUTION",
            Context::Evaluation => "EVT_EVALUATION",
            Context::Billing => "EVT_BILLING",
        }
    }

    /// The subjects the stream captures, e.g. `evt.prompts.>`.
    pub fn stream_subjects(self) -> String {
        format!("evt.{}.>", self.as_str())
    }

    /// Parses a stream name (`EVT_PROMPTS`) back to its context.
    pub fn from_stream_name(name: &str) -> Option<Context> {
        Context::ALL.into_iter().find(|c| c.stream_name() == name)
    }
}

impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an id cannot be used as a subject token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {value:?} is not a valid id: use 1-128 characters from [A-Za-z0-9_-]")]
pub struct SubjectError {
    pub field: &'static str,
    pub value: String,
}

/// One aggregate instance: where its events live.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AggregateRef {
    context: Context,
    org_id: String,
    aggregate_type: String,
    aggregate_id: String,
}

impl AggregateRef {
    pub fn new(
        context: Context,
        org_id: impl Into<String>,
        aggregate_type: impl Into<String>,
        aggregate_id: impl Into<String>,
    ) -> Result<Self, SubjectError> {
        let org_id = valid_token("org_id", org_id.into())?;
        let aggregate_type = valid_token("aggregate_type", aggregate_type.into())?;
        let aggregate_id = valid_token("aggregate_id", aggregate_id.into())?;
        Ok(Self {
            context,
            org_id,
            aggregate_type,
            aggregate_id,
        })
    }

    pub fn context(&self) -> Context {
        self.context
    }
    pub fn org_id(&self) -> &str {
        &self.org_id
    }
    pub fn aggregate_type(&self) -> &str {
        &self.aggregate_type
    }
    pub fn aggregate_id(&self) -> &str {
        &self.aggregate_id
    }

    /// `evt.<context>.<org>.<aggregate_type>.<aggregate_id>`
    pub fn subject(&self) -> String {
        format!(
            "evt.{}.{}.{}.{}",
            self.context.as_str(),
            self.org_id,
            self.aggregate_type,
            self.aggregate_id
        )
    }
}

fn valid_token(field: &'static str, value: String) -> Result<String, SubjectError> {
    let ok = !value.is_empty()
        && value.len() <= 128
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(value)
    } else {
        Err(SubjectError { field, value })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_has_one_token_per_part() {
        let agg = AggregateRef::new(Context::Prompts, "org_1", "prompt", "0192-ab").unwrap();
        assert_eq!(agg.subject(), "evt.prompts.org_1.prompt.0192-ab");
    }

    #[test]
    fn ids_that_would_break_subjects_are_rejected() {
        for bad in ["", "a.b", "a b", "*", ">", "ä", &"x".repeat(129)] {
            let err = AggregateRef::new(Context::Prompts, bad, "prompt", "p").unwrap_err();
            assert_eq!(err.field, "org_id", "{bad:?}");
        }
    }

    #[test]
    fn stream_names_round_trip() {
        for c in Context::ALL {
            assert_eq!(Context::from_stream_name(c.stream_name()), Some(c));
            assert!(c.stream_subjects().starts_with("evt."));
        }
    }
}
