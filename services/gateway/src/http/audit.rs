//! `/api/v1/audit/…`: the audit trail — list, export (CSV / JSON Lines,
//! streamed), verify, compliance report (JSON / CSV).

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use promptops_platform::caller::outgoing;
use promptops_platform::errors::{FieldViolation, Problem, ServiceError};
use promptops_proto::audit::v1::{
    AuditEntry, AuditFilter, ComplianceReport, ExportAuditEntriesRequest, GetComplianceReportRequest,
    GetRetentionPolicyRequest, ListAuditEntriesRequest, VerifyAuditTrailRequest, VerifyAuditTrailResponse,
};
use promptops_proto::common::v1::ActorKind;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::api::page;
use super::authn::Authenticated;
use super::extract::{ApiJson, ApiQuery};
use super::model::{
    ActorJson, AuditEntryJson, AuditEntryListJson, JSON_PROBLEMS, bad_request, format_position,
    parse_position, rfc3339, upstream,
};

/// Parses an RFC 3339 time parameter.
pub fn parse_time(
    field: &str,
    value: Option<&str>,
) -> Result<Option<prost_types::Timestamp>, FieldViolation> {
    let Some(value) = value else { return Ok(None) };
    let t = time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
        .map_err(|_| FieldViolation::new(field, "expected an RFC 3339 time, e.g. 2026-12-01T00:00:00Z"))?;
    let nanos = t.unix_timestamp_nanos();
    Ok(Some(prost_types::Timestamp {
        seconds: i64::try_from(nanos.div_euclid(1_000_000_000)).unwrap_or(i64::MAX),
        nanos: i32::try_from(nanos.rem_euclid(1_000_000_000)).unwrap_or(0),
    }))
}

/// The `from` / `to` parameters, every problem named.
pub type TimeRange = (Option<prost_types::Timestamp>, Option<prost_types::Timestamp>);

pub fn parse_range(from: Option<&str>, to: Option<&str>) -> Result<TimeRange, Vec<FieldViolation>> {
    match (parse_time("from", from), parse_time("to", to)) {
        (Ok(from), Ok(to)) => Ok((from, to)),
        (from, to) => Err([from.err(), to.err()].into_iter().flatten().collect()),
    }
}

/// The filters of a list or an export.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    pub page_size: Option<u32>,
    pub page_token: Option<String>,
    pub min_position: Option<String>,
    /// From this time (RFC 3339, inclusive).
    pub from: Option<String>,
    /// Before this time (RFC 3339, exclusive).
    pub to: Option<String>,
    /// `user`, `api_key` or `service`.
    pub actor_kind: Option<String>,
    pub actor_id: Option<String>,
    /// Only actions starting with this, e.g. `prompt.`.
    pub action_prefix: Option<String>,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    /// `success`, `failure` or `cancelled`.
    pub outcome: Option<String>,
    /// Text the summary contains (case-insensitive).
    pub text: Option<String>,
    /// Export only: `csv` or `jsonl` (default).
    pub format: Option<String>,
}

impl AuditParams {
    fn filter(&self) -> Result<AuditFilter, ServiceError> {
        let mut problems = Vec::new();
        let (from, to) = parse_range(self.from.as_deref(), self.to.as_deref()).unwrap_or_else(|p| {
            problems.extend(p);
            (None, None)
        });
        let actor_kind = match self.actor_kind.as_deref() {
            None => ActorKind::Unspecified,
            Some("user") => ActorKind::User,
            Some("api_key") => ActorKind::ApiKey,
            Some("service") => ActorKind::Service,
            Some(_) => {
                problems.push(FieldViolation::new(
                    "actor_kind",
                    "must be user, api_key or service",
                ));
                ActorKind::Unspecified
            }
        };
        if !problems.is_empty() {
            return Err(ServiceError::invalid(problems));
        }
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        Ok(AuditFilter {
            from,
            to,
            actor_kind: actor_kind as i32,
            actor_id: text(&self.actor_id),
            action_prefix: text(&self.action_prefix),
            resource_type: text(&self.resource_type),
            resource_id: text(&self.resource_id),
            outcome: text(&self.outcome),
            text: text(&self.text),
        })
    }
}

/// Field names from a service (`filter.to`, `query.from`, `page.page_size`)
/// as the query string names them (`to`, `from`, `page_size`).
pub fn unprefixed(mut err: ServiceError, prefixes: &[&str]) -> ServiceError {
    for v in &mut err.violations {
        if let Some(rest) = prefixes.iter().find_map(|p| v.field.strip_prefix(p)) {
            v.field = rest.to_owned();
        }
    }
    if let [one] = err.violations.as_slice() {
        err.message = format!("{}: {}", one.field, one.description);
    }
    err
}

const AUDIT_PREFIXES: &[&str] = &["filter.", "page."];

/// List audit entries of your org, newest first, filtered.
#[utoipa::path(
    get,
    path = "/api/v1/audit/entries",
    tag = "audit",
    params(AuditParams),
    responses(
        (status = 200, description = "A page of audit entries", body = AuditEntryListJson),
        (status = 400, description = "Invalid parameters (each named)", body = Problem, content_type = JSON_PROBLEMS),
    )
)]
pub async fn list_audit_entries(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    ApiQuery(params): ApiQuery<AuditParams>,
) -> Result<Json<AuditEntryListJson>, ServiceError> {
    if params.format.is_some() {
        return Err(bad_request("format", "is for /api/v1/audit/export"));
    }
    let request = ListAuditEntriesRequest {
        filter: Some(params.filter()?),
        page: Some(page(params.page_size, params.page_token.clone())?),
        action_prefix: String::new(),
        min_position: parse_position(params.min_position.as_deref())?,
    };
    let response = state
        .audit
        .clone()
        .list_audit_entries(outgoing(&credential, request))
        .await
        .map_err(|status| unprefixed(upstream(&status), AUDIT_PREFIXES))?
        .into_inner();
    Ok(Json(AuditEntryListJson {
        entries: response.entries.into_iter().map(Into::into).collect(),
        next_page_token: response.next_page_token,
    }))
}

const CSV_HEADER: [&str; 19] = [
    "occurred_at",
    "event_id",
    "actor_kind",
    "actor_id",
    "action",
    "resource_type",
    "resource_id",
    "outcome",
    "summary",
    "client_address",
    "user_agent",
    "correlation_id",
    "trace_id",
    "position",
    "chain",
    "chain_sequence",
    "previous_hash",
    "hash",
    "org_id",
];

/// One CSV line; every field is text a tenant may have chosen (a summary,
/// a user agent), so each is made spreadsheet-safe.
fn csv_line(fields: &[&str]) -> Vec<u8> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    let _ = writer.write_record(
        fields
            .iter()
            .map(|f| promptops_platform::spreadsheet::cell(f).into_owned()),
    );
    writer.into_inner().unwrap_or_default()
}

fn entry_csv(entry: AuditEntry, org_id: &str) -> Vec<u8> {
    let json = AuditEntryJson::from(entry);
    let chain = json.position.split(':').next().unwrap_or_default().to_owned();
    let sequence = json.chain_sequence.to_string();
    csv_line(&[
        &json.occurred_at,
        &json.event_id,
        &json.actor.kind,
        &json.actor.id,
        &json.action,
        &json.resource_type,
        &json.resource_id,
        &json.outcome,
        &json.summary,
        &json.client_address,
        &json.user_agent,
        &json.correlation_id,
        &json.trace_id,
        &json.position,
        &chain,
        &sequence,
        &json.previous_hash,
        &json.hash,
        org_id,
    ])
}

/// Export the matching entries, oldest first, as CSV or JSON Lines
/// (streamed: any size, constant memory).
#[utoipa::path(
    get,
    path = "/api/v1/audit/export",
    tag = "audit",
    params(AuditParams),
    responses(
        (status = 200, description = "The entries, one per line", body = String, content_type = "application/jsonl"),
        (status = 400, description = "Invalid parameters (each named)", body = Problem, content_type = JSON_PROBLEMS),
    )
)]
pub async fn export_audit_entries(
    State(state): State<AppState>,
    Authenticated(caller, credential): Authenticated,
    ApiQuery(params): ApiQuery<AuditParams>,
) -> Result<Response, ServiceError> {
    let csv = match params.format.as_deref() {
        None | Some("jsonl") => false,
        Some("csv") => true,
        Some(_) => return Err(bad_request("format", "must be csv or jsonl")),
    };
    if params.page_size.is_some() || params.page_token.is_some() {
        return Err(bad_request(
            "page_size",
            "an export is not paged; it streams every entry",
        ));
    }
    let request = ExportAuditEntriesRequest {
        filter: Some(params.filter()?),
        min_position: parse_position(params.min_position.as_deref())?,
    };
    let entries = state
        .audit
        .clone()
        .export_audit_entries(outgoing(&credential, request))
        .await
        .map_err(|status| unprefixed(upstream(&status), AUDIT_PREFIXES))?
        .into_inner();
    let org_id = caller.org_id.clone();
    let lines = entries.map(move |item| match item {
        Ok(entry) if csv => Ok(entry_csv(entry, &org_id)),
        Ok(entry) => {
            let mut line = serde_json::to_vec(&AuditEntryJson::from(entry)).unwrap_or_default();
            line.push(b'\n');
            Ok(line)
        }
        Err(status) => {
            // The status line has gone out: the body ends short, and says so in the log.
            tracing::warn!(code = ?status.code(), message = status.message(), "audit export cut short");
            Err(std::io::Error::other(status.message().to_owned()))
        }
    });
    let (media, extension) = if csv {
        ("text/csv; charset=utf-8", "csv")
    } else {
        ("application/jsonl", "jsonl")
    };
    let body = if csv {
        let header = futures::stream::once(async { Ok::<_, std::io::Error>(csv_line(&CSV_HEADER)) });
        Body::from_stream(header.chain(lines))
    } else {
        Body::from_stream(lines)
    };
    Ok((
        [
            (header::CONTENT_TYPE, media.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"audit.{extension}\""),
            ),
        ],
        body,
    )
        .into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RangeParams {
    /// From this time (RFC 3339, inclusive).
    pub from: Option<String>,
    /// Before this time (RFC 3339, exclusive).
    pub to: Option<String>,
    /// Report only: `json` (default) or `csv`.
    pub format: Option<String>,
}

impl RangeParams {
    fn range(&self) -> Result<TimeRange, ServiceError> {
        parse_range(self.from.as_deref(), self.to.as_deref()).map_err(ServiceError::invalid)
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChainStatusJson {
    pub chain: String,
    pub length: u64,
    pub head_hash: String,
    pub entries_checked: u64,
    pub intact: bool,
    pub last_checkpoint_sequence: u64,
    pub last_checkpoint_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditBreakJson {
    pub chain: String,
    pub chain_sequence: u64,
    pub event_id: String,
    pub reason: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VerificationJson {
    pub intact: bool,
    pub entries_checked: u64,
    pub checkpoints_checked: u64,
    pub chains: Vec<ChainStatusJson>,
    pub first_break: Option<AuditBreakJson>,
    pub signing_public_key: String,
}

impl From<VerifyAuditTrailResponse> for VerificationJson {
    fn from(v: VerifyAuditTrailResponse) -> Self {
        Self {
            intact: v.intact,
            entries_checked: v.entries_checked,
            checkpoints_checked: v.checkpoints_checked,
            chains: v
                .chains
                .into_iter()
                .map(|c| ChainStatusJson {
                    chain: c.chain,
                    length: c.length,
                    head_hash: c.head_hash,
                    entries_checked: c.entries_checked,
                    intact: c.intact,
                    last_checkpoint_sequence: c.last_checkpoint_sequence,
                    last_checkpoint_at: rfc3339(c.last_checkpoint_at.as_ref()),
                })
                .collect(),
            first_break: v.first_break.map(|b| AuditBreakJson {
                chain: b.chain,
                chain_sequence: b.chain_sequence,
                event_id: b.event_id,
                reason: b.reason,
            }),
            signing_public_key: v.signing_public_key,
        }
    }
}

/// Verify the hash chains of your org's trail (optionally over a time
/// range) against their signed checkpoints; names the first broken entry.
#[utoipa::path(
    get,
    path = "/api/v1/audit/verify",
    tag = "audit",
    params(RangeParams),
    responses(
        (status = 200, description = "The verification; `intact` false names `first_break`", body = VerificationJson),
        (status = 400, description = "Invalid range", body = Problem, content_type = JSON_PROBLEMS),
    )
)]
pub async fn verify_audit_trail(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    ApiQuery(params): ApiQuery<RangeParams>,
) -> Result<Json<VerificationJson>, ServiceError> {
    if params.format.is_some() {
        return Err(bad_request("format", "is for /api/v1/audit/report"));
    }
    let (from, to) = params.range()?;
    let response = state
        .audit
        .clone()
        .verify_audit_trail(outgoing(&credential, VerifyAuditTrailRequest { from, to }))
        .await
        .map_err(|status| upstream(&status))?
        .into_inner();
    Ok(Json(response.into()))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CountJson {
    pub key: String,
    pub count: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ActorCountJson {
    pub actor: ActorJson,
    pub count: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ComplianceReportJson {
    pub from: String,
    pub to: String,
    pub total_entries: u64,
    pub by_action: Vec<CountJson>,
    pub by_actor: Vec<ActorCountJson>,
    pub privileged: Vec<AuditEntryJson>,
    pub privileged_truncated: bool,
    pub failed_logins: u64,
    pub refresh_reuse_detected: u64,
    pub security_events: Vec<AuditEntryJson>,
    pub verification: Option<VerificationJson>,
}

impl From<ComplianceReport> for ComplianceReportJson {
    fn from(r: ComplianceReport) -> Self {
        Self {
            from: rfc3339(r.from.as_ref()),
            to: rfc3339(r.to.as_ref()),
            total_entries: r.total_entries,
            by_action: r
                .by_action
                .into_iter()
                .map(|a| CountJson {
                    key: a.action,
                    count: a.count,
                })
                .collect(),
            by_actor: r
                .by_actor
                .into_iter()
                .map(|a| ActorCountJson {
                    actor: a.actor.into(),
                    count: a.count,
                })
                .collect(),
            privileged: r.privileged.into_iter().map(Into::into).collect(),
            privileged_truncated: r.privileged_truncated,
            failed_logins: r.failed_logins,
            refresh_reuse_detected: r.refresh_reuse_detected,
            security_events: r.security_events.into_iter().map(Into::into).collect(),
            verification: r.verification.map(Into::into),
        }
    }
}

/// The report as CSV: one `section,key,value` row per figure, then the
/// privileged actions and security events as entries.
fn report_csv(report: &ComplianceReportJson) -> Vec<u8> {
    let mut out = csv_line(&["section", "key", "value"]);
    let mut row = |section: &str, key: &str, value: String| out.extend(csv_line(&[section, key, &value]));
    row("period", "from", report.from.clone());
    row("period", "to", report.to.clone());
    row("totals", "entries", report.total_entries.to_string());
    row("totals", "failed_logins", report.failed_logins.to_string());
    row(
        "totals",
        "refresh_reuse_detected",
        report.refresh_reuse_detected.to_string(),
    );
    for a in &report.by_action {
        row("by_action", &a.key, a.count.to_string());
    }
    for a in &report.by_actor {
        row(
            "by_actor",
            &format!("{}:{}", a.actor.kind, a.actor.id),
            a.count.to_string(),
        );
    }
    if let Some(v) = &report.verification {
        row("verification", "intact", v.intact.to_string());
        row("verification", "entries_checked", v.entries_checked.to_string());
        if let Some(b) = &v.first_break {
            row(
                "verification",
                "first_break",
                format!("{} #{} {}: {}", b.chain, b.chain_sequence, b.event_id, b.reason),
            );
        }
    }
    for (section, entries) in [
        ("privileged", &report.privileged),
        ("security", &report.security_events),
    ] {
        for e in entries {
            row(
                section,
                &format!("{} {}", e.occurred_at, e.action),
                format!(
                    "{}:{} {} {}: {}",
                    e.actor.kind, e.actor.id, e.resource_type, e.resource_id, e.summary
                ),
            );
        }
    }
    out
}

/// The compliance report for a period: counts by action and actor,
/// privileged actions, failed logins and refresh-token reuse, and the
/// chain's verification over the period.
#[utoipa::path(
    get,
    path = "/api/v1/audit/report",
    tag = "audit",
    params(RangeParams),
    responses(
        (status = 200, description = "The report (JSON, or CSV with format=csv)", body = ComplianceReportJson),
        (status = 400, description = "Missing or invalid range", body = Problem, content_type = JSON_PROBLEMS),
    )
)]
pub async fn compliance_report(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    ApiQuery(params): ApiQuery<RangeParams>,
) -> Result<Response, ServiceError> {
    let csv = match params.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => return Err(bad_request("format", "must be json or csv")),
    };
    let (from, to) = params.range()?;
    let report = state
        .audit
        .clone()
        .get_compliance_report(outgoing(&credential, GetComplianceReportRequest { from, to }))
        .await
        .map_err(|status| upstream(&status))?
        .into_inner();
    let report = ComplianceReportJson::from(report);
    if csv {
        Ok((
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"compliance-report.csv\"".to_owned(),
                ),
            ],
            report_csv(&report),
        )
            .into_response())
    } else {
        Ok(Json(report).into_response())
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionBody {
    /// Days to keep the org's audit entries (30–3650), or 0 for the default.
    pub audit_days: Option<u32>,
    /// Days to keep run payloads — outputs and variables in the run history
    /// (1–3650), or 0 for the default. A field not given stays as it is.
    pub run_payload_days: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RetentionSetJson {
    /// Pass as `min_position` to read the policy back.
    pub position: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PrunedJson {
    pub chain: String,
    /// Entries up to this sequence were pruned behind a signed checkpoint.
    pub through: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RetentionJson {
    pub audit_days: u32,
    pub default_audit_days: u32,
    pub is_default: bool,
    pub pruned: Vec<PrunedJson>,
    pub run_payload_days: u32,
    pub default_run_payload_days: u32,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RetentionParams {
    pub min_position: Option<String>,
}

/// Set how long your org's audit entries (older ones are pruned behind a
/// signed checkpoint, so the chain stays verifiable) and run payloads are kept.
#[utoipa::path(put, path = "/api/v1/audit/retention", tag = "audit", request_body = RetentionBody,
    responses(
        (status = 200, description = "Set", body = RetentionSetJson),
        (status = 400, description = "Out of range", body = Problem, content_type = JSON_PROBLEMS),
        (status = 403, description = "Needs settings:manage", body = Problem, content_type = JSON_PROBLEMS),
    ))]
pub async fn set_retention(
    State(state): State<AppState>,
    Authenticated(principal, _credential): Authenticated,
    ApiJson(body): ApiJson<RetentionBody>,
) -> Result<Json<RetentionSetJson>, ServiceError> {
    if body.audit_days.is_none() && body.run_payload_days.is_none() {
        return Err(bad_request(
            "audit_days",
            "give audit_days, run_payload_days or both",
        ));
    }
    let sequence = state
        .identity
        .set_retention(&principal, body.audit_days, body.run_payload_days)
        .await?;
    let position =
        promptops_platform::read_your_write::position(promptops_eventlog::Context::Identity, sequence);
    Ok(Json(RetentionSetJson {
        position: format_position(&position),
    }))
}

/// Your org's retention policy and how far each audit chain has been pruned.
#[utoipa::path(get, path = "/api/v1/audit/retention", tag = "audit", params(RetentionParams),
    responses(
        (status = 200, description = "The policy", body = RetentionJson),
        (status = 403, description = "Needs audit:read", body = Problem, content_type = JSON_PROBLEMS),
    ))]
pub async fn get_retention(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    ApiQuery(params): ApiQuery<RetentionParams>,
) -> Result<Json<RetentionJson>, ServiceError> {
    let request = GetRetentionPolicyRequest {
        min_position: parse_position(params.min_position.as_deref())?,
    };
    let policy = state
        .audit
        .clone()
        .get_retention_policy(outgoing(&credential, request))
        .await
        .map_err(|status| upstream(&status))?
        .into_inner();
    Ok(Json(RetentionJson {
        audit_days: policy.audit_days,
        default_audit_days: policy.default_audit_days,
        run_payload_days: policy.run_payload_days,
        default_run_payload_days: policy.default_run_payload_days,
        is_default: policy.is_default,
        pruned: policy
            .pruned
            .into_iter()
            .map(|p| PrunedJson {
                chain: p.chain,
                through: p.through,
            })
            .collect(),
    }))
}
