//! Configuration from environment variables.
//!
//! Values are read through [`Env`], a plain map, so parsing is tested
//! without touching the process environment. Every error names the variable
//! and what was wrong; `main` prints it and exits with code 64.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// A configuration value that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {variable}={value:?}: {reason}")]
pub struct ConfigError {
    pub variable: String,
    pub value: String,
    pub reason: String,
}

/// A snapshot of environment variables.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: HashMap<String, String>,
}

impl Env {
    /// The process environment (non-UTF-8 values are skipped).
    pub fn from_process() -> Self {
        Self {
            vars: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
        }
    }

    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        }
    }

    /// The value, if set and not blank.
    pub fn get(&self, variable: &str) -> Option<&str> {
        self.vars
            .get(variable)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    pub fn string(&self, variable: &str, default: &str) -> String {
        self.get(variable).unwrap_or(default).to_owned()
    }

    /// Parses the value with `FromStr`, or returns the default when unset.
    pub fn parse<T>(&self, variable: &str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        match self.get(variable) {
            None => Ok(default),
            Some(value) => value.parse().map_err(|e: T::Err| ConfigError {
                variable: variable.to_owned(),
                value: value.to_owned(),
                reason: e.to_string(),
            }),
        }
    }

    pub fn socket_addr(&self, variable: &str, default: &str) -> Result<SocketAddr, ConfigError> {
        let value = self.string(variable, default);
        value.parse().map_err(|_| ConfigError {
            variable: variable.to_owned(),
            value: value.clone(),
            reason: "expected HOST:PORT with an IP address, e.g. 127.0.0.1:8080".into(),
        })
    }

    /// An `http://` or `https://` URL.
    pub fn http_url(&self, variable: &str, default: &str) -> Result<String, ConfigError> {
        let value = self.string(variable, default);
        if value.starts_with("http://") || value.starts_with("https://") {
            Ok(value.trim_end_matches('/').to_owned())
        } else {
            Err(ConfigError {
                variable: variable.to_owned(),
                value,
                reason: "expected an http:// or https:// URL".into(),
            })
        }
    }

    pub fn seconds(&self, variable: &str, default: u64) -> Result<Duration, ConfigError> {
        self.parse::<u64>(variable, default).map(Duration::from_secs)
    }
}

/// `PROMPTOPS_RUN_PAYLOAD_RETENTION_DAYS` (90): how long run payloads
/// (outputs, variables) stay in the run history unless an org chose. Read by
/// the execution service (which prunes) and the audit service (which shows
/// the policy).
pub fn run_payload_retention_days(env: &Env) -> Result<u32, ConfigError> {
    let days = env.parse::<u32>("PROMPTOPS_RUN_PAYLOAD_RETENTION_DAYS", 90)?;
    if (1..=36_500).contains(&days) {
        Ok(days)
    } else {
        Err(ConfigError {
            variable: "PROMPTOPS_RUN_PAYLOAD_RETENTION_DAYS".into(),
            value: days.to_string(),
            reason: "expected 1 to 36500 days".into(),
        })
    }
}

/// Where the event log lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventLogConfig {
    /// `NATS_URL` is set: JetStream.
    JetStream { url: String, replicas: usize },
    /// `NATS_URL` is unset: the embedded log in `<data dir>/eventlog.db`.
    Embedded { path: PathBuf },
}

/// Where the service's own database lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseConfig {
    /// `DATABASE_URL=postgres://…`: one schema per service.
    Postgres { url: String },
    /// `DATABASE_URL` unset: `<data dir>/<service>.db`.
    Sqlite { data_dir: PathBuf },
}

/// Settings every service shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommonConfig {
    pub event_log: EventLogConfig,
    pub database: DatabaseConfig,
    pub data_dir: PathBuf,
    /// How long in-flight requests may take to finish after shutdown begins.
    pub shutdown_grace: Duration,
}

impl CommonConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let data_dir = PathBuf::from(env.string("PROMPTOPS_DATA_DIR", "./data"));
        let event_log = match env.get("NATS_URL") {
            Some(url) => {
                if !(url.starts_with("nats://") || url.starts_with("tls://") || !url.contains("://")) {
                    return Err(ConfigError {
                        variable: "NATS_URL".into(),
                        value: url.into(),
                        reason: "expected nats://HOST:PORT".into(),
                    });
                }
                let replicas = env.parse::<usize>("PROMPTOPS_NATS_REPLICAS", 1)?;
                if !(1..=5).contains(&replicas) {
                    return Err(ConfigError {
                        variable: "PROMPTOPS_NATS_REPLICAS".into(),
                        value: replicas.to_string(),
                        reason: "JetStream allows 1 to 5 replicas".into(),
                    });
                }
                EventLogConfig::JetStream {
                    url: url.to_owned(),
                    replicas,
                }
            }
            None => EventLogConfig::Embedded {
                path: data_dir.join("eventlog.db"),
            },
        };
        let database = match env.get("DATABASE_URL") {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                DatabaseConfig::Postgres { url: url.to_owned() }
            }
            Some(url) => {
                return Err(ConfigError {
                    variable: "DATABASE_URL".into(),
                    value: redact_url(url),
                    reason: "expected postgres://…; leave it unset for the embedded SQLite files".into(),
                });
            }
            None => DatabaseConfig::Sqlite {
                data_dir: data_dir.clone(),
            },
        };
        Ok(Self {
            event_log,
            database,
            data_dir,
            shutdown_grace: env.seconds("PROMPTOPS_SHUTDOWN_GRACE_SECS", 10)?,
        })
    }
}

/// The configuration of a service that serves gRPC on one port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    pub service: ServiceName,
    /// `PROMPTOPS_<SERVICE>_GRPC_ADDR`.
    pub grpc_addr: SocketAddr,
    /// Where the keys and the introspection API are.
    pub auth: crate::authn::AuthConfig,
    pub common: CommonConfig,
}

impl ServiceConfig {
    pub fn from_env(service: ServiceName, env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            service,
            grpc_addr: service.grpc_addr(env)?,
            auth: crate::authn::AuthConfig::from_env(env)?,
            common: CommonConfig::from_env(env)?,
        })
    }
}

/// The gRPC listen address and the upstream URL of each service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceName {
    Gateway,
    Prompts,
    Execution,
    Evaluation,
    Billing,
    Audit,
}

impl ServiceName {
    pub const ALL: [ServiceName; 6] = [
        ServiceName::Gateway,
        ServiceName::Prompts,
        ServiceName::Execution,
        ServiceName::Evaluation,
        ServiceName::Billing,
        ServiceName::Audit,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ServiceName::Gateway => "gateway",
            ServiceName::Prompts => "prompts",
            ServiceName::Execution => "execution",
            ServiceName::Evaluation => "evaluation",
            ServiceName::Billing => "billing",
            ServiceName::Audit => "audit",
        }
    }

    pub fn default_grpc_port(self) -> u16 {
        match self {
            ServiceName::Gateway => 50051,
            ServiceName::Prompts => 50052,
            ServiceName::Execution => 50053,
            ServiceName::Evaluation => 50054,
            ServiceName::Billing => 50055,
            ServiceName::Audit => 50056,
        }
    }

    /// `PROMPTOPS_<NAME>_GRPC_ADDR`, where the service listens.
    pub fn grpc_addr_variable(self) -> String {
        format!("PROMPTOPS_{}_GRPC_ADDR", self.as_str().to_uppercase())
    }

    /// `PROMPTOPS_<NAME>_URL`, where other services reach it.
    pub fn url_variable(self) -> String {
        format!("PROMPTOPS_{}_URL", self.as_str().to_uppercase())
    }

    pub fn grpc_addr(self, env: &Env) -> Result<SocketAddr, ConfigError> {
        env.socket_addr(
            &self.grpc_addr_variable(),
            &format!("127.0.0.1:{}", self.default_grpc_port()),
        )
    }

    pub fn url(self, env: &Env) -> Result<String, ConfigError> {
        env.http_url(
            &self.url_variable(),
            &format!("http://127.0.0.1:{}", self.default_grpc_port()),
        )
    }

    pub fn parse(name: &str) -> Option<ServiceName> {
        ServiceName::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl std::fmt::Display for ServiceName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A URL with any password replaced, safe to print.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_embedded_single_machine_setup() {
        let config = CommonConfig::from_env(&Env::default()).unwrap();
        assert_eq!(
            config.event_log,
            EventLogConfig::Embedded {
                path: PathBuf::from("./data/eventlog.db")
            }
        );
        assert_eq!(
            config.database,
            DatabaseConfig::Sqlite {
                data_dir: PathBuf::from("./data")
            }
        );
        assert_eq!(
            ServiceName::Audit.grpc_addr(&Env::default()).unwrap().to_string(),
            "127.0.0.1:50056"
        );
    }

    #[test]
    fn nats_and_postgres_urls_select_the_production_backends() {
        let env = Env::from_pairs([
            ("NATS_URL", "nats://nats:4222"),
            ("DATABASE_URL", "postgres://u:secret@db/promptops"),
        ]);
        let config = CommonConfig::from_env(&env).unwrap();
        assert!(matches!(
            config.event_log,
            EventLogConfig::JetStream { replicas: 1, .. }
        ));
        assert!(matches!(config.database, DatabaseConfig::Postgres { .. }));
    }

    #[test]
    fn errors_name_the_variable_and_never_print_passwords() {
        let err = CommonConfig::from_env(&Env::from_pairs([("DATABASE_URL", "mysql://u:secret@h/db")]))
            .unwrap_err();
        assert_eq!(err.variable, "DATABASE_URL");
        assert!(!err.to_string().contains("secret"), "{err}");

        let err = ServiceName::Prompts
            .grpc_addr(&Env::from_pairs([("PROMPTOPS_PROMPTS_GRPC_ADDR", "localhost")]))
            .unwrap_err();
        assert_eq!(err.variable, "PROMPTOPS_PROMPTS_GRPC_ADDR");

        let err = CommonConfig::from_env(&Env::from_pairs([("PROMPTOPS_SHUTDOWN_GRACE_SECS", "soon")]))
            .unwrap_err();
        assert_eq!(err.variable, "PROMPTOPS_SHUTDOWN_GRACE_SECS");
    }
}
