//! `/api/v1/analytics/…`: dashboards over the org's runs — KPIs, time
//! series (JSON or CSV), top prompts and models, two versions compared.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use promptops_platform::caller::outgoing;
use promptops_platform::errors::{FieldViolation, Problem, ServiceError};
use promptops_proto::audit::v1::{
    AnalyticsQuery, CompareVersionsRequest, Dimension, GetTimeSeriesRequest, GetTopItemsRequest, Granularity,
    Kpis, Percentiles, RankBy,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::audit::{parse_range, unprefixed};
use super::authn::Authenticated;
use super::extract::ApiQuery;
use super::model::{JSON_PROBLEMS, bad_request, rfc3339, upstream};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AnalyticsParams {
    /// From this time (RFC 3339, inclusive; resolved to the minute). Required.
    pub from: Option<String>,
    /// Before this time (RFC 3339, exclusive). Required.
    pub to: Option<String>,
    pub prompt_id: Option<String>,
    pub prompt_version: Option<u64>,
    pub model: Option<String>,
    /// Time series: `minute`, `hour` or `day` (default: from the range).
    pub granularity: Option<String>,
    /// Time series: `json` (default) or `csv`.
    pub format: Option<String>,
    /// Top: `prompt` or `model`.
    pub dimension: Option<String>,
    /// Top: `cost` (default), `latency` (p95), `errors` or `runs`.
    pub rank_by: Option<String>,
    /// Top: 1–100 (default 10).
    pub limit: Option<u32>,
    /// Compare: the two versions of `prompt_id`.
    pub version_a: Option<u64>,
    pub version_b: Option<u64>,
}

impl AnalyticsParams {
    fn query(&self) -> Result<AnalyticsQuery, ServiceError> {
        let (from, to) =
            parse_range(self.from.as_deref(), self.to.as_deref()).map_err(ServiceError::invalid)?;
        Ok(AnalyticsQuery {
            from,
            to,
            prompt_id: self.prompt_id.clone().unwrap_or_default(),
            prompt_version: self.prompt_version.unwrap_or(0),
            model: self.model.clone().unwrap_or_default(),
        })
    }

    /// Only the parameters `allowed` (besides the query's own) may be given.
    fn only(&self, endpoint: &str, allowed: &[&str]) -> Result<(), ServiceError> {
        let given = [
            ("granularity", self.granularity.is_some()),
            ("format", self.format.is_some()),
            ("dimension", self.dimension.is_some()),
            ("rank_by", self.rank_by.is_some()),
            ("limit", self.limit.is_some()),
            ("version_a", self.version_a.is_some()),
            ("version_b", self.version_b.is_some()),
        ];
        let problems: Vec<FieldViolation> = given
            .iter()
            .filter(|(name, set)| *set && !allowed.contains(name))
            .map(|(name, _)| FieldViolation::new(*name, format!("is not a parameter of {endpoint}")))
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ServiceError::invalid(problems))
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PercentilesJson {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub count: u64,
}

impl From<Option<Percentiles>> for PercentilesJson {
    fn from(p: Option<Percentiles>) -> Self {
        let p = p.unwrap_or_default();
        Self {
            p50: p.p50,
            p95: p.p95,
            p99: p.p99,
            count: p.count,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KpisJson {
    pub runs: u64,
    pub completed: u64,
    pub failed: u64,
    pub cancelled: u64,
    pub error_rate: f64,
    pub errors_by_class: BTreeMap<String, u64>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    /// Cost in USD (exact: `cost_nano_usd` / 1e9).
    pub cost_usd: f64,
    pub cost_nano_usd: i64,
    /// Completed runs' latency, ms (DDSketch, 1% relative error).
    pub latency_ms: PercentilesJson,
    pub time_to_first_token_ms: PercentilesJson,
}

impl From<Option<Kpis>> for KpisJson {
    fn from(k: Option<Kpis>) -> Self {
        let k = k.unwrap_or_default();
        Self {
            runs: k.runs,
            completed: k.completed,
            failed: k.failed,
            cancelled: k.cancelled,
            error_rate: k.error_rate,
            errors_by_class: k.errors_by_class.into_iter().collect(),
            input_tokens: k.input_tokens,
            output_tokens: k.output_tokens,
            cached_input_tokens: k.cached_input_tokens,
            cost_usd: k.cost_nano_usd as f64 / 1e9,
            cost_nano_usd: k.cost_nano_usd,
            latency_ms: k.latency_ms.into(),
            time_to_first_token_ms: k.time_to_first_token_ms.into(),
        }
    }
}

/// KPIs of your org's runs over a range.
#[utoipa::path(get, path = "/api/v1/analytics/kpis", tag = "analytics", params(AnalyticsParams),
    responses(
        (status = 200, description = "Totals and percentiles", body = KpisJson),
        (status = 400, description = "Invalid range or filters (each named)", body = Problem, content_type = JSON_PROBLEMS),
    ))]
pub async fn kpis(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    ApiQuery(params): ApiQuery<AnalyticsParams>,
) -> Result<Json<KpisJson>, ServiceError> {
    params.only("/api/v1/analytics/kpis", &[])?;
    let kpis = state
        .analytics
        .clone()
        .get_kpis(outgoing(&credential, params.query()?))
        .await
        .map_err(|s| unprefixed(upstream(&s), &["query."]))?
        .into_inner();
    Ok(Json(Some(kpis).into()))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PointJson {
    pub bucket_start: String,
    pub kpis: KpisJson,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TimeSeriesJson {
    pub granularity: String,
    pub points: Vec<PointJson>,
}

fn granularity_name(g: i32) -> &'static str {
    match Granularity::try_from(g).unwrap_or(Granularity::Unspecified) {
        Granularity::Minute => "minute",
        Granularity::Hour => "hour",
        Granularity::Day => "day",
        Granularity::Unspecified => "",
    }
}

fn series_csv(series: &TimeSeriesJson) -> Vec<u8> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    let _ = writer.write_record([
        "bucket_start",
        "runs",
        "completed",
        "failed",
        "cancelled",
        "error_rate",
        "input_tokens",
        "output_tokens",
        "cached_input_tokens",
        "cost_usd",
        "latency_p50_ms",
        "latency_p95_ms",
        "latency_p99_ms",
        "ttft_p50_ms",
        "ttft_p95_ms",
        "ttft_p99_ms",
    ]);
    for p in &series.points {
        let k = &p.kpis;
        let _ = writer.write_record([
            p.bucket_start.clone(),
            k.runs.to_string(),
            k.completed.to_string(),
            k.failed.to_string(),
            k.cancelled.to_string(),
            k.error_rate.to_string(),
            k.input_tokens.to_string(),
            k.output_tokens.to_string(),
            k.cached_input_tokens.to_string(),
            format!("{:.9}", k.cost_usd),
            k.latency_ms.p50.to_string(),
            k.latency_ms.p95.to_string(),
            k.latency_ms.p99.to_string(),
            k.time_to_first_token_ms.p50.to_string(),
            k.time_to_first_token_ms.p95.to_string(),
            k.time_to_first_token_ms.p99.to_string(),
        ]);
    }
    writer.into_inner().unwrap_or_default()
}

/// One point per bucket with runs (JSON, or CSV with format=csv).
#[utoipa::path(get, path = "/api/v1/analytics/timeseries", tag = "analytics", params(AnalyticsParams),
    responses(
        (status = 200, description = "The points", body = TimeSeriesJson),
        (status = 400, description = "Invalid range, granularity or filters", body = Problem, content_type = JSON_PROBLEMS),
    ))]
pub async fn time_series(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    ApiQuery(params): ApiQuery<AnalyticsParams>,
) -> Result<Response, ServiceError> {
    params.only("/api/v1/analytics/timeseries", &["granularity", "format"])?;
    let granularity = match params.granularity.as_deref() {
        None => Granularity::Unspecified,
        Some("minute") => Granularity::Minute,
        Some("hour") => Granularity::Hour,
        Some("day") => Granularity::Day,
        Some(_) => return Err(bad_request("granularity", "must be minute, hour or day")),
    };
    let csv = match params.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => return Err(bad_request("format", "must be json or csv")),
    };
    let request = GetTimeSeriesRequest {
        query: Some(params.query()?),
        granularity: granularity as i32,
    };
    let series = state
        .analytics
        .clone()
        .get_time_series(outgoing(&credential, request))
        .await
        .map_err(|s| unprefixed(upstream(&s), &["query."]))?
        .into_inner();
    let json = TimeSeriesJson {
        granularity: granularity_name(series.granularity).to_owned(),
        points: series
            .points
            .into_iter()
            .map(|p| PointJson {
                bucket_start: rfc3339(p.bucket_start.as_ref()),
                kpis: p.kpis.into(),
            })
            .collect(),
    };
    if csv {
        Ok((
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"analytics.csv\"",
                ),
            ],
            series_csv(&json),
        )
            .into_response())
    } else {
        Ok(Json(json).into_response())
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TopItemJson {
    /// A prompt id (empty: raw-message runs) or a model id.
    pub key: String,
    pub kpis: KpisJson,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TopItemsJson {
    pub items: Vec<TopItemJson>,
}

/// Prompts or models ranked by cost, p95 latency, errors or runs.
#[utoipa::path(get, path = "/api/v1/analytics/top", tag = "analytics", params(AnalyticsParams),
    responses(
        (status = 200, description = "The ranking", body = TopItemsJson),
        (status = 400, description = "Invalid range, dimension, rank or limit", body = Problem, content_type = JSON_PROBLEMS),
    ))]
pub async fn top(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    ApiQuery(params): ApiQuery<AnalyticsParams>,
) -> Result<Json<TopItemsJson>, ServiceError> {
    params.only("/api/v1/analytics/top", &["dimension", "rank_by", "limit"])?;
    let mut problems = Vec::new();
    let dimension = match params.dimension.as_deref() {
        Some("prompt") => Dimension::Prompt,
        Some("model") => Dimension::Model,
        _ => {
            problems.push(FieldViolation::new("dimension", "must be prompt or model"));
            Dimension::Unspecified
        }
    };
    let rank_by = match params.rank_by.as_deref() {
        None | Some("cost") => RankBy::Cost,
        Some("latency") => RankBy::Latency,
        Some("errors") => RankBy::Errors,
        Some("runs") => RankBy::Runs,
        Some(_) => {
            problems.push(FieldViolation::new(
                "rank_by",
                "must be cost, latency, errors or runs",
            ));
            RankBy::Unspecified
        }
    };
    if params.limit.is_some_and(|l| l == 0 || l > 100) {
        problems.push(FieldViolation::new("limit", "must be between 1 and 100"));
    }
    if !problems.is_empty() {
        return Err(ServiceError::invalid(problems));
    }
    let request = GetTopItemsRequest {
        query: Some(params.query()?),
        dimension: dimension as i32,
        rank_by: rank_by as i32,
        limit: params.limit.unwrap_or(0),
    };
    let top = state
        .analytics
        .clone()
        .get_top_items(outgoing(&credential, request))
        .await
        .map_err(|s| unprefixed(upstream(&s), &["query."]))?
        .into_inner();
    Ok(Json(TopItemsJson {
        items: top
            .items
            .into_iter()
            .map(|i| TopItemJson {
                key: i.key,
                kpis: i.kpis.into(),
            })
            .collect(),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ComparisonJson {
    pub prompt_id: String,
    pub version_a: u64,
    pub version_b: u64,
    pub a: KpisJson,
    pub b: KpisJson,
}

/// Two versions of one prompt side by side over a range.
#[utoipa::path(get, path = "/api/v1/analytics/compare", operation_id = "compare_analytics", tag = "analytics", params(AnalyticsParams),
    responses(
        (status = 200, description = "Both versions' KPIs", body = ComparisonJson),
        (status = 400, description = "Invalid range or versions", body = Problem, content_type = JSON_PROBLEMS),
    ))]
pub async fn compare(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    ApiQuery(params): ApiQuery<AnalyticsParams>,
) -> Result<Json<ComparisonJson>, ServiceError> {
    params.only("/api/v1/analytics/compare", &["version_a", "version_b"])?;
    if params.prompt_version.is_some() {
        return Err(bad_request("prompt_version", "use version_a and version_b"));
    }
    let mut query = params.query()?;
    let prompt_id = std::mem::take(&mut query.prompt_id);
    let request = CompareVersionsRequest {
        query: Some(query),
        prompt_id: prompt_id.clone(),
        version_a: params.version_a.unwrap_or(0),
        version_b: params.version_b.unwrap_or(0),
    };
    let comparison = state
        .analytics
        .clone()
        .compare_versions(outgoing(&credential, request))
        .await
        .map_err(|s| unprefixed(upstream(&s), &["query."]))?
        .into_inner();
    Ok(Json(ComparisonJson {
        prompt_id,
        version_a: request_version(params.version_a),
        version_b: request_version(params.version_b),
        a: comparison.a.into(),
        b: comparison.b.into(),
    }))
}

fn request_version(v: Option<u64>) -> u64 {
    v.unwrap_or(0)
}
