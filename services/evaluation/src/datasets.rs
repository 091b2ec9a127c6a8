//! The `dataset` aggregate (`evt.evaluation.<org>.dataset.<id>`): a named
//! collection of test cases in immutable, numbered versions. Pure.
//!
//! A version's cases are written in chunks (`DatasetCasesStaged`, each at
//! most [`CHUNK_BYTES`] so that no event nears the log's message limit) and
//! committed by `DatasetVersionAdded`. Chunks without a commit — a writer
//! that died half-way — are dropped by the next version's first chunk and
//! never read.
//!
//! The dataset's id is derived from the org and the name, so two datasets
//! of one org never share a name, whichever replica creates them.

use promptops_eventlog::aggregate::Aggregate;
use promptops_eventlog::{EventDraft, EventEnvelope, RecordedEvent};
use promptops_proto::evaluation::v1::{
    DatasetCase, DatasetCasesStaged, DatasetCasesStagedHeader, DatasetCreated, DatasetVersionAdded,
};
use prost::Message as _;
use sha2::{Digest, Sha256};

use crate::dataset::Case;

pub const AGGREGATE_TYPE: &str = "dataset";
pub const CREATED: &str = "promptops.evaluation.v1.DatasetCreated";
pub const CASES_STAGED: &str = "promptops.evaluation.v1.DatasetCasesStaged";
pub const VERSION_ADDED: &str = "promptops.evaluation.v1.DatasetVersionAdded";

/// A chunk of cases, at most, encoded.
pub const CHUNK_BYTES: usize = 256 * 1024;
/// Name, at most, in characters.
pub const MAX_NAME_CHARS: usize = 100;
pub const MAX_DESCRIPTION_CHARS: usize = 2_000;
/// Versions of one dataset, at most.
pub const MAX_VERSIONS: u64 = 1_000;

/// The dataset id for a name: a UUID (version 8) from the org and the name.
pub fn dataset_id(org_id: &str, name: &str) -> String {
    let digest = Sha256::digest(format!("promptops.dataset\0{org_id}\0{name}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid().to_string()
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct DatasetState {
    pub created: Option<DatasetCreated>,
    pub versions: Vec<DatasetVersionAdded>,
    /// Chunks of the version being written (not yet committed).
    staged: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DatasetEvent {
    Created(DatasetCreated),
    CasesStaged(DatasetCasesStaged),
    VersionAdded(DatasetVersionAdded),
}

#[derive(Debug, Clone, PartialEq)]
pub enum DatasetCommand {
    Create {
        dataset_id: String,
        name: String,
        description: String,
    },
    AddVersion {
        cases: Vec<Case>,
        /// What the cases came from: `csv`, `jsonl` or `runs`.
        source: &'static str,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DatasetError {
    #[error("no such dataset")]
    NotFound,
    #[error("a dataset with this name exists already")]
    Exists,
    #[error("the dataset has {MAX_VERSIONS} versions, the most it may have")]
    Full,
    #[error("a version needs at least one case")]
    Empty,
}

pub fn to_proto(case: Case) -> DatasetCase {
    DatasetCase {
        id: case.id,
        variables: case.variables.into_iter().collect(),
        expected: case.expected,
        metadata: case.metadata.into_iter().collect(),
    }
}

pub fn from_proto(case: &DatasetCase) -> Case {
    Case {
        id: case.id.clone(),
        variables: case
            .variables
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        expected: case.expected.clone(),
        metadata: case
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

pub fn decide(state: &DatasetState, command: DatasetCommand) -> Result<Vec<DatasetEvent>, DatasetError> {
    match command {
        DatasetCommand::Create {
            dataset_id,
            name,
            description,
        } => {
            if state.created.is_some() {
                return Err(DatasetError::Exists);
            }
            Ok(vec![DatasetEvent::Created(DatasetCreated {
                dataset_id,
                name,
                description,
            })])
        }
        DatasetCommand::AddVersion { cases, source } => {
            let created = state.created.as_ref().ok_or(DatasetError::NotFound)?;
            if cases.is_empty() {
                return Err(DatasetError::Empty);
            }
            let number = state.versions.len() as u64 + 1;
            if number > MAX_VERSIONS {
                return Err(DatasetError::Full);
            }
            let mut variables: Vec<String> = cases
                .iter()
                .flat_map(|c| c.variables.keys().cloned())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            variables.truncate(1_000);
            let case_count = cases.len() as u64;
            let mut events = Vec::new();
            let mut chunk = Vec::new();
            let mut chunk_bytes = 0;
            for case in cases {
                let case = to_proto(case);
                let size = case.encoded_len() + 8;
                if !chunk.is_empty() && chunk_bytes + size > CHUNK_BYTES {
                    events.push(staged(
                        &created.dataset_id,
                        number,
                        events.len(),
                        std::mem::take(&mut chunk),
                    ));
                    chunk_bytes = 0;
                }
                chunk_bytes += size;
                chunk.push(case);
            }
            events.push(staged(&created.dataset_id, number, events.len(), chunk));
            events.push(DatasetEvent::VersionAdded(DatasetVersionAdded {
                dataset_id: created.dataset_id.clone(),
                version: number,
                chunks: u32::try_from(events.len()).unwrap_or(u32::MAX),
                case_count,
                variables,
                source_format: source.to_owned(),
            }));
            Ok(events)
        }
    }
}

fn staged(dataset_id: &str, version: u64, chunk: usize, cases: Vec<DatasetCase>) -> DatasetEvent {
    DatasetEvent::CasesStaged(DatasetCasesStaged {
        dataset_id: dataset_id.to_owned(),
        version,
        chunk: u32::try_from(chunk).unwrap_or(u32::MAX),
        cases,
    })
}

pub fn evolve(mut state: DatasetState, event: &DatasetEvent) -> DatasetState {
    match event {
        DatasetEvent::Created(e) => state.created = Some(e.clone()),
        DatasetEvent::CasesStaged(e) => state.staged = if e.chunk == 0 { 1 } else { state.staged + 1 },
        DatasetEvent::VersionAdded(e) => {
            if e.chunks == state.staged && e.version == state.versions.len() as u64 + 1 {
                state.versions.push(e.clone());
            }
            state.staged = 0;
        }
    }
    state
}

/// The cases of committed version `version`, read from the aggregate's
/// recorded events (only that version's cases are kept in memory).
pub fn cases_of(events: &[RecordedEvent], version: u64) -> Option<Vec<DatasetCase>> {
    let mut pending: Vec<DatasetCase> = Vec::new();
    let mut chunks = 0u32;
    for recorded in events {
        let envelope = &recorded.envelope;
        match envelope.event_type.as_str() {
            CASES_STAGED => {
                let staged = DatasetCasesStaged::decode(envelope.payload.as_slice()).ok()?;
                if staged.chunk == 0 {
                    pending.clear();
                    chunks = 0;
                }
                if staged.version == version {
                    pending.extend(staged.cases);
                }
                chunks += 1;
            }
            VERSION_ADDED => {
                let added = DatasetVersionAdded::decode(envelope.payload.as_slice()).ok()?;
                if added.version == version && added.chunks == chunks {
                    return Some(pending);
                }
                pending.clear();
                chunks = 0;
            }
            _ => {}
        }
    }
    None
}

#[derive(Debug)]
pub struct Dataset;

impl Aggregate for Dataset {
    type State = DatasetState;
    type Event = DatasetEvent;
    type Command = DatasetCommand;
    type Error = DatasetError;
    const TYPE: &'static str = AGGREGATE_TYPE;

    fn decide(state: &DatasetState, command: DatasetCommand) -> Result<Vec<DatasetEvent>, DatasetError> {
        decide(state, command)
    }

    fn evolve(state: DatasetState, event: &DatasetEvent) -> DatasetState {
        evolve(state, event)
    }

    fn encode(event: &DatasetEvent) -> EventDraft {
        match event {
            DatasetEvent::Created(e) => EventDraft::new(CREATED, e.encode_to_vec()),
            DatasetEvent::CasesStaged(e) => EventDraft::new(CASES_STAGED, e.encode_to_vec()),
            DatasetEvent::VersionAdded(e) => EventDraft::new(VERSION_ADDED, e.encode_to_vec()),
        }
    }

    fn decode(envelope: &EventEnvelope) -> Option<DatasetEvent> {
        let payload = envelope.payload.as_slice();
        match envelope.event_type.as_str() {
            CREATED => DatasetCreated::decode(payload).ok().map(DatasetEvent::Created),
            // Cases are not kept in the state: their bytes are skipped, not decoded.
            CASES_STAGED => DatasetCasesStagedHeader::decode(payload).ok().map(|h| {
                DatasetEvent::CasesStaged(DatasetCasesStaged {
                    dataset_id: h.dataset_id,
                    version: h.version,
                    chunk: h.chunk,
                    cases: Vec::new(),
                })
            }),
            VERSION_ADDED => DatasetVersionAdded::decode(payload)
                .ok()
                .map(DatasetEvent::VersionAdded),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn created() -> DatasetState {
        evolve(
            DatasetState::default(),
            &DatasetEvent::Created(DatasetCreated {
                dataset_id: "d".into(),
                name: "n".into(),
                description: String::new(),
            }),
        )
    }

    fn cases(n: usize, text_bytes: usize) -> Vec<Case> {
        (0..n)
            .map(|i| Case {
                id: format!("c{i}"),
                variables: [("q".to_owned(), "x".repeat(text_bytes))].into_iter().collect(),
                ..Case::default()
            })
            .collect()
    }

    #[test]
    fn ids_follow_org_and_name() {
        assert_eq!(dataset_id("o", "golden"), dataset_id("o", "golden"));
        assert_ne!(dataset_id("o", "golden"), dataset_id("p", "golden"));
        assert_ne!(dataset_id("o", "golden"), dataset_id("o", "golden2"));
        assert!(uuid::Uuid::parse_str(&dataset_id("o", "n")).is_ok());
    }

    #[test]
    fn a_version_is_chunked_and_committed() {
        let events = decide(
            &created(),
            DatasetCommand::AddVersion {
                cases: cases(30, 20_000),
                source: "csv",
            },
        )
        .unwrap_or_default();
        // 30 × ~20 KB in 256 KiB chunks: 3 chunks, then the commit.
        assert_eq!(events.len(), 4);
        let DatasetEvent::VersionAdded(added) = &events[3] else {
            unreachable!("commit last")
        };
        assert_eq!((added.version, added.chunks, added.case_count), (1, 3, 30));
        assert_eq!(added.variables, ["q"]);
        let state = events.iter().fold(created(), evolve);
        assert_eq!(state.versions.len(), 1);
    }

    #[test]
    fn uncommitted_chunks_are_never_read() {
        let v1 = decide(
            &created(),
            DatasetCommand::AddVersion {
                cases: cases(2, 10),
                source: "jsonl",
            },
        )
        .unwrap_or_default();
        // A writer died after the first chunk of version 2 …
        let state = v1.iter().fold(created(), evolve);
        let v2 = decide(
            &state,
            DatasetCommand::AddVersion {
                cases: cases(5, 10),
                source: "csv",
            },
        )
        .unwrap_or_default();
        let mut log: Vec<DatasetEvent> = v1.clone();
        log.push(v2[0].clone());
        let state = log.iter().fold(created(), evolve);
        assert_eq!(state.versions.len(), 1);
        // … and version 2 is written again, whole.
        let retry = decide(
            &state,
            DatasetCommand::AddVersion {
                cases: cases(3, 10),
                source: "csv",
            },
        )
        .unwrap_or_default();
        log.extend(retry);
        let state = log.iter().fold(created(), evolve);
        assert_eq!(
            state.versions.iter().map(|v| v.case_count).collect::<Vec<_>>(),
            [2, 3]
        );
        let recorded: Vec<RecordedEvent> = log
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let draft = Dataset::encode(e);
                RecordedEvent {
                    context: promptops_eventlog::Context::Evaluation,
                    subject: String::new(),
                    sequence: i as u64 + 1,
                    envelope: EventEnvelope {
                        event_type: draft.event_type,
                        payload: draft.payload,
                        ..Default::default()
                    },
                }
            })
            .collect();
        assert_eq!(cases_of(&recorded, 1).map(|c| c.len()), Some(2));
        assert_eq!(cases_of(&recorded, 2).map(|c| c.len()), Some(3));
        assert_eq!(cases_of(&recorded, 3), None);
    }

    #[test]
    fn refusals() {
        assert_eq!(
            decide(
                &DatasetState::default(),
                DatasetCommand::AddVersion {
                    cases: cases(1, 1),
                    source: "csv"
                }
            ),
            Err(DatasetError::NotFound)
        );
        assert_eq!(
            decide(
                &created(),
                DatasetCommand::Create {
                    dataset_id: "d".into(),
                    name: "n".into(),
                    description: String::new()
                }
            ),
            Err(DatasetError::Exists)
        );
        assert_eq!(
            decide(
                &created(),
                DatasetCommand::AddVersion {
                    cases: Vec::new(),
                    source: "csv"
                }
            ),
            Err(DatasetError::Empty)
        );
    }
}
