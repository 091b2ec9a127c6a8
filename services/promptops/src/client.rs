//! Client commands: talk to a running platform at `PROMPTOPS_URL` (default
//! `http://127.0.0.1:8080`) with `PROMPTOPS_API_KEY`, like `gh` or `kubectl`.

use std::io::Write as _;
use std::process::ExitCode;

use promptops_platform::config::Env;

const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// Where the CLI connects and with what credential.
pub struct Target {
    pub url: String,
    api_key: Option<String>,
}

impl Target {
    pub fn from_env() -> Result<Self, String> {
        let env = Env::from_process();
        let url = env
            .http_url("PROMPTOPS_URL", DEFAULT_URL)
            .map_err(|e| e.to_string())?;
        Ok(Self {
            url,
            api_key: env.get("PROMPTOPS_API_KEY").map(str::to_owned),
        })
    }

    fn get(&self, client: &reqwest::Client, path: &str) -> reqwest::RequestBuilder {
        self.request(client, reqwest::Method::GET, path)
    }

    pub fn request(
        &self,
        client: &reqwest::Client,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        let request = client.request(method, format!("{}{path}", self.url));
        match &self.api_key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    /// Sends `request` and reads its JSON answer (null when none); exit
    /// code 2, said on stderr, when the platform cannot be reached.
    pub async fn send_json(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<(reqwest::StatusCode, serde_json::Value), ExitCode> {
        match request.send().await {
            Ok(response) => {
                let status = response.status();
                Ok((status, response.json().await.unwrap_or(serde_json::Value::Null)))
            }
            Err(err) => {
                eprintln!("cannot reach promptops at {}: {err}", self.url);
                Err(ExitCode::from(2))
            }
        }
    }
}

/// `promptops status`: exit 0 when ready, 1 when not, 2 when unreachable.
pub fn status(json: bool) -> ExitCode {
    let target = match Target::from_env() {
        Ok(target) => target,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::from(64);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("cannot start: {err}");
            return ExitCode::from(70);
        }
    };
    runtime.block_on(async {
        let client = reqwest::Client::new();
        let response = match target.get(&client, "/readyz").send().await {
            Ok(response) => response,
            Err(err) => {
                eprintln!("cannot reach promptops at {}: {err}", target.url);
                return ExitCode::from(2);
            }
        };
        let ready = response.status().is_success();
        let body: serde_json::Value = response.json().await.unwrap_or(serde_json::Value::Null);
        let mut out = std::io::stdout().lock();
        let written = if json {
            writeln!(out, "{body}")
        } else if ready {
            writeln!(out, "promptops at {} is ready", target.url)
        } else {
            writeln!(
                out,
                "promptops at {} is NOT ready: {}",
                target.url, body["failing"]
            )
        };
        if written.is_err() {
            return ExitCode::from(74);
        }
        if ready {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        }
    })
}
