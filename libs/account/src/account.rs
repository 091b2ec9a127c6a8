//! An org's billing account as one event-sourced aggregate
//! (`evt.billing.<org>.account.org`): its price book, projects and budgets.
//! The billing service decides; the execution service folds the same
//! events into its cache (prices and hard budgets on the hot path).

use std::collections::BTreeMap;

use promptops_eventlog::aggregate::Aggregate;
use promptops_eventlog::{EventDraft, EventEnvelope};
use promptops_platform::errors::FieldViolation;
use promptops_proto::billing::v1::{
    Budget, BudgetRemoved, BudgetScope, BudgetSet, PriceScheduled, ProjectRemoved, ProjectSet,
};
use promptops_proto::common::v1::TokenPrices;
use prost::Message as _;

use crate::budget;
use crate::prices::{self, PriceBook};

pub const AGGREGATE_TYPE: &str = "account";
pub const AGGREGATE_ID: &str = "org";
pub const PRICE_SCHEDULED: &str = "promptops.billing.v1.PriceScheduled";
pub const PROJECT_SET: &str = "promptops.billing.v1.ProjectSet";
pub const PROJECT_REMOVED: &str = "promptops.billing.v1.ProjectRemoved";
pub const BUDGET_SET: &str = "promptops.billing.v1.BudgetSet";
pub const BUDGET_REMOVED: &str = "promptops.billing.v1.BudgetRemoved";

/// How far in the past a price may say it starts (clock skew between the
/// caller and us); anything earlier would reprice runs already priced.
pub const PAST_TOLERANCE_MS: i64 = 60_000;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct AccountState {
    pub prices: PriceBook,
    /// Project name → its API keys.
    pub projects: BTreeMap<String, Vec<String>>,
    pub budgets: BTreeMap<String, BudgetSet>,
}

impl AccountState {
    /// The project an API key belongs to.
    pub fn project_of(&self, api_key: &str) -> Option<&str> {
        self.projects
            .iter()
            .find(|(_, keys)| keys.iter().any(|k| k == api_key))
            .map(|(name, _)| name.as_str())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum AccountEvent {
    PriceScheduled(PriceScheduled),
    ProjectSet(ProjectSet),
    ProjectRemoved(ProjectRemoved),
    BudgetSet(BudgetSet),
    BudgetRemoved(BudgetRemoved),
}

#[derive(Debug, Clone, PartialEq)]
pub enum AccountCommand {
    SetPrice {
        model: String,
        /// `None`: now.
        effective_from_ms: Option<i64>,
        prices: Option<TokenPrices>,
        now_ms: i64,
    },
    /// `unknown_keys`: the keys the org does not have (the caller looked).
    SetProject {
        name: String,
        api_keys: Vec<String>,
        unknown_keys: Vec<String>,
    },
    RemoveProject(String),
    /// `target_exists`: for an API key budget, whether the org has the key.
    SetBudget {
        budget: Budget,
        target_exists: bool,
        baseline_period_start_ms: i64,
        baseline_used: i64,
    },
    RemoveBudget(String),
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AccountError {
    #[error("invalid")]
    Invalid(Vec<FieldViolation>),
    #[error("{0}")]
    NotFound(String),
    /// The request contradicts what is there (an overlapping price, a
    /// project a budget still uses).
    #[error("{0}")]
    Conflict(String),
}

fn valid_model(model: &str) -> bool {
    model.split_once('/').is_some_and(|(p, n)| {
        !p.is_empty()
            && !n.is_empty()
            && model.len() <= 200
            && !model.chars().any(|c| c.is_whitespace() || c.is_control())
    })
}

pub fn decide(state: &AccountState, command: AccountCommand) -> Result<Vec<AccountEvent>, AccountError> {
    match command {
        AccountCommand::SetPrice {
            model,
            effective_from_ms,
            prices: set,
            now_ms,
        } => {
            let mut v = prices::violations(set.as_ref());
            if !valid_model(&model) {
                v.push(FieldViolation::new("model", "must be <provider>/<model>"));
            }
            let from = effective_from_ms.unwrap_or(now_ms);
            if from < now_ms - PAST_TOLERANCE_MS {
                v.push(FieldViolation::new(
                    "effective_from",
                    "must not be in the past: runs until now keep the prices they were run at",
                ));
            }
            if !v.is_empty() {
                return Err(AccountError::Invalid(v));
            }
            if let Some(newest) = state.prices.newest_from(&model)
                && from <= newest
            {
                return Err(AccountError::Conflict(format!(
                    "a price of {model} already applies from {} ms: a new one must start after it \
                     (effective dates may not overlap)",
                    newest
                )));
            }
            Ok(vec![AccountEvent::PriceScheduled(PriceScheduled {
                model,
                effective_from_ms: from,
                prices: set,
            })])
        }
        AccountCommand::SetProject {
            name,
            mut api_keys,
            unknown_keys,
        } => {
            let mut v = Vec::new();
            if !budget::valid_id(&name) {
                v.push(FieldViolation::new("name", "1-64 characters of a-z, 0-9 and -"));
            }
            api_keys.sort();
            api_keys.dedup();
            if api_keys.len() > 1000 {
                v.push(FieldViolation::new("api_keys", "at most 1,000 keys"));
            }
            for key in &unknown_keys {
                v.push(FieldViolation::new(
                    "api_keys",
                    format!("the org has no API key {key:?}"),
                ));
            }
            for key in &api_keys {
                if let Some(other) = state.project_of(key)
                    && other != name
                {
                    v.push(FieldViolation::new(
                        "api_keys",
                        format!("{key} belongs to project {other:?} already (a key is in one project)"),
                    ));
                }
            }
            if !v.is_empty() {
                return Err(AccountError::Invalid(v));
            }
            if state.projects.get(&name) == Some(&api_keys) {
                return Ok(Vec::new());
            }
            Ok(vec![AccountEvent::ProjectSet(ProjectSet { name, api_keys })])
        }
        AccountCommand::RemoveProject(name) => {
            if !state.projects.contains_key(&name) {
                return Err(AccountError::NotFound(format!("no project {name:?}")));
            }
            if let Some(b) = state
                .budgets
                .values()
                .filter_map(|s| s.budget.as_ref())
                .find(|b| b.scope() == BudgetScope::Project && b.target == name)
            {
                return Err(AccountError::Conflict(format!(
                    "budget {:?} limits project {name:?}: remove it first",
                    b.id
                )));
            }
            Ok(vec![AccountEvent::ProjectRemoved(ProjectRemoved { name })])
        }
        AccountCommand::SetBudget {
            budget,
            target_exists,
            baseline_period_start_ms,
            baseline_used,
        } => {
            let mut v = budget::violations(&budget);
            match budget.scope() {
                BudgetScope::Project
                    if !budget.target.is_empty() && !state.projects.contains_key(&budget.target) =>
                {
                    v.push(FieldViolation::new(
                        "target",
                        format!("no project {:?}", budget.target),
                    ))
                }
                BudgetScope::ApiKey if !budget.target.is_empty() && !target_exists => v.push(
                    FieldViolation::new("target", format!("the org has no API key {:?}", budget.target)),
                ),
                _ => {}
            }
            if !v.is_empty() {
                return Err(AccountError::Invalid(v));
            }
            let mut budget = budget;
            budget.thresholds = budget::thresholds(&budget);
            if state.budgets.get(&budget.id).and_then(|s| s.budget.as_ref()) == Some(&budget) {
                return Ok(Vec::new());
            }
            Ok(vec![AccountEvent::BudgetSet(BudgetSet {
                budget: Some(budget),
                baseline_period_start_ms,
                baseline_used,
            })])
        }
        AccountCommand::RemoveBudget(id) => {
            if !state.budgets.contains_key(&id) {
                return Err(AccountError::NotFound(format!("no budget {id:?}")));
            }
            Ok(vec![AccountEvent::BudgetRemoved(BudgetRemoved { budget_id: id })])
        }
    }
}

pub fn evolve(mut state: AccountState, event: &AccountEvent) -> AccountState {
    match event {
        AccountEvent::PriceScheduled(e) => {
            state
                .prices
                .entries
                .entry(e.model.clone())
                .or_default()
                .insert(e.effective_from_ms, e.prices.unwrap_or_default());
        }
        AccountEvent::ProjectSet(e) => {
            state.projects.insert(e.name.clone(), e.api_keys.clone());
        }
        AccountEvent::ProjectRemoved(e) => {
            state.projects.remove(&e.name);
        }
        AccountEvent::BudgetSet(e) => {
            if let Some(b) = &e.budget {
                state.budgets.insert(b.id.clone(), e.clone());
            }
        }
        AccountEvent::BudgetRemoved(e) => {
            state.budgets.remove(&e.budget_id);
        }
    }
    state
}

#[derive(Debug)]
pub struct Account;

impl Aggregate for Account {
    type State = AccountState;
    type Event = AccountEvent;
    type Command = AccountCommand;
    type Error = AccountError;
    const TYPE: &'static str = AGGREGATE_TYPE;

    fn decide(state: &AccountState, command: AccountCommand) -> Result<Vec<AccountEvent>, AccountError> {
        decide(state, command)
    }
    fn evolve(state: AccountState, event: &AccountEvent) -> AccountState {
        evolve(state, event)
    }
    fn encode(event: &AccountEvent) -> EventDraft {
        match event {
            AccountEvent::PriceScheduled(e) => EventDraft::new(PRICE_SCHEDULED, e.encode_to_vec()),
            AccountEvent::ProjectSet(e) => EventDraft::new(PROJECT_SET, e.encode_to_vec()),
            AccountEvent::ProjectRemoved(e) => EventDraft::new(PROJECT_REMOVED, e.encode_to_vec()),
            AccountEvent::BudgetSet(e) => EventDraft::new(BUDGET_SET, e.encode_to_vec()),
            AccountEvent::BudgetRemoved(e) => EventDraft::new(BUDGET_REMOVED, e.encode_to_vec()),
        }
    }
    fn decode(envelope: &EventEnvelope) -> Option<AccountEvent> {
        let p = envelope.payload.as_slice();
        match envelope.event_type.as_str() {
            PRICE_SCHEDULED => PriceScheduled::decode(p).ok().map(AccountEvent::PriceScheduled),
            PROJECT_SET => ProjectSet::decode(p).ok().map(AccountEvent::ProjectSet),
            PROJECT_REMOVED => ProjectRemoved::decode(p).ok().map(AccountEvent::ProjectRemoved),
            BUDGET_SET => BudgetSet::decode(p).ok().map(AccountEvent::BudgetSet),
            BUDGET_REMOVED => BudgetRemoved::decode(p).ok().map(AccountEvent::BudgetRemoved),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use promptops_proto::billing::v1::{BudgetMetric, BudgetPeriod};

    use super::*;

    const NOW: i64 = 1_796_230_800_000;

    fn apply(state: AccountState, command: AccountCommand) -> Result<AccountState, AccountError> {
        Ok(decide(&state, command)?.iter().fold(state, evolve))
    }

    fn price(model: &str, from: Option<i64>, input: i64) -> AccountCommand {
        AccountCommand::SetPrice {
            model: model.into(),
            effective_from_ms: from,
            prices: Some(prices::prices([input, 1, 0, 0])),
            now_ms: NOW,
        }
    }

    #[test]
    fn prices_are_scheduled_forward_and_never_overlap() {
        let s = apply(AccountState::default(), price("openai/gpt-4o", None, 3)).unwrap();
        let s = apply(s, price("openai/gpt-4o", Some(NOW + 1000), 4)).unwrap();
        assert_eq!(s.prices.at("openai/gpt-4o", NOW).unwrap().input_per_mtok, 3);
        assert_eq!(
            s.prices.at("openai/gpt-4o", NOW + 1000).unwrap().input_per_mtok,
            4
        );
        // Same start, or before the newest: overlapping.
        for from in [NOW + 1000, NOW + 500] {
            assert!(matches!(
                decide(&s, price("openai/gpt-4o", Some(from), 5)),
                Err(AccountError::Conflict(_))
            ));
        }
        // In the past: invalid, named.
        let Err(AccountError::Invalid(v)) = decide(&s, price("x/y", Some(NOW - 3_600_000), 1)) else {
            panic!("a past price was taken")
        };
        assert_eq!(v[0].field, "effective_from");
        let Err(AccountError::Invalid(v)) = decide(&s, price("nomodel", None, -1)) else {
            panic!("a negative price was taken")
        };
        let fields: Vec<_> = v.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["prices.input_per_mtok", "model"]);
    }

    fn budget(scope: BudgetScope, target: &str) -> Budget {
        Budget {
            id: "b1".into(),
            name: "Team spend".into(),
            scope: scope as i32,
            target: target.into(),
            metric: BudgetMetric::Spend as i32,
            period: BudgetPeriod::Month as i32,
            limit: 1_000,
            hard: true,
            thresholds: vec![],
        }
    }

    fn set_budget(b: Budget, exists: bool) -> AccountCommand {
        AccountCommand::SetBudget {
            budget: b,
            target_exists: exists,
            baseline_period_start_ms: 0,
            baseline_used: 0,
        }
    }

    #[test]
    fn budgets_name_unknown_targets_and_projects_hold_a_key_once() {
        let s = AccountState::default();
        let Err(AccountError::Invalid(v)) = decide(&s, set_budget(budget(BudgetScope::ApiKey, "k9"), false))
        else {
            panic!("a budget for an unknown key was taken")
        };
        assert!(v[0].description.contains("k9"));
        assert!(decide(&s, set_budget(budget(BudgetScope::Project, "search"), true)).is_err());
        let s = apply(
            s,
            AccountCommand::SetProject {
                name: "search".into(),
                api_keys: vec!["k1".into(), "k1".into()],
                unknown_keys: vec![],
            },
        )
        .unwrap();
        assert_eq!(s.projects["search"], ["k1"]);
        assert_eq!(s.project_of("k1"), Some("search"));
        let twice = decide(
            &s,
            AccountCommand::SetProject {
                name: "ads".into(),
                api_keys: vec!["k1".into()],
                unknown_keys: vec![],
            },
        );
        assert!(matches!(twice, Err(AccountError::Invalid(_))));
        let s = apply(s, set_budget(budget(BudgetScope::Project, "search"), true)).unwrap();
        assert_eq!(s.budgets["b1"].budget.as_ref().unwrap().thresholds, [50, 80, 100]);
        // The same budget again changes nothing; its project cannot go.
        assert!(
            decide(&s, set_budget(budget(BudgetScope::Project, "search"), true))
                .unwrap()
                .is_empty()
        );
        assert!(matches!(
            decide(&s, AccountCommand::RemoveProject("search".into())),
            Err(AccountError::Conflict(_))
        ));
        let s = apply(s, AccountCommand::RemoveBudget("b1".into())).unwrap();
        assert!(apply(s, AccountCommand::RemoveProject("search".into())).is_ok());
    }
}
