//! Reading the buckets: the rows that cover a range, folded into totals
//! overall, per bucket, per prompt or model, or per version.

use std::collections::BTreeMap;

use promptops_platform::db::{to_i64, to_u64};
use promptops_platform::query::ListQuery;
use sqlx::AnyPool;

use super::cover::{Granularity, Span, cover};
use super::totals::{CodecError, Totals};
use super::{BUCKET_COLUMNS, BucketRow};

/// Which runs a query covers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Slice {
    pub org_id: String,
    pub from_ms: i64,
    pub to_ms: i64,
    pub prompt_id: Option<String>,
    pub prompt_version: Option<u64>,
    pub model: Option<String>,
}

async fn rows(pool: &AnyPool, slice: &Slice, spans: &[Span]) -> Result<Vec<BucketRow>, sqlx::Error> {
    if spans.is_empty() {
        return Ok(Vec::new());
    }
    let mut q = ListQuery::new(
        format!("SELECT {BUCKET_COLUMNS} FROM analytics_buckets WHERE org_id = $1"),
        slice.org_id.as_str(),
    );
    let mut parts = Vec::new();
    for span in spans {
        let g = q.bind(span.granularity.as_str());
        let s = q.bind(span.start);
        let e = q.bind(span.end);
        parts.push(format!(
            "(granularity = {g} AND bucket_start_ms >= {s} AND bucket_start_ms < {e})"
        ));
    }
    q.push(&format!(" AND ({})", parts.join(" OR ")));
    if let Some(prompt_id) = &slice.prompt_id {
        let p = q.bind(prompt_id.clone());
        q.push(&format!(" AND prompt_id = {p}"));
    }
    if let Some(version) = slice.prompt_version {
        let p = q.bind(to_i64(version));
        q.push(&format!(" AND prompt_version = {p}"));
    }
    if let Some(model) = &slice.model {
        let p = q.bind(model.clone());
        q.push(&format!(" AND model = {p}"));
    }
    q.fetch_all(pool).await
}

fn fold<'a>(rows: impl IntoIterator<Item = &'a BucketRow>) -> Result<Totals, CodecError> {
    let mut totals = Totals::default();
    for row in rows {
        totals.merge(&Totals::from_row(row)?);
    }
    Ok(totals)
}

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Codec(#[from] CodecError),
}

/// Totals of the slice, exact to the minute.
pub async fn totals(pool: &AnyPool, slice: &Slice) -> Result<Totals, QueryError> {
    let rows = rows(pool, slice, &cover(slice.from_ms, slice.to_ms)).await?;
    Ok(fold(&rows)?)
}

/// Totals per bucket of `granularity` (only buckets with runs).
pub async fn series(
    pool: &AnyPool,
    slice: &Slice,
    granularity: Granularity,
) -> Result<BTreeMap<i64, Totals>, QueryError> {
    let span = Span {
        granularity,
        start: granularity.floor(slice.from_ms),
        end: granularity.ceil(slice.to_ms),
    };
    let rows = rows(pool, slice, &[span]).await?;
    let mut points: BTreeMap<i64, Totals> = BTreeMap::new();
    for row in &rows {
        points
            .entry(row.bucket_start_ms)
            .or_default()
            .merge(&Totals::from_row(row)?);
    }
    Ok(points)
}

/// Totals per key (`key_of` a row), for rankings and comparisons.
pub async fn grouped(
    pool: &AnyPool,
    slice: &Slice,
    key_of: impl Fn(&BucketRow) -> String,
) -> Result<BTreeMap<String, Totals>, QueryError> {
    let rows = rows(pool, slice, &cover(slice.from_ms, slice.to_ms)).await?;
    let mut groups: BTreeMap<String, Totals> = BTreeMap::new();
    for row in &rows {
        groups
            .entry(key_of(row))
            .or_default()
            .merge(&Totals::from_row(row)?);
    }
    Ok(groups)
}

pub fn version_key(row: &BucketRow) -> String {
    to_u64(row.prompt_version).to_string()
}
