//! Usage reports from the ledger: spend and usage grouped by day, model,
//! prompt, API key, user or project for a range, and the month-end forecast.

use std::collections::BTreeMap;

use promptops_platform::db::to_u64;
use promptops_proto::billing::v1::{Forecast, UsageGrouping, UsageReport, UsageRow};
use sqlx::AnyPool;

use crate::ledger::day_of;

/// Complete days before today the forecast's daily rate is the mean of.
pub const TRAILING_DAYS: u32 = 7;

/// The month-end forecast: month-to-date spend plus the mean daily spend of
/// the last [`TRAILING_DAYS`] complete days (fewer early in the month, none:
/// today's pace) times the days left, today's remainder included.
pub fn forecast(month_to_date: i64, trailing: &[i64], today_so_far: i64, now_ms: i64) -> Forecast {
    let day_ms = 86_400_000_i64;
    let month_start =
        promptops_account::budget::period_start_ms(promptops_proto::billing::v1::BudgetPeriod::Month, now_ms);
    let month_end = promptops_account::budget::period_end_ms(
        promptops_proto::billing::v1::BudgetPeriod::Month,
        month_start,
    );
    let elapsed_today = (now_ms - now_ms.div_euclid(day_ms) * day_ms).max(1);
    let (rate, days, method) = if trailing.is_empty() {
        // Today's pace, scaled to a whole day.
        let rate = i64::try_from(i128::from(today_so_far) * i128::from(day_ms) / i128::from(elapsed_today))
            .unwrap_or(i64::MAX);
        (
            rate,
            0,
            "no complete day yet this month: today's spend so far, scaled to a day, for each day left"
                .to_owned(),
        )
    } else {
        let rate = trailing.iter().sum::<i64>() / trailing.len() as i64;
        (
            rate,
            trailing.len() as u32,
            format!(
                "month-to-date spend + the mean daily spend of the last {} complete day(s) × the days left (today's remainder included)",
                trailing.len()
            ),
        )
    };
    let left_ms = (month_end - now_ms).max(0);
    let projected = month_to_date
        + i64::try_from(i128::from(rate) * i128::from(left_ms) / i128::from(day_ms)).unwrap_or(i64::MAX);
    Forecast {
        month: day_of(month_start)[..7].to_owned(),
        month_to_date_nano_usd: month_to_date,
        projected_month_end_nano_usd: projected,
        daily_rate_nano_usd: rate,
        trailing_days: days,
        method,
    }
}

type Sums = (String, i64, i64, i64, i64, i64, i64);

fn row((key, runs, failed, input, output, cached, cost): Sums) -> UsageRow {
    UsageRow {
        key,
        runs: to_u64(runs),
        failed_runs: to_u64(failed),
        input_tokens: to_u64(input),
        output_tokens: to_u64(output),
        cached_input_tokens: to_u64(cached),
        cost_nano_usd: cost,
    }
}

fn add(into: &mut UsageRow, r: &UsageRow) {
    into.runs += r.runs;
    into.failed_runs += r.failed_runs;
    into.input_tokens += r.input_tokens;
    into.output_tokens += r.output_tokens;
    into.cached_input_tokens += r.cached_input_tokens;
    into.cost_nano_usd += r.cost_nano_usd;
}

const SUMS: &str =
    "COUNT(*), CAST(COALESCE(SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END), 0) AS BIGINT),
    CAST(COALESCE(SUM(input_tokens), 0) AS BIGINT), CAST(COALESCE(SUM(output_tokens), 0) AS BIGINT),
    CAST(COALESCE(SUM(cached_input_tokens), 0) AS BIGINT), CAST(COALESCE(SUM(cost_nano_usd), 0) AS BIGINT)";

pub async fn usage_report(
    db: &AnyPool,
    org_id: &str,
    from_ms: i64,
    to_ms: i64,
    grouping: UsageGrouping,
    projects: &BTreeMap<String, Vec<String>>,
    now_ms: i64,
) -> Result<UsageReport, sqlx::Error> {
    let column = match grouping {
        UsageGrouping::Model => "model",
        UsageGrouping::Prompt => "prompt_id",
        UsageGrouping::ApiKey | UsageGrouping::Project => "api_key_id",
        UsageGrouping::User => "user_id",
        _ => "day",
    };
    let sums: Vec<Sums> = sqlx::query_as(&format!(
        "SELECT {column}, {SUMS} FROM ledger_lines
         WHERE org_id = $1 AND status <> 'running' AND ended_at_ms >= $2 AND ended_at_ms < $3
         GROUP BY {column} ORDER BY {column}"
    ))
    .bind(org_id)
    .bind(from_ms)
    .bind(to_ms)
    .fetch_all(db)
    .await?;
    let mut rows: Vec<UsageRow> = sums.into_iter().map(row).collect();
    if grouping == UsageGrouping::Project {
        let mut by_project: BTreeMap<String, UsageRow> = BTreeMap::new();
        for r in &rows {
            let project = projects
                .iter()
                .find(|(_, keys)| keys.contains(&r.key))
                .map_or("", |(name, _)| name.as_str());
            let into = by_project.entry(project.to_owned()).or_insert_with(|| UsageRow {
                key: project.to_owned(),
                ..UsageRow::default()
            });
            add(into, r);
        }
        rows = by_project.into_values().collect();
    }
    let mut total = UsageRow {
        key: "total".into(),
        ..UsageRow::default()
    };
    for r in &rows {
        add(&mut total, r);
    }
    // The forecast: this month's days from the ledger.
    let month_start =
        promptops_account::budget::period_start_ms(promptops_proto::billing::v1::BudgetPeriod::Month, now_ms);
    let days: Vec<(String, i64)> = sqlx::query_as(
        "SELECT day, CAST(COALESCE(SUM(cost_nano_usd), 0) AS BIGINT) FROM ledger_lines
         WHERE org_id = $1 AND status <> 'running' AND ended_at_ms >= $2 GROUP BY day ORDER BY day",
    )
    .bind(org_id)
    .bind(month_start)
    .fetch_all(db)
    .await?;
    let today = day_of(now_ms);
    let month_to_date = days.iter().map(|(_, s)| s).sum();
    let today_so_far = days.iter().find(|(d, _)| *d == today).map_or(0, |(_, s)| *s);
    // Complete days of the month before today, the last few (a day with no
    // line is a day that spent nothing).
    let day_ms = 86_400_000;
    let complete = ((now_ms.div_euclid(day_ms) * day_ms - month_start) / day_ms).max(0);
    let trailing: Vec<i64> = (0..complete.min(i64::from(TRAILING_DAYS)))
        .map(|back| {
            let d = day_of(now_ms - (back + 1) * day_ms);
            days.iter().find(|(day, _)| *day == d).map_or(0, |(_, s)| *s)
        })
        .collect();
    Ok(UsageReport {
        rows,
        total: Some(total),
        forecast: Some(forecast(month_to_date, &trailing, today_so_far, now_ms)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;
    const USD: i64 = 1_000_000_000;
    // 2026-12-11T12:00:00Z: 10 complete days, 20.5 days left.
    const NOW: i64 = 1_796_169_600_000 - DAY + 10 * DAY + DAY / 2;

    #[test]
    fn the_forecast_extends_the_trailing_mean_over_the_days_left() {
        let f = forecast(10 * USD, &[USD, USD, 2 * USD, 0, USD, USD, USD], USD / 2, NOW);
        assert_eq!(f.month, "2026-12");
        assert_eq!(f.daily_rate_nano_usd, USD);
        assert_eq!(f.trailing_days, 7);
        assert_eq!(f.projected_month_end_nano_usd, 10 * USD + 20 * USD + USD / 2);
        assert!(f.method.contains("7 complete"));
    }

    #[test]
    fn on_the_first_day_the_forecast_uses_todays_pace() {
        // 2026-12-01T06:00:00Z, 1 USD so far: 4 USD a day.
        let now = 1_796_083_200_000 + DAY / 4;
        let f = forecast(USD, &[], USD, now);
        assert_eq!(f.daily_rate_nano_usd, 4 * USD);
        assert_eq!(f.projected_month_end_nano_usd, USD + 4 * USD * 30 + 3 * USD);
    }
}
