//! Traces leave the process over OTLP and one trace spans the whole slice:
//! HTTP request at the gateway → gRPC call to prompts → projection applying
//! the event (the trace context travels in gRPC metadata and in the event).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests: a panic is a failed assertion"
)]

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use promptops_e2e::{AllInOne, signup};
use serde_json::json;

/// A span as the collector keeps it: (trace id, name).
type SpanSeen = (Vec<u8>, String);

/// A minimal OTLP/gRPC collector that keeps the spans it receives.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<SpanSeen>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                for span in scope.spans {
                    spans.push((span.trace_id, span.name));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tokio::test]
async fn one_trace_spans_gateway_service_and_projection_over_otlp() {
    let collector = Collector::default();
    let port = promptops_testkit::free_port().unwrap();
    let server = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(collector.clone()))
        .serve(format!("127.0.0.1:{port}").parse().unwrap());
    let endpoint = format!("http://127.0.0.1:{port}");
    let test = async {
        let all = AllInOne::start_with(&[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())]).await;
        let (token, _) = signup(&all.http(), "ada@traced.test").await;
        let created = reqwest::Client::new()
            .post(format!("{}/api/v1/prompts", all.http()))
            .bearer_auth(&token)
            .json(&json!({"name": "traced", "template": "t"}))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);

        // The batch exporter sends every few seconds.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let spans = collector.spans.lock().unwrap().clone();
            let root = spans.iter().find(|(_, name)| name == "POST /api/v1/prompts");
            if let Some((trace, _)) = root {
                let names: BTreeSet<&str> = spans
                    .iter()
                    .filter(|(t, _)| t == trace)
                    .map(|(_, n)| n.as_str())
                    .collect();
                if names.contains("/promptops.prompts.v1.PromptService/CreatePrompt")
                    && names.contains("projection.apply")
                {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "spans seen: {spans:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::select! {
        result = server => panic!("collector stopped: {result:?}"),
        () = test => {}
    }
}
