//! Real servers for tests, started by the test itself.
//!
//! [`NatsServer`] runs `nats-server -js` on a free port with its own store
//! directory; [`Postgres`] runs `initdb` + `pg_ctl` in a temporary directory
//! on a free port. Both stop and delete their files on drop, so no test needs
//! a server started by hand and none leaves one behind.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    #[error("{program} not found: {hint}")]
    Missing { program: String, hint: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{what} failed: {detail}")]
    Failed { what: String, detail: String },
}

/// A port nobody listens on right now.
pub fn free_port() -> Result<u16, TestkitError> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `n` distinct ports nobody listens on right now (all held open until all
/// are chosen, so none repeats).
pub fn free_ports(n: usize) -> Result<Vec<u16>, TestkitError> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    listeners.iter().map(|l| Ok(l.local_addr()?.port())).collect()
}

/// Waits until something accepts TCP connections on `port`.
pub fn wait_for_port(port: u16, timeout: Duration) -> Result<(), TestkitError> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(TestkitError::Failed {
        what: format!("waiting for port {port}"),
        detail: format!("nothing listened within {timeout:?}"),
    })
}

/// Finds a program on `PATH` or in the given extra directories.
pub fn find_program(name: &str, extra_dirs: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra_dirs.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// A `nats-server` with JetStream on a free loopback port.
#[derive(Debug)]
pub struct NatsServer {
    child: Child,
    port: u16,
    store: TempDir,
}

impl NatsServer {
    pub fn start() -> Result<Self, TestkitError> {
        let store = tempfile::Builder::new().prefix("promptops-nats-").tempdir()?;
        Self::start_in(store)
    }

    /// Starts on a store directory that may already hold data (a restart).
    ///
    /// The server picks its own free port (`-p -1`) and the port is read from
    /// its log, so parallel tests never race for a port.
    pub fn start_in(store: TempDir) -> Result<Self, TestkitError> {
        let program = find_program("nats-server", &["/usr/sbin"]).ok_or_else(|| TestkitError::Missing {
            program: "nats-server".into(),
            hint: "apt-get install -y nats-server".into(),
        })?;
        let log_path = store.path().join("nats.log");
        let log = std::fs::File::create(&log_path)?;
        let mut child = Command::new(program)
            .args(["-js", "-a", "127.0.0.1", "-p", "-1", "-sd"])
            .arg(store.path().join("jetstream"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let port = loop {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            if let Some(port) = listening_port(&text) {
                break port;
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(TestkitError::Failed {
                    what: "nats-server".into(),
                    detail: format!("exited with {status}: {text}"),
                });
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err(TestkitError::Failed {
                    what: "nats-server".into(),
                    detail: format!("did not report its port within 10s: {text}"),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let server = Self { child, port, store };
        wait_for_port(port, Duration::from_secs(10))?;
        Ok(server)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.store.path().join("nats.log")).unwrap_or_default()
    }
}

/// The client port in a line like
/// `Listening for client connections on 127.0.0.1:41209`.
fn listening_port(log: &str) -> Option<u16> {
    log.lines()
        .find_map(|line| line.split("Listening for client connections on ").nth(1))
        .and_then(|addr| addr.trim().rsplit(':').next())
        .and_then(|port| port.parse().ok())
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A PostgreSQL server in a temporary directory on a free loopback port.
#[derive(Debug)]
pub struct Postgres {
    dir: TempDir,
    port: u16,
    pg_ctl: PathBuf,
    as_postgres_user: bool,
}

const PG_DIRS: &[&str] = &[
    "/usr/lib/postgresql/17/bin",
    "/usr/lib/postgresql/16/bin",
    "/usr/lib/postgresql/15/bin",
];

impl Postgres {
    pub fn start() -> Result<Self, TestkitError> {
        let missing = |program: &str| TestkitError::Missing {
            program: program.into(),
            hint: "apt-get install -y postgresql".into(),
        };
        let initdb = find_program("initdb", PG_DIRS).ok_or_else(|| missing("initdb"))?;
        let pg_ctl = find_program("pg_ctl", PG_DIRS).ok_or_else(|| missing("pg_ctl"))?;
        let dir = tempfile::Builder::new().prefix("promptops-pg-").tempdir()?;
        // PostgreSQL refuses to run as root: run it as `postgres` then.
        let as_postgres_user = is_root();
        if as_postgres_user {
            run(
                Command::new("chown").arg("-R").arg("postgres").arg(dir.path()),
                "chown",
            )?;
        }
        let data = dir.path().join("data");
        let initdb_cmd = format!(
            "{} -D {} -U postgres --auth=trust -E UTF8 --no-sync",
            initdb.display(),
            data.display()
        );
        run_as(&initdb_cmd, as_postgres_user, "initdb")?;
        let mut server = Self {
            port: 0,
            pg_ctl,
            as_postgres_user,
            dir,
        };
        // A port found free can be taken by a parallel test before the
        // server binds it: try again on another.
        let mut attempts = 0;
        loop {
            server.port = free_port()?;
            let start_cmd = format!(
                "{} -D {} -l {} -w -t 30 -o '-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200' start",
                server.pg_ctl.display(),
                data.display(),
                server.dir.path().join("pg.log").display(),
                server.port,
                server.dir.path().display(),
            );
            match run_as(&start_cmd, as_postgres_user, "pg_ctl start") {
                Ok(()) => return Ok(server),
                Err(err) if attempts < 3 => {
                    attempts += 1;
                    let _ = err;
                }
                Err(err) => return Err(err),
            }
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// URL of the `postgres` database.
    pub fn url(&self) -> String {
        self.database_url("postgres")
    }

    pub fn database_url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates a database (each test gets its own) and returns its URL.
    pub fn create_database(&self, name: &str) -> Result<String, TestkitError> {
        let psql = find_program("psql", PG_DIRS).ok_or_else(|| TestkitError::Missing {
            program: "psql".into(),
            hint: "apt-get install -y postgresql-client".into(),
        })?;
        run(
            Command::new(psql)
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "postgres",
                    "-q",
                    "-c",
                ])
                .arg(format!("CREATE DATABASE \"{name}\"")),
            "CREATE DATABASE",
        )?;
        Ok(self.database_url(name))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pg.log")).unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let stop = format!(
            "{} -D {} -m immediate -w stop",
            self.pg_ctl.display(),
            self.dir.path().join("data").display()
        );
        let _ = run_as(&stop, self.as_postgres_user, "pg_ctl stop");
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}

fn run_as(command: &str, as_postgres_user: bool, what: &str) -> Result<(), TestkitError> {
    if as_postgres_user {
        run(
            Command::new("su").args(["postgres", "-s", "/bin/sh", "-c", command]),
            what,
        )
    } else {
        run(Command::new("sh").args(["-c", command]), what)
    }
}

fn run(command: &mut Command, what: &str) -> Result<(), TestkitError> {
    let output = command.stdin(Stdio::null()).output()?;
    if output.status.success() {
        Ok(())
    } else {
        Err(TestkitError::Failed {
            what: what.into(),
            detail: format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        })
    }
}

/// The directory holding this workspace's built binaries (`target/debug`),
/// found from the test executable's own path.
pub fn target_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    // target/debug/deps/<test-binary>
    let deps = exe.parent()?;
    let profile = deps.parent()?;
    Some(profile.to_path_buf())
}

/// A workspace binary built next to the running test (`cargo build` first).
pub fn workspace_binary(name: &str) -> Result<PathBuf, TestkitError> {
    let dir = target_dir().ok_or_else(|| TestkitError::Failed {
        what: "locating target dir".into(),
        detail: "current_exe has no parent".into(),
    })?;
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(TestkitError::Missing {
            program: path.display().to_string(),
            hint: "run `cargo build --workspace` first".into(),
        })
    }
}
