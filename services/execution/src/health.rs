//! Health checks of every configured model, every
//! `PROMPTOPS_MODEL_HEALTH_CHECK_SECS` (default 300): a cheap call to each
//! provider (its model list, no tokens spent) per model, the result kept per
//! org and model, shown in `ListModels` and as `promptops_model_up{model}`
//! and `promptops_model_health_check_seconds{model}`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use promptops_proto::execution::v1::ModelHealth;
use sqlx::AnyPool;
use tokio_util::sync::CancellationToken;

use crate::catalog::Catalogs;
use crate::models::{Backend, ModelSpec};
use crate::providers;

/// The last check of each org's models.
#[derive(Debug, Default)]
pub struct HealthBoard {
    checks: Mutex<HashMap<(String, String), ModelHealth>>,
}

impl HealthBoard {
    pub fn get(&self, org_id: &str, model: &str) -> Option<ModelHealth> {
        self.checks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(org_id.to_owned(), model.to_owned()))
            .cloned()
    }

    pub fn record(&self, org_id: &str, model: &str, health: ModelHealth) {
        self.checks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((org_id.to_owned(), model.to_owned()), health);
    }
}

/// Checks one model now and publishes the result as metrics.
pub async fn check(client: &crate::providers::ProviderClient, spec: &ModelSpec) -> ModelHealth {
    let health = probe(client, spec).await;
    publish(spec, &health);
    health
}

/// Whether the model's provider answers the cheap call (the same answer for
/// every model on one provider).
async fn probe(client: &crate::providers::ProviderClient, spec: &ModelSpec) -> ModelHealth {
    let started = Instant::now();
    let result = match &spec.backend {
        Backend::Mock(_) => Ok(()),
        Backend::Http(http) => providers::validate(client, http).await,
    };
    ModelHealth {
        healthy: result.is_ok(),
        error: result.err().unwrap_or_default(),
        latency_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        checked_at: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
    }
}

fn publish(spec: &ModelSpec, health: &ModelHealth) {
    let up = if health.healthy { 1.0 } else { 0.0 };
    metrics::gauge!("promptops_model_up", "model" => spec.id.clone()).set(up);
    metrics::histogram!("promptops_model_health_check_seconds", "model" => spec.id.clone())
        .record(Duration::from_micros(health.latency_us).as_secs_f64());
}

#[derive(Debug, Clone)]
pub struct HealthChecker {
    pub db: AnyPool,
    pub catalogs: Arc<Catalogs>,
    pub board: Arc<HealthBoard>,
    pub client: crate::providers::ProviderClient,
    pub every: Duration,
}

impl HealthChecker {
    /// Checks every org's models now and then every `every`, until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            if let Err(err) = self.check_all().await {
                tracing::warn!(error = %err, "model health checks failed; trying again later");
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(self.every) => {}
            }
        }
    }

    /// One round over every org with a catalog; returns how many models.
    pub async fn check_all(&self) -> Result<usize, String> {
        let orgs: Vec<String> = sqlx::query_scalar("SELECT org_id FROM catalog_orgs ORDER BY org_id")
            .fetch_all(&self.db)
            .await
            .map_err(|e| e.to_string())?;
        let mut checked = 0;
        for org_id in orgs {
            let catalog = self.catalogs.org(&org_id).await.map_err(|e| e.message)?;
            // One call per provider, however many of its models the org has.
            let mut by_provider: HashMap<&str, ModelHealth> = HashMap::new();
            for spec in catalog.models.values() {
                let health = match by_provider.get(spec.provider()) {
                    Some(health) => health.clone(),
                    None => {
                        let health = probe(&self.client, spec).await;
                        by_provider.insert(spec.provider(), health.clone());
                        health
                    }
                };
                publish(spec, &health);
                if !health.healthy {
                    tracing::warn!(org = %org_id, model = %spec.id, error = %health.error, "model unhealthy");
                }
                self.board.record(&org_id, &spec.id, health);
                checked += 1;
            }
        }
        Ok(checked)
    }
}
