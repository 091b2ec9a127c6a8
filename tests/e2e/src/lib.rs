//! The end-to-end harness: real processes, real servers.
//!
//! [`Cluster`] starts a real `nats-server -js` and a real PostgreSQL on free
//! ports with temporary storage, then each service's own binary
//! (`promptops-gateway`, `promptops-prompts`, …) as its own process wired to
//! them. [`AllInOne`] starts `promptops serve` on the embedded default.
//! Everything is stopped and deleted on drop.
//!
//! The binaries come from `cargo build --workspace` (the test script runs it).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test harness: a panic is a failed test"
)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use promptops_testkit::{NatsServer, Postgres, free_ports, workspace_binary};
use tempfile::TempDir;

pub const SERVICES: [&str; 6] = [
    "gateway",
    "prompts",
    "execution",
    "evaluation",
    "billing",
    "audit",
];

/// One service process, restartable.
#[derive(Debug)]
pub struct ServiceProcess {
    pub name: String,
    binary: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
}

impl ServiceProcess {
    /// Starts `binary` with `args` and `env`, its output appended to `log`.
    pub fn spawn(
        name: &str,
        binary: PathBuf,
        args: Vec<String>,
        env: Vec<(String, String)>,
        log: PathBuf,
    ) -> Self {
        let mut process = Self {
            name: name.to_owned(),
            binary,
            args,
            env,
            log,
            child: None,
        };
        process.start();
        process
    }

    /// Its environment (to run a CLI against the same stores).
    pub fn env(&self) -> &[(String, String)] {
        &self.env
    }

    /// Starts (or starts again) the process; its log is appended to.
    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(&self.binary)
            .args(&self.args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.binary.display()));
        self.child = Some(child);
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for the exit; returns the exit code.
    pub fn terminate(&mut self, timeout: Duration) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `url` until it answers 200 or `timeout` passes.
pub async fn wait_http_ok(url: &str, timeout: Duration) -> bool {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        // Bounded: whatever holds the port may accept and never answer.
        if client
            .get(url)
            .timeout(deadline.saturating_duration_since(Instant::now()))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// How a process's start went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Started {
    Ready,
    /// A port found free was taken by the time the process bound it
    /// (another test's process got it first): worth a try on new ports.
    PortTaken,
    TimedOut,
}

/// Polls `ready_url` for up to 30 s, watching `process`'s log for a port
/// lost to another process.
async fn started(ready_url: &str, process: &ServiceProcess) -> Started {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if wait_http_ok(ready_url, Duration::from_millis(200)).await {
            return Started::Ready;
        }
        if process.log().contains("Address already in use") {
            return Started::PortTaken;
        }
    }
    Started::TimedOut
}

/// Tries to start a platform up to three times, each on new ports.
const START_ATTEMPTS: u32 = 3;

/// The HTTP port and one gRPC port per service, all distinct and free.
fn allocate_ports() -> (u16, BTreeMap<&'static str, u16>) {
    let ports = free_ports(SERVICES.len() + 1).unwrap();
    let http_port = ports[SERVICES.len()];
    (http_port, SERVICES.iter().copied().zip(ports).collect())
}

/// Addresses, data directory and shutdown grace for processes on loopback.
fn local_env(
    http_port: u16,
    grpc_ports: &BTreeMap<&'static str, u16>,
    dir: &TempDir,
) -> Vec<(String, String)> {
    let mut env = vec![
        ("PROMPTOPS_HTTP_ADDR".to_owned(), format!("127.0.0.1:{http_port}")),
        (
            "PROMPTOPS_DATA_DIR".to_owned(),
            dir.path().join("data").display().to_string(),
        ),
        ("PROMPTOPS_SHUTDOWN_GRACE_SECS".to_owned(), "3".to_owned()),
        // The tests' mock providers listen on loopback: the operator allows it
        // (the egress policy refuses it by default; tests of the policy
        // override this with an empty list).
        ("PROMPTOPS_EGRESS_ALLOW".to_owned(), "127.0.0.0/8,::1".to_owned()),
    ];
    for (service, port) in grpc_ports {
        let upper = service.to_uppercase();
        env.push((
            format!("PROMPTOPS_{upper}_GRPC_ADDR"),
            format!("127.0.0.1:{port}"),
        ));
        env.push((
            format!("PROMPTOPS_{upper}_URL"),
            format!("http://127.0.0.1:{port}"),
        ));
    }
    env
}

/// Six service processes on real NATS JetStream and PostgreSQL.
#[derive(Debug)]
pub struct Cluster {
    pub nats: NatsServer,
    pub postgres: Postgres,
    pub database_url: String,
    pub http_port: u16,
    pub grpc_ports: BTreeMap<&'static str, u16>,
    pub processes: BTreeMap<&'static str, ServiceProcess>,
    pub dir: TempDir,
}

impl Cluster {
    pub async fn start() -> Self {
        let mut nats = NatsServer::start().expect("nats-server (apt-get install -y nats-server)");
        let mut postgres = Postgres::start().expect("PostgreSQL (apt-get install -y postgresql)");
        let mut attempt = 0;
        loop {
            attempt += 1;
            // A database of its own per try: nothing of a failed one stays.
            let database_url = postgres.create_database(&format!("promptops_{attempt}")).unwrap();
            let dir = tempfile::Builder::new()
                .prefix("promptops-e2e-")
                .tempdir()
                .unwrap();
            let (http_port, grpc_ports) = allocate_ports();
            let mut env = local_env(http_port, &grpc_ports, &dir);
            env.push(("NATS_URL".to_owned(), nats.url()));
            env.push(("DATABASE_URL".to_owned(), database_url.clone()));
            env.push(("PROMPTOPS_LOG".to_owned(), "info".to_owned()));
            let mut processes = BTreeMap::new();
            for service in SERVICES {
                let binary = workspace_binary(&format!("promptops-{service}")).unwrap();
                let log = dir.path().join(format!("{service}.log"));
                processes.insert(
                    service,
                    ServiceProcess::spawn(service, binary, Vec::new(), env.clone(), log),
                );
            }
            let cluster = Self {
                nats,
                postgres,
                database_url,
                http_port,
                grpc_ports,
                processes,
                dir,
            };
            let mut port_taken = false;
            for service in SERVICES {
                let url = format!("{}/readyz", cluster.grpc_url(service));
                match started(&url, &cluster.processes[service]).await {
                    Started::Ready => {}
                    Started::PortTaken if attempt < START_ATTEMPTS => {
                        port_taken = true;
                        break;
                    }
                    Started::PortTaken | Started::TimedOut => cluster.not_ready(service),
                }
            }
            if !port_taken {
                return cluster;
            }
            // Again on new ports, with the same servers (the processes stop
            // as they are dropped).
            (nats, postgres) = (cluster.nats, cluster.postgres);
        }
    }

    pub fn http(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    pub fn grpc_url(&self, service: &str) -> String {
        format!("http://127.0.0.1:{}", self.grpc_ports[service])
    }

    /// Waits until the service's `/readyz` (on its gRPC port) answers 200.
    pub async fn wait_ready(&self, service: &str) {
        let url = format!("{}/readyz", self.grpc_url(service));
        if !wait_http_ok(&url, Duration::from_secs(30)).await {
            self.not_ready(service);
        }
    }

    /// Fails with the service's log and the end of nats-server's.
    fn not_ready(&self, service: &str) -> ! {
        let nats = self.nats.log();
        let lines: Vec<&str> = nats.lines().collect();
        // A crash: from its panic line; otherwise the end of the log.
        let from = lines
            .iter()
            .position(|l| l.starts_with("panic:") || l.contains("fatal error"))
            .unwrap_or(lines.len().saturating_sub(20));
        let tail = lines[from..lines.len().min(from + 30)].join("\n");
        panic!(
            "{service} did not become ready; its log:\n{}\nnats-server's log (end):\n{tail}",
            self.processes[service].log()
        );
    }

    pub fn process(&mut self, service: &str) -> &mut ServiceProcess {
        self.processes.get_mut(service).unwrap()
    }

    /// Another process of `service` (a replica), with the cluster's
    /// environment and `overrides` (e.g. its own addresses), logging to
    /// `<name>.log`; waits until its `/readyz` at `ready_url` answers.
    pub async fn spawn_replica(
        &self,
        service: &str,
        name: &str,
        overrides: &[(&str, String)],
        ready_url: &str,
    ) -> ServiceProcess {
        let mut env: Vec<(String, String)> = self.processes[service]
            .env
            .iter()
            .filter(|(k, _)| !overrides.iter().any(|(o, _)| o == k))
            .cloned()
            .collect();
        env.extend(overrides.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        let binary = workspace_binary(&format!("promptops-{service}")).unwrap();
        let process = ServiceProcess::spawn(
            name,
            binary,
            Vec::new(),
            env,
            self.dir.path().join(format!("{name}.log")),
        );
        assert!(
            wait_http_ok(ready_url, Duration::from_secs(30)).await,
            "{name} did not become ready:\n{}",
            process.log()
        );
        process
    }
}

/// `promptops serve` on the embedded default, in a temporary data dir.
#[derive(Debug)]
pub struct AllInOne {
    pub process: ServiceProcess,
    pub http_port: u16,
    pub grpc_ports: BTreeMap<&'static str, u16>,
    pub dir: TempDir,
}

impl AllInOne {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts for a benchmark: logs at `warn` and rate limits out of the way
    /// (they would answer 429 to the load).
    pub async fn start_for_benchmarks() -> Self {
        Self::start_with(&[
            ("PROMPTOPS_LOG", "warn"),
            ("PROMPTOPS_RATE_LIMIT_PER_KEY", "1000000"),
            ("PROMPTOPS_RATE_LIMIT_PER_KEY_BURST", "1000000"),
            ("PROMPTOPS_RATE_LIMIT_PER_ORG", "1000000"),
            ("PROMPTOPS_RATE_LIMIT_PER_ORG_BURST", "1000000"),
        ])
        .await
    }

    /// Starts with extra environment variables. A free port found taken by
    /// the time the process binds it (another test's process got it first)
    /// means a new try on new ports, up to three.
    pub async fn start_with(extra_env: &[(&str, &str)]) -> Self {
        let binary = workspace_binary("promptops").unwrap();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let dir = tempfile::Builder::new()
                .prefix("promptops-aio-")
                .tempdir()
                .unwrap();
            let (http_port, grpc_ports) = allocate_ports();
            let mut env = local_env(http_port, &grpc_ports, &dir);
            env.extend(extra_env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
            let process = ServiceProcess::spawn(
                "promptops",
                binary.clone(),
                vec!["serve".into()],
                env,
                dir.path().join("promptops.log"),
            );
            let all = Self {
                process,
                http_port,
                grpc_ports,
                dir,
            };
            let outcome = started(&format!("{}/readyz", all.http()), &all.process).await;
            if outcome == Started::Ready {
                return all;
            }
            assert!(
                outcome == Started::PortTaken && attempt < START_ATTEMPTS,
                "promptops serve did not become ready:\n{}",
                all.process.log()
            );
        }
    }

    pub fn http(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    pub fn grpc_url(&self, service: &str) -> String {
        format!("http://127.0.0.1:{}", self.grpc_ports[service])
    }
}

/// A gRPC request carrying a bearer credential.
pub fn with_token<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// The password every e2e account uses.
pub const PASSWORD: &str = "correct horse battery staple";

/// A small JSON client of the HTTP API.
#[derive(Debug, Clone)]
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
}

impl Api {
    pub fn new(base: String) -> Self {
        Self {
            http: reqwest::Client::new(),
            base,
        }
    }

    /// One request; the body is parsed as JSON (null when empty or not JSON).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> (reqwest::StatusCode, serde_json::Value) {
        let (status, text) = self.text(method, path, bearer, body).await;
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        )
    }

    /// One request; the whole body as text (an SSE stream read to its end).
    pub async fn text(
        &self,
        method: reqwest::Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> (reqwest::StatusCode, String) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.text().await.unwrap())
    }

    /// Signs `email` up (asserting 201) and returns the token response.
    pub async fn signup(&self, email: &str) -> serde_json::Value {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                "/api/v1/auth/signup",
                None,
                Some(serde_json::json!({"email": email, "password": PASSWORD})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body
    }

    /// Signs `email` up, invites them into `org` as `role` (by the owner's
    /// token), accepts, and logs them in there; returns the login response.
    pub async fn member(&self, owner_token: &str, org: &str, email: &str, role: &str) -> serde_json::Value {
        let own = self.signup(email).await;
        let (status, invitation) = self
            .call(
                reqwest::Method::POST,
                "/api/v1/invitations",
                Some(owner_token),
                Some(serde_json::json!({"email": email, "role": role})),
            )
            .await;
        assert_eq!(status, 201, "{invitation}");
        let path = format!(
            "/api/v1/orgs/{org}/invitations/{}/accept",
            invitation["invitation_id"].as_str().unwrap()
        );
        let (status, body) = self
            .call(reqwest::Method::POST, &path, own["access_token"].as_str(), None)
            .await;
        assert_eq!(status, 204, "{body}");
        self.login(email, org).await
    }

    /// Logs `email` in to `org_id` (asserting 200).
    pub async fn login(&self, email: &str, org_id: &str) -> serde_json::Value {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                "/api/v1/auth/login",
                None,
                Some(serde_json::json!({"email": email, "password": PASSWORD, "org_id": org_id})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }
}

/// Signs up a new account over HTTP; returns (access token, org id).
pub async fn signup(http_base: &str, email: &str) -> (String, String) {
    let body = Api::new(http_base.to_owned()).signup(email).await;
    (
        body["access_token"].as_str().unwrap().to_owned(),
        body["org_id"].as_str().unwrap().to_owned(),
    )
}

/// A gRPC channel to `url`.
pub async fn channel(url: &str) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(url.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// A text template as the content of a new version.
pub fn text_version(template: &str) -> Option<promptops_proto::prompts::v1::VersionInput> {
    use promptops_proto::prompts::v1::{Template, VersionInput, template};
    Some(VersionInput {
        template: Some(Template {
            kind: Some(template::Kind::Text(template.to_owned())),
        }),
        ..Default::default()
    })
}

/// The standalone mock provider on a free port; its base URL for OpenAI's
/// format is `{url}/v1`.
pub async fn mock_provider(dir: &std::path::Path) -> (ServiceProcess, String) {
    openai_server(dir, "promptops-mock-provider", |addr| vec!["--addr".into(), addr]).await
}

/// The bare forwarding proxy (`forwarding-proxy`) in front of `upstream`:
/// the overhead benchmark's floor. Its process and its URL.
pub async fn forwarding_proxy(dir: &std::path::Path, upstream: &str) -> (ServiceProcess, String) {
    openai_server(dir, "forwarding-proxy", |addr| {
        vec!["--listen".into(), addr, "--upstream".into(), upstream.to_owned()]
    })
    .await
}

/// The workspace's `binary` listening on a free port (`args` gets the
/// address), once its `/v1/models` answers; its process and base URL.
async fn openai_server(
    dir: &std::path::Path,
    binary: &str,
    args: impl FnOnce(String) -> Vec<String>,
) -> (ServiceProcess, String) {
    let port = promptops_testkit::free_port().unwrap();
    let process = ServiceProcess::spawn(
        binary,
        workspace_binary(binary).unwrap(),
        args(format!("127.0.0.1:{port}")),
        Vec::new(),
        dir.join(format!("{binary}.log")),
    );
    let url = format!("http://127.0.0.1:{port}");
    assert!(
        wait_http_ok(&format!("{url}/v1/models"), Duration::from_secs(10)).await,
        "{binary} did not start:\n{}",
        process.log()
    );
    (process, url)
}

/// The `field` of each violation in a problem JSON.
pub fn problem_fields(problem: &serde_json::Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .filter_map(|e| e["field"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_port_taken_by_the_time_the_process_binds_it_is_told_apart() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let http_port = taken.local_addr().unwrap().port();
        let (_, grpc_ports) = allocate_ports();
        let dir = tempfile::tempdir().unwrap();
        let process = ServiceProcess::spawn(
            "promptops",
            workspace_binary("promptops").unwrap(),
            vec!["serve".into()],
            local_env(http_port, &grpc_ports, &dir),
            dir.path().join("promptops.log"),
        );
        let url = format!("http://127.0.0.1:{http_port}/readyz");
        assert_eq!(started(&url, &process).await, Started::PortTaken);
    }
}
