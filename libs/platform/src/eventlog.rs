//! Opens the event log named by the configuration.
//!
//! In one process every service shares one embedded log per file (one pool,
//! one wake-up signal), so a projection sees an append at once instead of at
//! its next poll.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use promptops_eventlog::embedded::EmbeddedLog;
use promptops_eventlog::jetstream::{JetStreamLog, JetStreamOptions};
use promptops_eventlog::{EventLog, StoreError};

use crate::config::EventLogConfig;

/// Embedded logs opened by this process, by file. The async mutex is held
/// across the open so two services starting together open the file once.
static EMBEDDED: OnceLock<tokio::sync::Mutex<HashMap<PathBuf, EmbeddedLog>>> = OnceLock::new();

pub async fn open(config: &EventLogConfig) -> Result<EventLog, StoreError> {
    match config {
        EventLogConfig::JetStream { url, replicas } => {
            let options = JetStreamOptions {
                replicas: *replicas,
                ..JetStreamOptions::default()
            };
            Ok(EventLog::JetStream(Box::new(
                JetStreamLog::connect(url, &options).await?,
            )))
        }
        EventLogConfig::Embedded { path } => {
            let key = std::path::absolute(path).unwrap_or_else(|_| path.clone());
            let mut logs = EMBEDDED.get_or_init(Default::default).lock().await;
            if let Some(log) = logs.get(&key) {
                return Ok(EventLog::Embedded(log.clone()));
            }
            let log = EmbeddedLog::open(&key).await?;
            logs.insert(key, log.clone());
            Ok(EventLog::Embedded(log))
        }
    }
}
