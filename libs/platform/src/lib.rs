//! Service plumbing, written once and shared by every promptops service:
//!
//! - [`config`]: configuration from environment variables, validated at
//!   start with errors that name the variable;
//! - [`telemetry`]: JSON logs, W3C trace context, OTLP export when
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` is set;
//! - [`metrics`]: the Prometheus recorder behind every `/metrics`;
//! - [`server`]: one port per service serving gRPC (with health and
//!   reflection) and `/healthz`, `/readyz`, `/metrics`, with request spans,
//!   request metrics and graceful shutdown;
//! - [`errors`]: the one table pairing error classes with HTTP statuses and
//!   gRPC codes, and problem JSON;
//! - [`db`]: the service's SQL database (PostgreSQL schema or SQLite file)
//!   and its migrations;
//! - [`caller`]: who is calling, taken from request metadata;
//! - [`eventlog`]: opening the event log the configuration names;
//! - [`upstream`]: a client's connection to another service, in process when
//!   that service is served by this process.

pub mod authn;
pub mod caller;
pub mod config;
pub mod db;
pub mod egress;
pub mod errors;
pub mod eventlog;
pub mod metrics;
pub mod paging;
pub mod query;
pub mod read_your_write;
pub mod revocation;
pub mod runtime;
pub mod server;
pub mod shutdown;
pub mod spreadsheet;
pub mod telemetry;
pub mod upstream;
