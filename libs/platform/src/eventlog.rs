//! Opens the event log named by the configuration.
//!
//! In one process every service shares one embedded log per file (one pool,
//! one wake-up signal), so a projection sees an append at once instead of at
//! its next poll.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use promptops_eventlog::embedded::EmbeddedLog;
use promptops_eventlog::jetstream::{JetStreamLog, JetStreamOptions};
use promptops_eventlog::{EventLog, StoreError};

use crate::config::EventLogConfig;

static EMBEDDED: OnceLock<Mutex<HashMap<PathBuf, EmbeddedLog>>> = OnceLock::new();

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
            let shared = EMBEDDED.get_or_init(Default::default);
            let existing = shared.lock().ok().and_then(|logs| logs.get(&key).cloned());
            if let Some(log) = existing {
                return Ok(EventLog::Embedded(log));
            }
            let log = EmbeddedLog::open(&key).await?;
            if let Ok(mut logs) = shared.lock() {
                // Two services racing here: keep the first, drop ours.
                let log = logs.entry(key).or_insert(log).clone();
                return Ok(EventLog::Embedded(log));
            }
            Ok(EventLog::Embedded(log))
        }
    }
}
