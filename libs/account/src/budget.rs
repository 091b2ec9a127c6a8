//! Budgets and quotas: what they limit, over which period, for whom.
//!
//! A budget limits one metric (spend in nano-USD, requests, or input plus
//! output tokens) per UTC day or month, for the whole org, a project (a
//! named group of API keys) or one API key. Soft budgets only alert at
//! their thresholds; hard budgets also refuse runs once reached.

use promptops_platform::errors::FieldViolation;
use promptops_proto::billing::v1::{Budget, BudgetMetric, BudgetPeriod, BudgetScope};
use time::{Date, Month, OffsetDateTime, Time};

pub const DEFAULT_THRESHOLDS: [u32; 3] = [50, 80, 100];

/// The UTC start (ms) of the period of `period` that holds `at_ms`.
pub fn period_start_ms(period: BudgetPeriod, at_ms: i64) -> i64 {
    let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(at_ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let date = match period {
        BudgetPeriod::Month => Date::from_calendar_date(at.year(), at.month(), 1).unwrap_or(at.date()),
        _ => at.date(),
    };
    ms(date)
}

/// The UTC start (ms) of the period after the one starting at `start_ms`.
pub fn period_end_ms(period: BudgetPeriod, start_ms: i64) -> i64 {
    let start = OffsetDateTime::from_unix_timestamp_nanos(i128::from(start_ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        .date();
    let next = match period {
        BudgetPeriod::Month => {
            let (year, month) = match start.month() {
                Month::December => (start.year() + 1, Month::January),
                m => (start.year(), m.next()),
            };
            Date::from_calendar_date(year, month, 1).unwrap_or(start)
        }
        _ => start.next_day().unwrap_or(start),
    };
    ms(next)
}

fn ms(date: Date) -> i64 {
    let nanos = date.with_time(Time::MIDNIGHT).assume_utc().unix_timestamp_nanos();
    i64::try_from(nanos / 1_000_000).unwrap_or(0)
}

/// The thresholds a budget alerts at, ascending.
pub fn thresholds(budget: &Budget) -> Vec<u32> {
    let mut t = if budget.thresholds.is_empty() {
        DEFAULT_THRESHOLDS.to_vec()
    } else {
        budget.thresholds.clone()
    };
    t.sort_unstable();
    t.dedup();
    t
}

pub fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// What is wrong with a budget on its own (whether its target exists is the
/// account's to say), by field.
pub fn violations(budget: &Budget) -> Vec<FieldViolation> {
    let mut v = Vec::new();
    if !valid_id(&budget.id) {
        v.push(FieldViolation::new("id", "1-64 characters of a-z, 0-9 and -"));
    }
    if budget.name.trim().is_empty() || budget.name.len() > 200 {
        v.push(FieldViolation::new("name", "1-200 characters"));
    }
    match budget.scope() {
        BudgetScope::Unspecified => v.push(FieldViolation::new("scope", "must be org, project or api_key")),
        BudgetScope::Org if !budget.target.is_empty() => {
            v.push(FieldViolation::new("target", "must be empty for an org budget"))
        }
        BudgetScope::Project | BudgetScope::ApiKey if budget.target.is_empty() => v.push(
            FieldViolation::new("target", "the project's name or the API key's id is required"),
        ),
        _ => {}
    }
    if budget.metric() == BudgetMetric::Unspecified {
        v.push(FieldViolation::new("metric", "must be spend, requests or tokens"));
    }
    if budget.period() == BudgetPeriod::Unspecified {
        v.push(FieldViolation::new("period", "must be day or month"));
    }
    if budget.limit <= 0 {
        v.push(FieldViolation::new("limit", "must be positive"));
    }
    if budget.thresholds.len() > 10 || budget.thresholds.iter().any(|t| !(1..=1000).contains(t)) {
        v.push(FieldViolation::new(
            "thresholds",
            "at most 10 percentages, each 1 to 1000",
        ));
    }
    v
}

/// Who a run is charged to, for matching budgets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Payer<'a> {
    /// The API key that ran it, when one did.
    pub api_key: Option<&'a str>,
    /// The project the key belongs to.
    pub project: Option<&'a str>,
}

/// Whether `budget` counts a run charged to `payer`.
pub fn applies(budget: &Budget, payer: Payer<'_>) -> bool {
    match budget.scope() {
        BudgetScope::Org => true,
        BudgetScope::Project => payer.project == Some(budget.target.as_str()),
        BudgetScope::ApiKey => payer.api_key == Some(budget.target.as_str()),
        BudgetScope::Unspecified => false,
    }
}

/// A run's use in a metric's unit: a request is 1, tokens are input plus
/// output, spend is its cost.
pub fn units(metric: BudgetMetric, tokens: u64, cost_nano_usd: i64) -> i64 {
    match metric {
        BudgetMetric::Spend => cost_nano_usd,
        BudgetMetric::Requests => 1,
        BudgetMetric::Tokens => i64::try_from(tokens).unwrap_or(i64::MAX),
        BudgetMetric::Unspecified => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    #[test]
    fn periods_are_utc_days_and_calendar_months() {
        // 2026-12-02T17:00:00Z
        let at = 1_796_230_800_000;
        let day = period_start_ms(BudgetPeriod::Day, at);
        assert_eq!(day, 1_796_169_600_000);
        assert_eq!(period_end_ms(BudgetPeriod::Day, day), day + DAY);
        let month = period_start_ms(BudgetPeriod::Month, at);
        assert_eq!(month, day - DAY); // 2026-12-01
        // December ends with the year.
        assert_eq!(period_end_ms(BudgetPeriod::Month, month), month + 31 * DAY);
        assert_eq!(period_start_ms(BudgetPeriod::Month, month), month);
    }

    #[test]
    fn a_budget_applies_to_its_scope_only() {
        let mut b = Budget {
            scope: BudgetScope::Project as i32,
            target: "search".into(),
            ..Budget::default()
        };
        let key = Payer {
            api_key: Some("k1"),
            project: Some("search"),
        };
        let member = Payer {
            api_key: None,
            project: None,
        };
        assert!(applies(&b, key));
        assert!(!applies(&b, member));
        b.scope = BudgetScope::ApiKey as i32;
        b.target = "k2".into();
        assert!(!applies(&b, key));
        b.scope = BudgetScope::Org as i32;
        assert!(applies(&b, member));
    }

    #[test]
    fn every_problem_of_a_budget_is_named() {
        let bad = Budget {
            id: "Bad Id".into(),
            scope: BudgetScope::Org as i32,
            target: "x".into(),
            limit: -5,
            thresholds: vec![0],
            ..Budget::default()
        };
        let fields: Vec<_> = violations(&bad).into_iter().map(|v| v.field).collect();
        assert_eq!(
            fields,
            ["id", "name", "target", "metric", "period", "limit", "thresholds"]
        );
        assert_eq!(thresholds(&Budget::default()), DEFAULT_THRESHOLDS);
    }
}
