//! The org's model catalog: its providers (address, kind, sealed key) and
//! its models on them, as one event-sourced aggregate per org
//! (`evt.execution.<org>.catalog.org`), plus [`Catalogs`]: the per-replica
//! cache that resolves a model id to a runnable [`ModelSpec`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use promptops_eventlog::aggregate::{Aggregate, ExecuteError, execute, load};
use promptops_eventlog::{AggregateRef, Context, EventDraft, EventEnvelope, EventLog, EventMetadata};
use promptops_platform::errors::{ErrorClass, FieldViolation, ServiceError};
use promptops_proto::common::v1::TokenPrices;
use promptops_proto::execution::v1::{
    DataKeyCreated, ModelRemoved, ModelSet, Provider, ProviderKind, ProviderRemoved, ProviderSet,
};
use prost::Message as _;

use crate::models::{self, ApiFormat, Backend, CallLimits, HttpBackend, ModelSpec};
use crate::secrets::{Key256, Secret};
use crate::tokens::Tokenizer;

pub const AGGREGATE_TYPE: &str = "catalog";
pub const AGGREGATE_ID: &str = "org";
const DATA_KEY_CREATED: &str = "promptops.execution.v1.DataKeyCreated";
const PROVIDER_SET: &str = "promptops.execution.v1.ProviderSet";
const PROVIDER_REMOVED: &str = "promptops.execution.v1.ProviderRemoved";
const MODEL_SET: &str = "promptops.execution.v1.ModelSet";
const MODEL_REMOVED: &str = "promptops.execution.v1.ModelRemoved";

#[derive(Debug, Clone, Default, PartialEq)]
pub struct CatalogState {
    pub wrapped_data_key: Option<Vec<u8>>,
    pub providers: BTreeMap<String, ProviderSet>,
    pub models: BTreeMap<String, ModelSet>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CatalogEvent {
    DataKeyCreated(DataKeyCreated),
    ProviderSet(ProviderSet),
    ProviderRemoved(ProviderRemoved),
    ModelSet(ModelSet),
    ModelRemoved(ModelRemoved),
}

#[derive(Debug, Clone, PartialEq)]
pub enum CatalogCommand {
    /// `new_data_key`: the wrapped key to create with it, when the org has none.
    SetProvider {
        provider: ProviderSet,
        new_data_key: Option<Vec<u8>>,
    },
    RemoveProvider(String),
    SetModel(ModelSet),
    RemoveModel(String),
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CatalogError {
    #[error("invalid")]
    Invalid(Vec<FieldViolation>),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    InUse(String),
    /// Another writer created the org's data key first: seal again.
    #[error("the org's data key changed")]
    DataKeyChanged,
}

fn valid_provider_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !["mock", "prompt"].contains(&name)
}

pub fn decide(state: &CatalogState, command: CatalogCommand) -> Result<Vec<CatalogEvent>, CatalogError> {
    match command {
        CatalogCommand::SetProvider {
            provider,
            new_data_key,
        } => {
            let mut violations = Vec::new();
            if !valid_provider_name(&provider.name) {
                violations.push(FieldViolation::new(
                    "name",
                    "1-32 characters of a-z, 0-9 and -; not mock or prompt",
                ));
            }
            if ProviderKind::try_from(provider.kind).unwrap_or(ProviderKind::Unspecified)
                == ProviderKind::Unspecified
            {
                violations.push(FieldViolation::new(
                    "kind",
                    "must be openai, anthropic or openai_compatible",
                ));
            }
            let url_ok = (provider.base_url.starts_with("https://")
                || provider.base_url.starts_with("http://"))
                && provider.base_url.len() <= 500
                && !provider.base_url.chars().any(char::is_whitespace);
            if !url_ok {
                violations.push(FieldViolation::new(
                    "base_url",
                    "an http(s) URL, e.g. https://api.openai.com/v1",
                ));
            }
            if let Some(limits) = &provider.limits {
                violations.extend(CallLimits::violations(limits));
            }
            if !violations.is_empty() {
                return Err(CatalogError::Invalid(violations));
            }
            let mut events = Vec::new();
            match (&state.wrapped_data_key, new_data_key) {
                (Some(_), Some(_)) => return Err(CatalogError::DataKeyChanged),
                (None, Some(wrapped_key)) => {
                    events.push(CatalogEvent::DataKeyCreated(DataKeyCreated { wrapped_key }))
                }
                (None, None) if !provider.sealed_credential.is_empty() => {
                    return Err(CatalogError::DataKeyChanged);
                }
                _ => {}
            }
            if state.providers.get(&provider.name) != Some(&provider) {
                events.push(CatalogEvent::ProviderSet(provider));
            }
            Ok(events)
        }
        CatalogCommand::RemoveProvider(name) => {
            if !state.providers.contains_key(&name) {
                return Err(CatalogError::NotFound(format!("no provider {name:?}")));
            }
            let prefix = format!("{name}/");
            if let Some(model) = state.models.keys().find(|id| id.starts_with(&prefix)) {
                return Err(CatalogError::InUse(format!(
                    "provider {name:?} still has models (e.g. {model}); remove them first"
                )));
            }
            Ok(vec![CatalogEvent::ProviderRemoved(ProviderRemoved { name })])
        }
        CatalogCommand::SetModel(model) => {
            let mut violations = Vec::new();
            let provider = model.id.split_once('/').map(|(p, _)| p).unwrap_or_default();
            let name_ok = model.id.split_once('/').is_some_and(|(_, n)| {
                !n.is_empty() && n.len() <= 200 && !n.chars().any(|c| c.is_whitespace() || c.is_control())
            });
            if !name_ok {
                violations.push(FieldViolation::new("id", "must be <provider>/<name>"));
            } else if !state.providers.contains_key(provider) {
                violations.push(FieldViolation::new(
                    "id",
                    format!("no provider {provider:?}: add it first (PUT /api/v1/providers/{provider})"),
                ));
            }
            if model.upstream_model.is_empty() || model.upstream_model.len() > 200 {
                violations.push(FieldViolation::new("upstream_model", "1-200 characters"));
            }
            if model.context_window == 0 {
                violations.push(FieldViolation::new("context_window", "must be at least 1"));
            }
            if model.embeddings {
                if model.max_output_tokens != 0 {
                    violations.push(FieldViolation::new(
                        "max_output_tokens",
                        "must be 0 for an embedding model (it writes no text)",
                    ));
                }
            } else if model.max_output_tokens == 0 || model.max_output_tokens > model.context_window {
                violations.push(FieldViolation::new(
                    "max_output_tokens",
                    "must be between 1 and the context window",
                ));
            }
            for (field, price) in [
                ("input_price_per_mtok", model.input_price_per_mtok),
                ("output_price_per_mtok", model.output_price_per_mtok),
                ("cached_input_price_per_mtok", model.cached_input_price_per_mtok),
            ] {
                if price < 0 {
                    violations.push(FieldViolation::new(field, "must not be negative"));
                }
            }
            if !violations.is_empty() {
                return Err(CatalogError::Invalid(violations));
            }
            if state.models.get(&model.id) == Some(&model) {
                return Ok(Vec::new());
            }
            Ok(vec![CatalogEvent::ModelSet(model)])
        }
        CatalogCommand::RemoveModel(id) => {
            if !state.models.contains_key(&id) {
                return Err(CatalogError::NotFound(format!("no model {id:?}")));
            }
            Ok(vec![CatalogEvent::ModelRemoved(ModelRemoved { id })])
        }
    }
}

pub fn evolve(mut state: CatalogState, event: &CatalogEvent) -> CatalogState {
    match event {
        CatalogEvent::DataKeyCreated(e) => state.wrapped_data_key = Some(e.wrapped_key.clone()),
        CatalogEvent::ProviderSet(e) => {
            state.providers.insert(e.name.clone(), e.clone());
        }
        CatalogEvent::ProviderRemoved(e) => {
            state.providers.remove(&e.name);
        }
        CatalogEvent::ModelSet(e) => {
            state.models.insert(e.id.clone(), e.clone());
        }
        CatalogEvent::ModelRemoved(e) => {
            state.models.remove(&e.id);
        }
    }
    state
}

/// The catalog aggregate, for the shared executor.
#[derive(Debug)]
pub struct Catalog;

impl Aggregate for Catalog {
    type State = CatalogState;
    type Event = CatalogEvent;
    type Command = CatalogCommand;
    type Error = CatalogError;
    const TYPE: &'static str = AGGREGATE_TYPE;

    fn decide(state: &CatalogState, command: CatalogCommand) -> Result<Vec<CatalogEvent>, CatalogError> {
        decide(state, command)
    }
    fn evolve(state: CatalogState, event: &CatalogEvent) -> CatalogState {
        evolve(state, event)
    }
    fn encode(event: &CatalogEvent) -> EventDraft {
        match event {
            CatalogEvent::DataKeyCreated(e) => EventDraft::new(DATA_KEY_CREATED, e.encode_to_vec()),
            CatalogEvent::ProviderSet(e) => EventDraft::new(PROVIDER_SET, e.encode_to_vec()),
            CatalogEvent::ProviderRemoved(e) => EventDraft::new(PROVIDER_REMOVED, e.encode_to_vec()),
            CatalogEvent::ModelSet(e) => EventDraft::new(MODEL_SET, e.encode_to_vec()),
            CatalogEvent::ModelRemoved(e) => EventDraft::new(MODEL_REMOVED, e.encode_to_vec()),
        }
    }
    fn decode(envelope: &EventEnvelope) -> Option<CatalogEvent> {
        let payload = envelope.payload.as_slice();
        match envelope.event_type.as_str() {
            DATA_KEY_CREATED => DataKeyCreated::decode(payload)
                .ok()
                .map(CatalogEvent::DataKeyCreated),
            PROVIDER_SET => ProviderSet::decode(payload).ok().map(CatalogEvent::ProviderSet),
            PROVIDER_REMOVED => ProviderRemoved::decode(payload)
                .ok()
                .map(CatalogEvent::ProviderRemoved),
            MODEL_SET => ModelSet::decode(payload).ok().map(CatalogEvent::ModelSet),
            MODEL_REMOVED => ModelRemoved::decode(payload).ok().map(CatalogEvent::ModelRemoved),
            _ => None,
        }
    }
}

pub fn provider_message(p: &ProviderSet) -> Provider {
    Provider {
        name: p.name.clone(),
        kind: p.kind,
        base_url: p.base_url.clone(),
        has_credential: !p.sealed_credential.is_empty(),
        credential_hint: p.credential_hint.clone(),
        limits: Some(CallLimits::from_proto(p.limits.as_ref()).to_proto()),
    }
}

fn format_of(kind: i32) -> ApiFormat {
    match ProviderKind::try_from(kind).unwrap_or(ProviderKind::Unspecified) {
        ProviderKind::Anthropic => ApiFormat::Anthropic,
        _ => ApiFormat::OpenAi,
    }
}

/// One org's catalog as this replica holds it.
#[derive(Debug, Clone)]
pub struct OrgCatalog {
    pub state: CatalogState,
    pub models: BTreeMap<String, Arc<ModelSpec>>,
}

/// Every org's catalog, cached (2 s, and dropped at once after a change made
/// here), with the master key that opens the credentials.
#[derive(Debug)]
pub struct Catalogs {
    log: EventLog,
    master: Key256,
    cache: moka::future::Cache<String, Arc<OrgCatalog>>,
}

fn store(err: impl std::fmt::Display) -> ServiceError {
    ServiceError::unavailable("the event log", err)
}

impl Catalogs {
    pub fn new(log: EventLog, master: Key256) -> Self {
        Self {
            log,
            master,
            cache: moka::future::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(2))
                .build(),
        }
    }

    fn aggregate(org_id: &str) -> Result<AggregateRef, ServiceError> {
        AggregateRef::new(Context::Execution, org_id, AGGREGATE_TYPE, AGGREGATE_ID)
            .map_err(|e| ServiceError::new(ErrorClass::Internal, e.to_string()))
    }

    /// The org's catalog, its models resolved (credentials opened).
    pub async fn org(&self, org_id: &str) -> Result<Arc<OrgCatalog>, ServiceError> {
        if let Some(hit) = self.cache.get(org_id).await {
            return Ok(hit);
        }
        let state = load::<Catalog>(&self.log, &Self::aggregate(org_id)?)
            .await
            .map_err(store)?
            .state;
        let data_key = match &state.wrapped_data_key {
            Some(wrapped) => Some(self.master.unwrap_key(wrapped).map_err(|e| {
                ServiceError::new(
                    ErrorClass::Internal,
                    format!("the org's data key cannot be opened with this master key: {e}"),
                )
            })?),
            None => None,
        };
        Tokenizer::load_tables_for(state.models.values().map(|m| m.upstream_model.as_str())).await;
        let mut models = BTreeMap::new();
        for (id, model) in &state.models {
            let provider_name = id.split_once('/').map(|(p, _)| p).unwrap_or_default();
            let Some(provider) = state.providers.get(provider_name) else {
                continue;
            };
            let api_key = match (&data_key, provider.sealed_credential.is_empty()) {
                (_, true) | (None, _) => None,
                (Some(key), false) => {
                    let plain = key.open(&provider.sealed_credential).map_err(|e| {
                        ServiceError::new(ErrorClass::Internal, format!("provider {provider_name}: {e}"))
                    })?;
                    Some(Secret::new(String::from_utf8_lossy(&plain).into_owned()))
                }
            };
            models.insert(
                id.clone(),
                Arc::new(ModelSpec {
                    id: id.clone(),
                    description: format!("{} on {}", model.upstream_model, provider.base_url),
                    context_window: model.context_window,
                    max_output_tokens: model.max_output_tokens,
                    prices: TokenPrices {
                        input_per_mtok: model.input_price_per_mtok,
                        output_per_mtok: model.output_price_per_mtok,
                        cached_input_per_mtok: model.cached_input_price_per_mtok,
                        cache_write_per_mtok: 0,
                    },
                    backend: Backend::Http(HttpBackend {
                        format: format_of(provider.kind),
                        base_url: provider.base_url.clone(),
                        upstream_model: model.upstream_model.clone(),
                        api_key,
                    }),
                    limits: CallLimits::from_proto(provider.limits.as_ref()),
                    tokenizer: Tokenizer::for_upstream_model(&model.upstream_model),
                    embeddings: model.embeddings,
                }),
            );
        }
        let catalog = Arc::new(OrgCatalog { state, models });
        self.cache.insert(org_id.to_owned(), catalog.clone()).await;
        Ok(catalog)
    }

    /// The model `id` for `org_id`: built in, or from the org's catalog.
    pub async fn resolve(&self, org_id: &str, id: &str) -> Result<Option<Arc<ModelSpec>>, ServiceError> {
        if let Some(builtin) = models::find(id) {
            return Ok(Some(builtin.clone()));
        }
        Ok(self.org(org_id).await?.models.get(id).cloned())
    }

    /// Runs a catalog command; the org's cached catalog is dropped.
    pub async fn execute(
        &self,
        org_id: &str,
        command: CatalogCommand,
        metadata: &EventMetadata,
    ) -> Result<CatalogState, ExecuteError<CatalogError>> {
        let aggregate = Self::aggregate(org_id).map_err(|e| ExecuteError::Invalid(e.to_string()))?;
        let result = execute::<Catalog>(&self.log, &aggregate, command, metadata).await;
        self.cache.invalidate(org_id).await;
        result.map(|done| done.state)
    }

    /// Seals `api_key` for `org_id`: with its data key, or with a new one
    /// (returned wrapped, to be created with the provider).
    pub async fn seal(
        &self,
        org_id: &str,
        api_key: &str,
    ) -> Result<(Vec<u8>, Option<Vec<u8>>), ServiceError> {
        let state = load::<Catalog>(&self.log, &Self::aggregate(org_id)?)
            .await
            .map_err(store)?
            .state;
        match &state.wrapped_data_key {
            Some(wrapped) => {
                let key = self
                    .master
                    .unwrap_key(wrapped)
                    .map_err(|e| ServiceError::new(ErrorClass::Internal, e.to_string()))?;
                Ok((key.seal(api_key.as_bytes()), None))
            }
            None => {
                let key = Key256::generate();
                Ok((key.seal(api_key.as_bytes()), Some(self.master.wrap(&key))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(name: &str) -> ProviderSet {
        ProviderSet {
            name: name.into(),
            kind: ProviderKind::OpenaiCompatible as i32,
            base_url: "http://localhost:8090/v1".into(),
            ..Default::default()
        }
    }

    fn model(id: &str) -> ModelSet {
        ModelSet {
            id: id.into(),
            upstream_model: "echo".into(),
            context_window: 8000,
            max_output_tokens: 1000,
            input_price_per_mtok: 100,
            ..Default::default()
        }
    }

    fn apply(state: CatalogState, command: CatalogCommand) -> Result<CatalogState, CatalogError> {
        Ok(decide(&state, command)?.iter().fold(state, evolve))
    }

    #[test]
    fn providers_then_models_then_removal_in_order() {
        let state = apply(
            CatalogState::default(),
            CatalogCommand::SetProvider {
                provider: provider("local"),
                new_data_key: None,
            },
        )
        .unwrap();
        let state = apply(state, CatalogCommand::SetModel(model("local/echo"))).unwrap();
        assert_eq!(
            decide(&state, CatalogCommand::RemoveProvider("local".into())).unwrap_err(),
            CatalogError::InUse(
                "provider \"local\" still has models (e.g. local/echo); remove them first".into()
            )
        );
        let state = apply(state, CatalogCommand::RemoveModel("local/echo".into())).unwrap();
        let state = apply(state, CatalogCommand::RemoveProvider("local".into())).unwrap();
        assert!(state.providers.is_empty());
    }

    #[test]
    fn bad_input_names_each_field() {
        let mut bad = provider("Mock");
        bad.kind = 0;
        bad.base_url = "ftp://x".into();
        let Err(CatalogError::Invalid(v)) = decide(
            &CatalogState::default(),
            CatalogCommand::SetProvider {
                provider: bad,
                new_data_key: None,
            },
        ) else {
            panic!("expected Invalid");
        };
        let fields: Vec<&str> = v.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["name", "kind", "base_url"]);
        let mut negative = model("nobody/x");
        negative.output_price_per_mtok = -1;
        negative.max_output_tokens = 9000;
        let Err(CatalogError::Invalid(v)) =
            decide(&CatalogState::default(), CatalogCommand::SetModel(negative))
        else {
            panic!("expected Invalid");
        };
        let fields: Vec<&str> = v.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["id", "max_output_tokens", "output_price_per_mtok"]);
    }

    #[test]
    fn a_data_key_is_created_once() {
        let mut with_key = provider("openai");
        with_key.sealed_credential = vec![1, 2, 3];
        let events = decide(
            &CatalogState::default(),
            CatalogCommand::SetProvider {
                provider: with_key.clone(),
                new_data_key: Some(vec![9]),
            },
        )
        .unwrap();
        assert!(matches!(events[0], CatalogEvent::DataKeyCreated(_)));
        let state = events.iter().fold(CatalogState::default(), evolve);
        // A second writer that also made a key must seal again.
        assert_eq!(
            decide(
                &state,
                CatalogCommand::SetProvider {
                    provider: with_key,
                    new_data_key: Some(vec![8]),
                },
            )
            .unwrap_err(),
            CatalogError::DataKeyChanged
        );
    }
}
