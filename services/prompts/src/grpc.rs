//! `PromptService` over gRPC: commands go through the aggregate to the log;
//! reads of one prompt come from [`Live`] (the log, cached), lists and
//! search from the catalog read model.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use promptops_auth::roles::Permission;
use promptops_eventlog::aggregate::{ExecuteError, Executed, Loaded, execute, execute_from, load};
use promptops_eventlog::{AggregateRef, Context, EventLog};
use promptops_platform::authn::Authenticator;
use promptops_platform::caller::Caller;
use promptops_platform::errors::{ErrorClass, FieldViolation, ServiceError};
use promptops_platform::paging::{Cursor, page_size};
use promptops_platform::read_your_write;
use promptops_proto::common::v1::LogPosition;
use promptops_proto::prompts::v1::prompt_service_server::PromptService;
use promptops_proto::prompts::v1::{
    ArchivePromptRequest, ChatTemplate, CreatePromptRequest, CreatePromptResponse, CreateVersionRequest,
    CreateVersionResponse, DiffVersionsRequest, DocumentFormat, ExportPromptsRequest, ExportPromptsResponse,
    FolderCount, GetLabelPolicyRequest, GetPromptRequest, ImportPromptsRequest, ImportPromptsResponse,
    LabelPolicy, LabelPolicySet, ListFoldersRequest, ListFoldersResponse, ListPromptsRequest,
    ListPromptsResponse, ListVersionsRequest, ListVersionsResponse, MoveLabelRequest, Prompt,
    PromptChangeResponse, PromptRef, PromptVersion, RemoveLabelRequest, RenderPromptRequest,
    RenderPromptResponse, ResolvePromptRequest, ResolvedPrompt, RestorePromptRequest, SetLabelPolicyRequest,
    TagCount, UpdatePromptRequest, VersionDiff, VersionInput, WatchEvent, WatchRequest,
    render_prompt_response, template,
};
use sqlx::AnyPool;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::domain::{
    self, AddVersion, Authorship, CreatePrompt, LATEST, MoveLabel, PromptCommand, PromptError, PromptEvent,
    PromptState, RemoveLabel, UpdatePrompt, VersionSource,
};
use crate::events::{self, AGGREGATE_TYPE, POLICY_AGGREGATE_TYPE, POLICY_ID};
use crate::exchange::{self, Document, LabelRights};
use crate::live::{Live, Snapshot};
use crate::read_model::{self, Filter, PROJECTION};
use crate::template as tpl;

#[derive(Debug, Clone)]
pub struct PromptsApi {
    log: EventLog,
    db: AnyPool,
    auth: Authenticator,
    live: Arc<Live>,
    /// Watch streams run here; they end at `shutdown`.
    watches: TaskTracker,
    shutdown: CancellationToken,
}

type Result<T> = std::result::Result<T, Status>;

fn position(sequence: u64) -> LogPosition {
    promptops_platform::read_your_write::position(Context::Prompts, sequence)
}

fn store_error(err: impl std::fmt::Display) -> ServiceError {
    ServiceError::unavailable("the event log", err)
}

fn exec_error(err: ExecuteError<PromptError>) -> ServiceError {
    match err {
        ExecuteError::Domain(e) => domain_error(e),
        ExecuteError::Conflict => {
            ServiceError::new(ErrorClass::Conflict, "the prompt was changed concurrently; retry")
        }
        ExecuteError::Store(e) => store_error(e),
        ExecuteError::Invalid(reason) => ServiceError::new(ErrorClass::Internal, reason),
    }
}

pub fn domain_error(err: PromptError) -> ServiceError {
    let class = match &err {
        PromptError::Invalid(violations) => return ServiceError::invalid(violations.clone()),
        PromptError::AlreadyExists { .. } => ErrorClass::AlreadyExists,
        PromptError::NotFound => ErrorClass::NotFound,
        PromptError::Archived => ErrorClass::FailedPrecondition,
        PromptError::StaleLatest { .. } => ErrorClass::Conflict,
        PromptError::ProtectedLabel(_) => ErrorClass::PermissionDenied,
        PromptError::NoSuchLabel(_) => ErrorClass::NotFound,
    };
    ServiceError::new(class, err.to_string())
}

/// The API form of a prompt's state.
pub fn prompt_message(state: &PromptState, created_at: Option<prost_types::Timestamp>) -> Option<Prompt> {
    let head = state.head.as_ref()?;
    let first = state.versions.first();
    Some(Prompt {
        prompt_id: head.prompt_id.clone(),
        name: head.name.clone(),
        description: head.description.clone(),
        folder: head.folder.clone(),
        tags: head.tags.clone(),
        latest_version: state.latest_number(),
        created_at: created_at.or_else(|| first.and_then(|v| v.created_at)),
        created_by: first.and_then(|v| v.author.clone()),
        labels: state.labels.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        archived: head.archived,
        updated_at: state.latest().and_then(|v| v.created_at),
    })
}

/// The version a request asks for: by number, else by label, else latest.
pub fn select<'a>(
    state: &'a PromptState,
    label: &str,
    version: u64,
) -> std::result::Result<(&'a PromptVersion, String), ServiceError> {
    if version != 0 {
        if !label.is_empty() {
            return Err(ServiceError::invalid_field(
                "version",
                "give a label or a version, not both",
            ));
        }
        let found = state.version_number(version).ok_or_else(|| {
            ServiceError::new(
                ErrorClass::NotFound,
                format!(
                    "version {version} does not exist; the latest is {}",
                    state.latest_number()
                ),
            )
        })?;
        return Ok((found, String::new()));
    }
    let label = if label.is_empty() { LATEST } else { label };
    let found = state.label(label).ok_or_else(|| {
        ServiceError::new(
            ErrorClass::NotFound,
            format!("label {label:?} is not set on this prompt"),
        )
    })?;
    Ok((found, label.to_owned()))
}

/// A resolved version with its prompt and ETag.
pub fn resolved(snapshot: &Snapshot, version: &PromptVersion, label: String) -> Option<ResolvedPrompt> {
    let prompt = prompt_message(&snapshot.state, snapshot.created_at)?;
    let etag = format!(
        "\"{}.{}.{}\"",
        prompt.prompt_id, version.number, snapshot.state.version
    );
    Some(ResolvedPrompt {
        prompt: Some(prompt),
        version: Some(version.clone()),
        label,
        etag,
    })
}

fn now() -> prost_types::Timestamp {
    let now = std::time::SystemTime::now();
    prost_types::Timestamp::from(now)
}

impl PromptsApi {
    pub fn new(
        log: EventLog,
        db: AnyPool,
        auth: Authenticator,
        live: Arc<Live>,
        watches: TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            log,
            db,
            auth,
            live,
            watches,
            shutdown,
        }
    }

    /// The verified caller, who must have `permission`.
    async fn caller<T>(&self, request: &Request<T>, permission: Permission) -> Result<Caller> {
        let caller = self.auth.authenticate(request.metadata()).await?;
        caller.require(permission)?;
        Ok(caller)
    }

    /// The verified caller, whose permissions are checked per prompt.
    async fn authenticated<T>(&self, request: &Request<T>) -> Result<Caller> {
        Ok(self.auth.authenticate(request.metadata()).await?)
    }

    /// PERMISSION_DENIED unless the caller may do `permission` to this
    /// prompt (org role or a grant on it or its folder); NOT_FOUND when the
    /// org has no such prompt. Returns the prompt's folder.
    async fn require_on_prompt(
        &self,
        caller: &Caller,
        permission: Permission,
        prompt_id: &str,
    ) -> std::result::Result<String, ServiceError> {
        if caller.can(permission) {
            return Ok(String::new());
        }
        let snapshot = self.snapshot(caller, prompt_id).await?;
        let folder = snapshot
            .state
            .head
            .as_ref()
            .map(|h| h.folder.clone())
            .unwrap_or_default();
        caller.require_on(permission, prompt_id, &folder)?;
        Ok(folder)
    }

    /// Authenticates, checks `permission` on the prompt the request names,
    /// and runs the command made from it.
    async fn change<T>(
        &self,
        request: Request<T>,
        permission: Permission,
        command: impl FnOnce(T) -> (String, PromptCommand),
    ) -> Result<Response<PromptChangeResponse>> {
        let caller = self.authenticated(&request).await?;
        let (prompt_id, command) = command(request.into_inner());
        let prompt_id = Self::checked_id(&prompt_id)?;
        self.require_on_prompt(&caller, permission, &prompt_id).await?;
        let done = self.run(&caller, &prompt_id, command).await.map_err(exec_error)?;
        Ok(Self::change_response(&done))
    }

    /// A label move or removal: the caller needs `labels:move` on the prompt,
    /// and the command is made knowing the org's protected labels and
    /// whether the caller may move them there.
    async fn label_change<T>(
        &self,
        request: Request<T>,
        prompt_id_of: impl FnOnce(&T) -> String,
        command: impl FnOnce(T, &LabelRights) -> PromptCommand,
    ) -> Result<Response<PromptChangeResponse>> {
        let caller = self.authenticated(&request).await?;
        let req = request.into_inner();
        let prompt_id = Self::checked_id(&prompt_id_of(&req))?;
        let folder = self
            .require_on_prompt(&caller, Permission::MoveLabel, &prompt_id)
            .await?;
        let rights = self.label_rights(&caller, &prompt_id, &folder).await?;
        let done = self
            .run(&caller, &prompt_id, command(req, &rights))
            .await
            .map_err(exec_error)?;
        Ok(Self::change_response(&done))
    }

    fn authorship(caller: &Caller) -> Authorship {
        Authorship {
            author: caller.actor.clone(),
            at: now(),
        }
    }

    /// The prompt id a reference names, in the caller's org.
    fn prompt_id(
        caller: &Caller,
        reference: Option<&PromptRef>,
    ) -> std::result::Result<String, ServiceError> {
        let reference = reference.cloned().unwrap_or_default();
        if !reference.prompt_id.is_empty() {
            return Self::checked_id(&reference.prompt_id);
        }
        if reference.name.is_empty() {
            return Err(ServiceError::invalid_field(
                "prompt",
                "give prompt_id, or name (and folder)",
            ));
        }
        Ok(domain::prompt_id_for(
            &caller.org_id,
            &reference.folder,
            &reference.name,
        ))
    }

    fn checked_id(prompt_id: &str) -> std::result::Result<String, ServiceError> {
        Uuid::parse_str(prompt_id)
            .map(|id| id.hyphenated().to_string())
            .map_err(|_| ServiceError::invalid_field("prompt_id", "must be a UUID"))
    }

    /// The prompt's current state; NOT_FOUND when the org has no such prompt.
    async fn snapshot(
        &self,
        caller: &Caller,
        prompt_id: &str,
    ) -> std::result::Result<Arc<Snapshot>, ServiceError> {
        let snapshot = self.live.snapshot(&caller.org_id, prompt_id).await?;
        if snapshot.state.head.is_none() {
            return Err(ServiceError::new(
                ErrorClass::NotFound,
                format!("prompt {prompt_id} not found"),
            ));
        }
        Ok(snapshot)
    }

    fn aggregate(org_id: &str, prompt_id: &str) -> std::result::Result<AggregateRef, ServiceError> {
        AggregateRef::new(Context::Prompts, org_id, AGGREGATE_TYPE, prompt_id)
            .map_err(|e| ServiceError::new(ErrorClass::Internal, e.to_string()))
    }

    /// Runs a command on one prompt; the replica's cached state is dropped.
    async fn run(
        &self,
        caller: &Caller,
        prompt_id: &str,
        command: PromptCommand,
    ) -> std::result::Result<Executed<PromptState, PromptEvent>, ExecuteError<PromptError>> {
        let aggregate =
            Self::aggregate(&caller.org_id, prompt_id).map_err(|e| ExecuteError::Invalid(e.to_string()))?;
        // Start from this replica's cached state: only newer events are read.
        let known = match self.live.snapshot(&caller.org_id, prompt_id).await {
            Ok(snapshot) if snapshot.state.head.is_some() => Loaded {
                state: snapshot.state.clone(),
                version: snapshot.state.version,
                last_sequence: snapshot.last_sequence,
                first_occurred_at: snapshot.created_at,
            },
            _ => Loaded::empty(),
        };
        let result =
            execute_from::<events::Prompt>(&self.log, &aggregate, known, command, &caller.event_metadata())
                .await;
        if let Ok(done) = &result
            && !done.events.is_empty()
        {
            self.live.record_write(
                &caller.org_id,
                prompt_id,
                Snapshot {
                    state: done.state.clone(),
                    last_sequence: done.last_sequence,
                    created_at: done.first_occurred_at,
                },
            );
        }
        result
    }

    fn change_response(done: &Executed<PromptState, PromptEvent>) -> Response<PromptChangeResponse> {
        Response::new(PromptChangeResponse {
            prompt: prompt_message(&done.state, done.first_occurred_at),
            position: Some(position(done.last_sequence)),
        })
    }

    async fn policy(&self, org_id: &str) -> std::result::Result<events::PolicyState, ServiceError> {
        let aggregate = AggregateRef::new(Context::Prompts, org_id, POLICY_AGGREGATE_TYPE, POLICY_ID)
            .map_err(|e| ServiceError::new(ErrorClass::Internal, e.to_string()))?;
        Ok(load::<events::LabelPolicy>(&self.log, &aggregate)
            .await
            .map_err(store_error)?
            .state)
    }

    async fn label_rights(
        &self,
        caller: &Caller,
        prompt_id: &str,
        folder: &str,
    ) -> std::result::Result<LabelRights, ServiceError> {
        Ok(LabelRights {
            protected_labels: self.policy(&caller.org_id).await?.protected_labels,
            may_move_protected: caller.can_on(Permission::MoveProtectedLabel, prompt_id, folder),
        })
    }
}

/// The declared variables of a version, for rendering.
fn declared(input: &VersionInput) -> Vec<tpl::Declared> {
    input
        .variables
        .iter()
        .map(|v| tpl::Declared {
            name: v.name.clone(),
            default: v.default_value.clone(),
        })
        .collect()
}

/// The largest rendered prompt (all messages together): 2 MiB, under gRPC's
/// 4 MiB message limit. Checked before anything is built.
pub const MAX_RENDERED_BYTES: usize = 2 * 1024 * 1024;

/// The parsed texts of a version's template, each with its field path.
fn parsed_texts(input: &VersionInput) -> std::result::Result<Vec<(String, tpl::Template)>, ServiceError> {
    let texts = input
        .template
        .as_ref()
        .map(|t| domain::template_texts(t, ""))
        .unwrap_or_default();
    texts
        .into_iter()
        .map(|(field, text)| {
            let parsed = tpl::parse(text).map_err(|problems| {
                ServiceError::invalid(
                    problems
                        .into_iter()
                        .map(|p| FieldViolation::new(field.clone(), format!("{}: {}", p.position, p.message)))
                        .collect(),
                )
            })?;
            Ok((field, parsed))
        })
        .collect()
}

/// Renders a version's template with `values`; every missing variable named.
/// A result over [`MAX_RENDERED_BYTES`] is refused before it is built.
pub fn render(
    input: &VersionInput,
    values: &HashMap<String, String>,
) -> std::result::Result<render_prompt_response::Kind, ServiceError> {
    let declared = declared(input);
    let parsed = parsed_texts(input)?;
    let rendered_bytes = parsed.iter().fold(0usize, |total, (_, t)| {
        total.saturating_add(t.rendered_len(values, &declared))
    });
    if rendered_bytes > MAX_RENDERED_BYTES {
        return Err(ServiceError::invalid_field(
            "variables",
            format!(
                "the rendered prompt would be {rendered_bytes} bytes; the limit is {MAX_RENDERED_BYTES} bytes"
            ),
        ));
    }
    let mut missing: Vec<String> = Vec::new();
    let mut rendered = Vec::with_capacity(parsed.len());
    for (_, t) in &parsed {
        match t.render(values, &declared) {
            Ok(out) => rendered.push(out),
            Err(tpl::MissingVariables(names)) => {
                for name in names {
                    if !missing.contains(&name) {
                        missing.push(name);
                    }
                }
                rendered.push(String::new());
            }
        }
    }
    let mut rendered = rendered.into_iter();
    let kind = match input.template.as_ref().and_then(|t| t.kind.as_ref()) {
        Some(template::Kind::Text(_)) => {
            render_prompt_response::Kind::Text(rendered.next().unwrap_or_default())
        }
        Some(template::Kind::Chat(chat)) => {
            let mut messages = chat.messages.clone();
            for message in &mut messages {
                message.content = rendered.next().unwrap_or_default();
            }
            render_prompt_response::Kind::Chat(ChatTemplate { messages })
        }
        None => {
            return Err(ServiceError::invalid_field(
                "template",
                "the version has no template",
            ));
        }
    };
    if !missing.is_empty() {
        let mut error = ServiceError::invalid(
            missing
                .iter()
                .map(|name| FieldViolation::new(format!("variables.{name}"), "missing value"))
                .collect(),
        );
        error.message = format!("missing values for: {}", missing.join(", "));
        return Err(error);
    }
    Ok(kind)
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent>> + Send>>;

#[tonic::async_trait]
impl PromptService for PromptsApi {
    async fn create_prompt(
        &self,
        request: Request<CreatePromptRequest>,
    ) -> Result<Response<CreatePromptResponse>> {
        let caller = self.authenticated(&request).await?;
        let req = request.into_inner();
        if !req.request_id.is_empty() && Uuid::parse_str(&req.request_id).is_err() {
            return Err(ServiceError::invalid_field("request_id", "must be a UUID").into());
        }
        // The name is the identity: the id is derived from org, folder and name.
        let prompt_id = domain::prompt_id_for(&caller.org_id, &req.folder, &req.name);
        caller.require_on(
            Permission::Write,
            &prompt_id,
            &domain::normalize_folder(&req.folder),
        )?;
        let version = req.version.unwrap_or_default();
        let command = CreatePrompt {
            prompt_id: prompt_id.clone(),
            name: req.name,
            description: req.description,
            folder: req.folder,
            tags: req.tags,
            version: version.clone(),
            by: Self::authorship(&caller),
        };
        let done = match self
            .run(&caller, &prompt_id, PromptCommand::Create(command.clone()))
            .await
        {
            Ok(done) => done,
            Err(ExecuteError::Domain(PromptError::AlreadyExists { name, folder }))
                if !req.request_id.is_empty() =>
            {
                // A retry of the same request answers as the first time did.
                let loaded = load::<events::Prompt>(&self.log, &Self::aggregate(&caller.org_id, &prompt_id)?)
                    .await
                    .map_err(store_error)?;
                let same = loaded
                    .state
                    .head
                    .as_ref()
                    .is_some_and(|h| h.description == command.description && h.tags == command.tags)
                    && loaded
                        .state
                        .versions
                        .first()
                        .is_some_and(|v| domain::same_content(v, &version));
                if !same {
                    return Err(domain_error(PromptError::AlreadyExists { name, folder }).into());
                }
                Executed {
                    state: loaded.state,
                    events: Vec::new(),
                    last_sequence: loaded.last_sequence,
                    first_occurred_at: loaded.first_occurred_at,
                }
            }
            Err(err) => return Err(exec_error(err).into()),
        };
        tracing::info!(prompt_id = %prompt_id, org = %caller.org_id, "prompt created");
        metrics::counter!("promptops_prompt_commands_total", "command" => "create").increment(1);
        Ok(Response::new(CreatePromptResponse {
            prompt: prompt_message(&done.state, done.first_occurred_at),
            position: Some(position(done.last_sequence)),
        }))
    }

    async fn get_prompt(&self, request: Request<GetPromptRequest>) -> Result<Response<Prompt>> {
        let caller = self.caller(&request, Permission::Read).await?;
        let req = request.into_inner();
        let prompt_id = Self::checked_id(&req.prompt_id)?;
        // Reads come from the log itself, so any position is already visible.
        let snapshot = self.snapshot(&caller, &prompt_id).await?;
        let prompt = prompt_message(&snapshot.state, snapshot.created_at)
            .ok_or_else(|| ServiceError::new(ErrorClass::NotFound, "prompt not found"))?;
        Ok(Response::new(prompt))
    }

    async fn list_prompts(
        &self,
        request: Request<ListPromptsRequest>,
    ) -> Result<Response<ListPromptsResponse>> {
        let caller = self.caller(&request, Permission::Read).await?;
        let req = request.into_inner();
        let page = req.page.unwrap_or_default();
        let after = Cursor::decode(&page.page_token, "page_token")?;
        if req.query.chars().count() > 200 {
            return Err(ServiceError::invalid_field("query", "must be at most 200 characters").into());
        }
        read_your_write::wait_for(&self.db, PROJECTION, req.min_position.as_ref()).await?;
        let filter = Filter {
            folder: req.folder.map(|f| domain::normalize_folder(&f)),
            recursive: req.recursive,
            tag: (!req.tag.is_empty()).then_some(req.tag),
            query: (!req.query.trim().is_empty()).then(|| req.query.trim().to_owned()),
            include_archived: req.include_archived,
        };
        let (prompts, next) = read_model::list(
            &self.db,
            &caller.org_id,
            &filter,
            after.as_ref(),
            page_size(page.page_size),
        )
        .await
        .map_err(|e| ServiceError::unavailable("the prompts database", e))?;
        Ok(Response::new(ListPromptsResponse {
            prompts,
            next_page_token: next.map(|c| c.encode()).unwrap_or_default(),
        }))
    }

    async fn list_folders(
        &self,
        request: Request<ListFoldersRequest>,
    ) -> Result<Response<ListFoldersResponse>> {
        let caller = self.caller(&request, Permission::Read).await?;
        let req = request.into_inner();
        read_your_write::wait_for(&self.db, PROJECTION, req.min_position.as_ref()).await?;
        let (folders, tags, truncated) =
            read_model::folders_and_tags(&self.db, &caller.org_id, req.include_archived)
                .await
                .map_err(|e| ServiceError::unavailable("the prompts database", e))?;
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        Ok(Response::new(ListFoldersResponse {
            folders: folders
                .into_iter()
                .map(|(folder, n)| FolderCount {
                    folder,
                    prompts: count(n),
                })
                .collect(),
            tags: tags
                .into_iter()
                .map(|(tag, n)| TagCount {
                    tag,
                    prompts: count(n),
                })
                .collect(),
            truncated,
        }))
    }

    async fn update_prompt(
        &self,
        request: Request<UpdatePromptRequest>,
    ) -> Result<Response<PromptChangeResponse>> {
        self.change(request, Permission::Write, |req| {
            let command = PromptCommand::Update(UpdatePrompt {
                description: req.description,
                tags: req.set_tags.then_some(req.tags),
            });
            (req.prompt_id, command)
        })
        .await
    }

    async fn create_version(
        &self,
        request: Request<CreateVersionRequest>,
    ) -> Result<Response<CreateVersionResponse>> {
        let caller = self.authenticated(&request).await?;
        let req = request.into_inner();
        let prompt_id = Self::checked_id(&req.prompt_id)?;
        self.require_on_prompt(&caller, Permission::Write, &prompt_id)
            .await?;
        let source = match (req.version, req.copy_from) {
            (Some(_), n) if n != 0 => {
                return Err(ServiceError::invalid_field(
                    "copy_from",
                    "give new content or copy_from, not both",
                )
                .into());
            }
            (Some(input), _) => VersionSource::New(input),
            (None, 0) => {
                return Err(
                    ServiceError::invalid_field("version", "the new version's content is required").into(),
                );
            }
            (None, n) => VersionSource::CopyOf {
                version: n,
                commit_message: String::new(),
            },
        };
        let command = PromptCommand::AddVersion(AddVersion {
            source,
            expected_latest: req.expected_latest,
            by: Self::authorship(&caller),
        });
        let done = self.run(&caller, &prompt_id, command).await.map_err(exec_error)?;
        metrics::counter!("promptops_prompt_commands_total", "command" => "create_version").increment(1);
        Ok(Response::new(CreateVersionResponse {
            version: done.state.latest().cloned(),
            prompt: prompt_message(&done.state, done.first_occurred_at),
            position: Some(position(done.last_sequence)),
        }))
    }

    async fn list_versions(
        &self,
        request: Request<ListVersionsRequest>,
    ) -> Result<Response<ListVersionsResponse>> {
        let caller = self.caller(&request, Permission::Read).await?;
        let req = request.into_inner();
        let prompt_id = Self::checked_id(&req.prompt_id)?;
        let page = req.page.unwrap_or_default();
        let before = match Cursor::decode(&page.page_token, "page_token")? {
            Some(cursor) => u64::try_from(cursor.time_ms).map_err(|_| {
                ServiceError::invalid_field("page_token", "is not a page token from this API")
            })?,
            None => u64::MAX,
        };
        let snapshot = self.snapshot(&caller, &prompt_id).await?;
        let size = page_size(page.page_size) as usize;
        let mut versions: Vec<PromptVersion> = snapshot
            .state
            .versions
            .iter()
            .rev()
            .filter(|v| v.number < before)
            .take(size + 1)
            .cloned()
            .collect();
        let next = if versions.len() > size {
            versions.truncate(size);
            versions.last().map(|v| {
                Cursor {
                    time_ms: i64::try_from(v.number).unwrap_or(i64::MAX),
                    id: "v".into(),
                }
                .encode()
            })
        } else {
            None
        };
        Ok(Response::new(ListVersionsResponse {
            versions,
            next_page_token: next.unwrap_or_default(),
        }))
    }

    async fn resolve_prompt(
        &self,
        request: Request<ResolvePromptRequest>,
    ) -> Result<Response<ResolvedPrompt>> {
        let caller = self.caller(&request, Permission::Read).await?;
        let req = request.into_inner();
        let prompt_id = Self::prompt_id(&caller, req.prompt.as_ref())?;
        if let Some(min) = &req.min_position {
            if min.stream != Context::Prompts.stream_name() {
                return Err(
                    ServiceError::invalid_field("min_position.stream", "must be the prompts stream").into(),
                );
            }
            // A write elsewhere: wait until this replica has seen it.
            if !self.live.wait_seen(min.sequence, read_your_write::TIMEOUT).await {
                return Err(ServiceError::new(
                    ErrorClass::DeadlineExceeded,
                    "this replica has not seen the requested position yet",
                )
                .into());
            }
        }
        let snapshot = self.snapshot(&caller, &prompt_id).await?;
        let (version, label) = select(&snapshot.state, &req.label, req.version)?;
        let resolved = resolved(&snapshot, version, label)
            .ok_or_else(|| ServiceError::new(ErrorClass::NotFound, "prompt not found"))?;
        Ok(Response::new(resolved))
    }

    async fn move_label(&self, request: Request<MoveLabelRequest>) -> Result<Response<PromptChangeResponse>> {
        let response = self
            .label_change(
                request,
                |req| req.prompt_id.clone(),
                |req, rights| {
                    PromptCommand::MoveLabel(MoveLabel {
                        protected: rights.protected_labels.contains(&req.label),
                        may_move_protected: rights.may_move_protected,
                        label: req.label,
                        version: req.version,
                        reason: req.reason,
                    })
                },
            )
            .await?;
        metrics::counter!("promptops_prompt_commands_total", "command" => "move_label").increment(1);
        Ok(response)
    }

    async fn remove_label(
        &self,
        request: Request<RemoveLabelRequest>,
    ) -> Result<Response<PromptChangeResponse>> {
        self.label_change(
            request,
            |req| req.prompt_id.clone(),
            |req, rights| {
                PromptCommand::RemoveLabel(RemoveLabel {
                    protected: rights.protected_labels.contains(&req.label),
                    may_move_protected: rights.may_move_protected,
                    label: req.label,
                    reason: req.reason,
                })
            },
        )
        .await
    }

    async fn archive_prompt(
        &self,
        request: Request<ArchivePromptRequest>,
    ) -> Result<Response<PromptChangeResponse>> {
        self.change(request, Permission::Archive, |req| {
            (req.prompt_id, PromptCommand::Archive { reason: req.reason })
        })
        .await
    }

    async fn restore_prompt(
        &self,
        request: Request<RestorePromptRequest>,
    ) -> Result<Response<PromptChangeResponse>> {
        self.change(request, Permission::Archive, |req| {
            (req.prompt_id, PromptCommand::Restore { reason: req.reason })
        })
        .await
    }

    async fn diff_versions(&self, request: Request<DiffVersionsRequest>) -> Result<Response<VersionDiff>> {
        let caller = self.caller(&request, Permission::Read).await?;
        let req = request.into_inner();
        let prompt_id = Self::checked_id(&req.prompt_id)?;
        let snapshot = self.snapshot(&caller, &prompt_id).await?;
        let state = &snapshot.state;
        let find = |field: &str, n: u64| {
            state.version_number(n).ok_or_else(|| {
                ServiceError::invalid_field(
                    field,
                    format!(
                        "version {n} does not exist; the latest is {}",
                        state.latest_number()
                    ),
                )
            })
        };
        let (from, to) = (
            find("from_version", req.from_version),
            find("to_version", req.to_version),
        );
        let (from, to) = match (from, to) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(a), Err(b)) => {
                let mut violations = a.violations;
                violations.extend(b.violations);
                return Err(ServiceError::invalid(violations).into());
            }
            (Err(e), _) | (_, Err(e)) => return Err(e.into()),
        };
        Ok(Response::new(crate::diff::diff(from, to)))
    }

    async fn render_prompt(
        &self,
        request: Request<RenderPromptRequest>,
    ) -> Result<Response<RenderPromptResponse>> {
        let caller = self.caller(&request, Permission::Read).await?;
        let req = request.into_inner();
        let (input, number, prompt_id) = match req.draft {
            Some(draft) => {
                let violations = domain::validate_version(&draft, "draft");
                if !violations.is_empty() {
                    return Err(ServiceError::invalid(violations).into());
                }
                (draft, 0, String::new())
            }
            None => {
                let prompt_id = Self::prompt_id(&caller, req.prompt.as_ref())?;
                let snapshot = self.snapshot(&caller, &prompt_id).await?;
                let (version, _) = select(&snapshot.state, &req.label, req.version)?;
                (domain::content_of(version), version.number, prompt_id)
            }
        };
        let kind = render(&input, &req.variables)?;
        Ok(Response::new(RenderPromptResponse {
            kind: Some(kind),
            model: input.model,
            version: number,
            prompt_id,
        }))
    }

    type WatchStream = WatchStream;

    async fn watch(&self, request: Request<WatchRequest>) -> Result<Response<Self::WatchStream>> {
        let caller = self.caller(&request, Permission::Read).await?;
        let req = request.into_inner();
        let prompt_id = Self::prompt_id(&caller, req.prompt.as_ref())?;
        let labels = if req.labels.is_empty() {
            vec!["production".to_owned()]
        } else {
            req.labels
        };
        for (i, label) in labels.iter().enumerate() {
            if label != LATEST {
                let violations = domain::validate_label(label, &format!("labels[{i}]"));
                if !violations.is_empty() {
                    return Err(ServiceError::invalid(violations).into());
                }
            }
        }
        // Subscribe before reading the initial state so no move is missed.
        let mut changes = self.live.subscribe();
        let snapshot = self.snapshot(&caller, &prompt_id).await?;
        let (tx, rx) = mpsc::channel::<Result<WatchEvent>>(16);
        let live = self.live.clone();
        let shutdown = self.shutdown.clone();
        let org_id = caller.org_id.clone();
        metrics::gauge!("promptops_prompt_watchers").increment(1.0);
        self.watches.spawn(async move {
            let send_state = |snapshot: &Snapshot, label: &str, sequence: u64, initial: bool| {
                let resolved = snapshot
                    .state
                    .label(label)
                    .and_then(|v| resolved(snapshot, v, label.to_owned()));
                WatchEvent {
                    resolved,
                    label: label.to_owned(),
                    position: (sequence != 0).then(|| position(sequence)),
                    initial,
                }
            };
            for label in &labels {
                if tx.send(Ok(send_state(&snapshot, label, 0, true))).await.is_err() {
                    return;
                }
            }
            loop {
                let change = tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tx.closed() => break,
                    change = changes.recv() => change,
                };
                let moved: Vec<String> = match change {
                    Ok(change) if change.org_id == org_id && change.prompt_id == prompt_id => match &change
                        .event
                    {
                        PromptEvent::LabelMoved(m) if labels.contains(&m.label) => vec![m.label.clone()],
                        PromptEvent::LabelRemoved(r) if labels.contains(&r.label) => vec![r.label.clone()],
                        PromptEvent::VersionCreated(_) if labels.iter().any(|l| l == LATEST) => {
                            vec![LATEST.to_owned()]
                        }
                        _ => continue,
                    }
                    .into_iter()
                    .collect(),
                    Ok(_) => continue,
                    // Missed changes: send the current state of every label.
                    Err(broadcast::error::RecvError::Lagged(_)) => labels.clone(),
                    Err(broadcast::error::RecvError::Closed) => break,
                };
                let snapshot = match live.snapshot(&org_id, &prompt_id).await {
                    Ok(snapshot) => snapshot,
                    Err(err) => {
                        let _ = tx.send(Err(err.into())).await;
                        break;
                    }
                };
                for label in &moved {
                    let event = send_state(&snapshot, label, snapshot.last_sequence, false);
                    if tx.send(Ok(event)).await.is_err() {
                        break;
                    }
                }
            }
            metrics::gauge!("promptops_prompt_watchers").decrement(1.0);
        });
        Ok(Response::new(
            Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)) as Self::WatchStream,
        ))
    }

    async fn get_label_policy(
        &self,
        request: Request<GetLabelPolicyRequest>,
    ) -> Result<Response<LabelPolicy>> {
        let caller = self.caller(&request, Permission::Read).await?;
        let policy = self.policy(&caller.org_id).await?;
        Ok(Response::new(LabelPolicy {
            protected_labels: policy.protected_labels,
        }))
    }

    async fn set_label_policy(
        &self,
        request: Request<SetLabelPolicyRequest>,
    ) -> Result<Response<LabelPolicy>> {
        let caller = self.caller(&request, Permission::ManageSettings).await?;
        let req = request.into_inner();
        let aggregate = AggregateRef::new(Context::Prompts, &caller.org_id, POLICY_AGGREGATE_TYPE, POLICY_ID)
            .map_err(|e| ServiceError::new(ErrorClass::Internal, e.to_string()))?;
        let done = execute::<events::LabelPolicy>(
            &self.log,
            &aggregate,
            LabelPolicySet {
                protected_labels: req.protected_labels,
            },
            &caller.event_metadata(),
        )
        .await
        .map_err(|err| match err {
            ExecuteError::Domain(violations) => ServiceError::invalid(violations),
            ExecuteError::Conflict => {
                ServiceError::new(ErrorClass::Conflict, "the policy changed concurrently; retry")
            }
            ExecuteError::Store(e) => store_error(e),
            ExecuteError::Invalid(reason) => ServiceError::new(ErrorClass::Internal, reason),
        })?;
        Ok(Response::new(LabelPolicy {
            protected_labels: done.state.protected_labels,
        }))
    }

    async fn export_prompts(
        &self,
        request: Request<ExportPromptsRequest>,
    ) -> Result<Response<ExportPromptsResponse>> {
        let caller = self.caller(&request, Permission::Read).await?;
        let req = request.into_inner();
        let format = DocumentFormat::try_from(req.format).unwrap_or(DocumentFormat::Unspecified);
        let ids = if req.prompt_id.is_empty() {
            // A pull right after a push must see what the push created: let
            // the catalog catch up with the stream as it is now.
            let end = self
                .log
                .last_sequence(Context::Prompts)
                .await
                .map_err(store_error)?;
            read_your_write::wait_for(&self.db, PROJECTION, Some(&position(end))).await?;
            read_model::ids_in_folder(
                &self.db,
                &caller.org_id,
                &domain::normalize_folder(&req.folder),
                req.include_archived,
            )
            .await
            .map_err(|e| ServiceError::unavailable("the prompts database", e))?
        } else {
            vec![Self::checked_id(&req.prompt_id)?]
        };
        let mut prompts = Vec::with_capacity(ids.len());
        for id in &ids {
            let snapshot = self.snapshot(&caller, id).await?;
            prompts.extend(exchange::prompt_doc(&snapshot.state, req.latest_only));
        }
        let count = u32::try_from(prompts.len()).unwrap_or(u32::MAX);
        let document = exchange::format_document(
            &Document {
                format: exchange::FORMAT.to_owned(),
                prompts,
            },
            format,
        )
        .map_err(|e| ServiceError::new(ErrorClass::Internal, e))?;
        Ok(Response::new(ExportPromptsResponse {
            document,
            prompts: count,
        }))
    }

    async fn import_prompts(
        &self,
        request: Request<ImportPromptsRequest>,
    ) -> Result<Response<ImportPromptsResponse>> {
        let caller = self.authenticated(&request).await?;
        // Parsing costs; a caller who can write nowhere is refused first.
        if !caller.can_anywhere(Permission::Write) {
            return Err(ServiceError::new(
                ErrorClass::PermissionDenied,
                "importing needs the write permission (in your role or a grant)",
            )
            .into());
        }
        let req = request.into_inner();
        let format = DocumentFormat::try_from(req.format).unwrap_or(DocumentFormat::Unspecified);
        let document: Document =
            exchange::parse_document(&req.document, format).map_err(|v| ServiceError::invalid(vec![v]))?;
        let mut existing = HashMap::new();
        for doc in &document.prompts {
            let id = domain::prompt_id_for(&caller.org_id, &doc.folder, &doc.name);
            if let std::collections::hash_map::Entry::Vacant(entry) = existing.entry(id) {
                let snapshot = self.live.snapshot(&caller.org_id, entry.key()).await?;
                entry.insert(snapshot.state.clone());
            }
        }
        // Planned as if every label could move; each prompt's commands are
        // then checked against the caller's rights on that prompt.
        let rights = LabelRights {
            protected_labels: self.policy(&caller.org_id).await?.protected_labels,
            may_move_protected: true,
        };
        let plans = exchange::plan_import(
            &caller.org_id,
            &document,
            &existing,
            &rights,
            &Self::authorship(&caller),
        )
        .map_err(ServiceError::invalid)?;
        for (plan, doc) in plans.iter().zip(&document.prompts) {
            let folder = domain::normalize_folder(&doc.folder);
            for command in &plan.commands {
                let needed = match command {
                    PromptCommand::Create(_) | PromptCommand::AddVersion(_) | PromptCommand::Update(_) => {
                        vec![Permission::Write]
                    }
                    PromptCommand::MoveLabel(MoveLabel { protected: true, .. })
                    | PromptCommand::RemoveLabel(RemoveLabel { protected: true, .. }) => {
                        vec![Permission::MoveLabel, Permission::MoveProtectedLabel]
                    }
                    PromptCommand::MoveLabel(_) | PromptCommand::RemoveLabel(_) => {
                        vec![Permission::MoveLabel]
                    }
                    PromptCommand::Archive { .. } | PromptCommand::Restore { .. } => {
                        vec![Permission::Archive]
                    }
                };
                for permission in needed {
                    caller
                        .require_on(permission, &plan.prompt_id, &folder)
                        .map_err(|mut e| {
                            e.message = format!("{} ({}/{})", e.message, folder, doc.name);
                            e
                        })?;
                }
            }
        }
        let mut actions = Vec::new();
        let mut last = 0;
        for plan in plans {
            if !req.dry_run {
                for command in plan.commands {
                    let done = self.run(&caller, &plan.prompt_id, command).await.map_err(|err| {
                        let mut error = exec_error(err);
                        error.message = format!(
                            "{} (prompt {}; {} earlier change(s) of this import were applied)",
                            error.message,
                            plan.prompt_id,
                            actions.len()
                        );
                        error
                    })?;
                    last = last.max(done.last_sequence);
                }
            }
            actions.extend(plan.actions);
        }
        Ok(Response::new(ImportPromptsResponse {
            actions,
            dry_run: req.dry_run,
            position: (last != 0).then(|| position(last)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use promptops_proto::prompts::v1::{ChatMessage, ChatRole, Template, Variable};

    use super::*;

    #[test]
    fn rendering_names_every_missing_variable_and_uses_defaults() {
        let input = VersionInput {
            template: Some(Template {
                kind: Some(template::Kind::Chat(ChatTemplate {
                    messages: vec![
                        ChatMessage {
                            role: ChatRole::System as i32,
                            content: "Tone: {{tone}}".into(),
                        },
                        ChatMessage {
                            role: ChatRole::User as i32,
                            content: "{{ a }} and {{b}}".into(),
                        },
                    ],
                })),
            }),
            variables: vec![Variable {
                name: "tone".into(),
                default_value: Some("calm".into()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let err = render(&input, &HashMap::new()).unwrap_err();
        let fields: Vec<&str> = err.violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["variables.a", "variables.b"]);
        let values = HashMap::from([("a".to_owned(), "1".to_owned()), ("b".to_owned(), "2".to_owned())]);
        let Ok(render_prompt_response::Kind::Chat(chat)) = render(&input, &values) else {
            panic!("expected chat");
        };
        assert_eq!(chat.messages[0].content, "Tone: calm");
        assert_eq!(chat.messages[1].content, "1 and 2");
    }
}
