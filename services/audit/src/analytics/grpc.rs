//! `AnalyticsService` over gRPC: dashboards of the caller's org.

use promptops_auth::roles::Permission;
use promptops_platform::authn::Authenticator;
use promptops_platform::errors::{FieldViolation, ServiceError};
use promptops_platform::paging::{ms_from_timestamp, timestamp_from_ms};
use promptops_proto::audit::v1::analytics_service_server::AnalyticsService;
use promptops_proto::audit::v1::{
    AnalyticsQuery, CompareVersionsRequest, Dimension, GetTimeSeriesRequest, GetTopItemsRequest,
    Granularity as PbGranularity, Kpis, RankBy, TimeSeries, TimeSeriesPoint, TopItem, TopItems,
    VersionComparison,
};
use sqlx::AnyPool;
use tonic::{Request, Response, Status};

use super::cover::{DAY_MS, Granularity};
use super::query::{self, QueryError, Slice};
use super::totals::Totals;

/// The longest range a query may cover.
pub const MAX_RANGE_DAYS: i64 = 400;
/// The most points a time series may have.
pub const MAX_POINTS: i64 = 10_000;

#[derive(Debug, Clone)]
pub struct AnalyticsApi {
    db: AnyPool,
    auth: Authenticator,
}

impl AnalyticsApi {
    pub fn new(db: AnyPool, auth: Authenticator) -> Self {
        Self { db, auth }
    }

    async fn slice<T>(
        &self,
        request: &Request<T>,
        query: Option<&AnalyticsQuery>,
        field: &str,
    ) -> Result<Slice, Status> {
        let caller = self.auth.authenticate(request.metadata()).await?;
        caller.require(Permission::Read)?;
        Ok(validate(&caller.org_id, query, field)?)
    }
}

/// The slice a query asks for, with every problem named under `field`.
pub fn validate(org_id: &str, query: Option<&AnalyticsQuery>, field: &str) -> Result<Slice, ServiceError> {
    let query = query.cloned().unwrap_or_default();
    let prefix = if field.is_empty() {
        String::new()
    } else {
        format!("{field}.")
    };
    let mut problems = Vec::new();
    let from = query.from.as_ref().map(|t| ms_from_timestamp(Some(t)));
    let to = query.to.as_ref().map(|t| ms_from_timestamp(Some(t)));
    if from.is_none() {
        problems.push(FieldViolation::new(format!("{prefix}from"), "is required"));
    }
    if to.is_none() {
        problems.push(FieldViolation::new(format!("{prefix}to"), "is required"));
    }
    if let (Some(f), Some(t)) = (from, to) {
        if t <= f {
            problems.push(FieldViolation::new(format!("{prefix}to"), "must be after `from`"));
        } else if t - f > MAX_RANGE_DAYS * DAY_MS {
            problems.push(FieldViolation::new(
                format!("{prefix}to"),
                format!("the range may span at most {MAX_RANGE_DAYS} days"),
            ));
        }
    }
    if query.prompt_version > 0 && query.prompt_id.is_empty() {
        problems.push(FieldViolation::new(
            format!("{prefix}prompt_version"),
            "needs prompt_id",
        ));
    }
    for (name, value) in [("prompt_id", &query.prompt_id), ("model", &query.model)] {
        if value.len() > 200 {
            problems.push(FieldViolation::new(
                format!("{prefix}{name}"),
                "must be at most 200 bytes",
            ));
        }
    }
    if !problems.is_empty() {
        return Err(ServiceError::invalid(problems));
    }
    let non_empty = |s: String| if s.is_empty() { None } else { Some(s) };
    Ok(Slice {
        org_id: org_id.to_owned(),
        from_ms: from.unwrap_or_default(),
        to_ms: to.unwrap_or_default(),
        prompt_id: non_empty(query.prompt_id),
        prompt_version: (query.prompt_version > 0).then_some(query.prompt_version),
        model: non_empty(query.model),
    })
}

fn unavailable(e: QueryError) -> Status {
    ServiceError::unavailable("the analytics database", e).into()
}

fn to_pb(g: Granularity) -> PbGranularity {
    match g {
        Granularity::Minute => PbGranularity::Minute,
        Granularity::Hour => PbGranularity::Hour,
        Granularity::Day => PbGranularity::Day,
    }
}

fn rank_value(kpis: &Kpis, rank: RankBy) -> f64 {
    match rank {
        RankBy::Cost | RankBy::Unspecified => kpis.cost_nano_usd as f64,
        RankBy::Latency => kpis.latency_ms.as_ref().map_or(0.0, |p| p.p95),
        RankBy::Errors => kpis.failed as f64,
        RankBy::Runs => kpis.runs as f64,
    }
}

#[tonic::async_trait]
impl AnalyticsService for AnalyticsApi {
    async fn get_kpis(&self, request: Request<AnalyticsQuery>) -> Result<Response<Kpis>, Status> {
        let slice = self.slice(&request, Some(request.get_ref()), "").await?;
        let totals = query::totals(&self.db, &slice).await.map_err(unavailable)?;
        Ok(Response::new(totals.kpis()))
    }

    async fn get_time_series(
        &self,
        request: Request<GetTimeSeriesRequest>,
    ) -> Result<Response<TimeSeries>, Status> {
        let slice = self
            .slice(&request, request.get_ref().query.as_ref(), "query")
            .await?;
        let span = slice.to_ms - slice.from_ms;
        let granularity = match PbGranularity::try_from(request.get_ref().granularity) {
            Ok(PbGranularity::Unspecified) => Granularity::for_span(span),
            Ok(PbGranularity::Minute) => Granularity::Minute,
            Ok(PbGranularity::Hour) => Granularity::Hour,
            Ok(PbGranularity::Day) => Granularity::Day,
            Err(_) => {
                return Err(ServiceError::invalid_field("granularity", "must be minute, hour or day").into());
            }
        };
        if span / granularity.millis() > MAX_POINTS {
            return Err(ServiceError::invalid_field(
                "granularity",
                format!("the range would have more than {MAX_POINTS} points at this granularity"),
            )
            .into());
        }
        let points = query::series(&self.db, &slice, granularity)
            .await
            .map_err(unavailable)?;
        Ok(Response::new(TimeSeries {
            granularity: to_pb(granularity) as i32,
            points: points
                .into_iter()
                .map(|(start, totals)| TimeSeriesPoint {
                    bucket_start: Some(timestamp_from_ms(start)),
                    kpis: Some(totals.kpis()),
                })
                .collect(),
        }))
    }

    async fn get_top_items(
        &self,
        request: Request<GetTopItemsRequest>,
    ) -> Result<Response<TopItems>, Status> {
        let slice = self
            .slice(&request, request.get_ref().query.as_ref(), "query")
            .await?;
        let req = request.into_inner();
        let mut problems = Vec::new();
        let dimension = match Dimension::try_from(req.dimension) {
            Ok(Dimension::Prompt) => Dimension::Prompt,
            Ok(Dimension::Model) => Dimension::Model,
            _ => {
                problems.push(FieldViolation::new("dimension", "must be prompt or model"));
                Dimension::Unspecified
            }
        };
        let rank = RankBy::try_from(req.rank_by).unwrap_or_else(|_| {
            problems.push(FieldViolation::new(
                "rank_by",
                "must be cost, latency, errors or runs",
            ));
            RankBy::Unspecified
        });
        if req.limit > 100 {
            problems.push(FieldViolation::new("limit", "must be between 1 and 100"));
        }
        if !problems.is_empty() {
            return Err(ServiceError::invalid(problems).into());
        }
        let limit = if req.limit == 0 { 10 } else { req.limit as usize };
        let groups = query::grouped(&self.db, &slice, |row| match dimension {
            Dimension::Model => row.model.clone(),
            _ => row.prompt_id.clone(),
        })
        .await
        .map_err(unavailable)?;
        let mut items: Vec<TopItem> = groups
            .into_iter()
            .map(|(key, totals)| TopItem {
                key,
                kpis: Some(totals.kpis()),
            })
            .collect();
        let value = |item: &TopItem| item.kpis.as_ref().map_or(0.0, |k| rank_value(k, rank));
        items.sort_by(|a, b| value(b).total_cmp(&value(a)).then_with(|| a.key.cmp(&b.key)));
        items.truncate(limit);
        Ok(Response::new(TopItems { items }))
    }

    async fn compare_versions(
        &self,
        request: Request<CompareVersionsRequest>,
    ) -> Result<Response<VersionComparison>, Status> {
        let mut slice = self
            .slice(&request, request.get_ref().query.as_ref(), "query")
            .await?;
        let req = request.into_inner();
        let mut problems = Vec::new();
        if req.prompt_id.is_empty() {
            problems.push(FieldViolation::new("prompt_id", "is required"));
        }
        if req.version_a == 0 {
            problems.push(FieldViolation::new(
                "version_a",
                "must be a version number (1, 2, …)",
            ));
        }
        if req.version_b == 0 {
            problems.push(FieldViolation::new(
                "version_b",
                "must be a version number (1, 2, …)",
            ));
        }
        if !problems.is_empty() {
            return Err(ServiceError::invalid(problems).into());
        }
        slice.prompt_id = Some(req.prompt_id);
        slice.prompt_version = None;
        let mut groups = query::grouped(&self.db, &slice, query::version_key)
            .await
            .map_err(unavailable)?;
        let mut take = |v: u64| {
            groups
                .remove(&v.to_string())
                .unwrap_or_else(Totals::default)
                .kpis()
        };
        let a = take(req.version_a);
        let b = take(req.version_b);
        Ok(Response::new(VersionComparison {
            a: Some(a),
            b: Some(b),
        }))
    }
}
