//! `promptops-mock-provider`: the mock provider as its own HTTP server, in
//! OpenAI's and Anthropic's wire formats (see `mock_server` for the models
//! and the fault-injection headers).
//!
//!     promptops-mock-provider --addr 127.0.0.1:8090 --latency-ms 20 --error-rate 0.01

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use promptops_execution::mock_server::{MockConfig, router};

#[derive(Debug, Parser)]
#[command(
    name = "promptops-mock-provider",
    version,
    about = "A mock LLM provider (OpenAI and Anthropic formats)"
)]
struct Args {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:8090", env = "MOCK_PROVIDER_ADDR")]
    addr: SocketAddr,
    /// Added before the first byte of every answer.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// The fraction of requests (0-1) answered 500.
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !(0.0..=1.0).contains(&args.error_rate) {
        eprintln!("--error-rate must be between 0 and 1");
        return ExitCode::from(64);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("cannot start: {err}");
            return ExitCode::from(70);
        }
    };
    runtime.block_on(async {
        let listener = match tokio::net::TcpListener::bind(args.addr).await {
            Ok(listener) => listener,
            Err(err) => {
                eprintln!("cannot listen on {}: {err}", args.addr);
                return ExitCode::from(70);
            }
        };
        eprintln!("mock provider listening on http://{}", args.addr);
        let app = router(MockConfig {
            latency_ms: args.latency_ms,
            error_rate: args.error_rate,
            ..MockConfig::default()
        });
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        match axum::serve(listener, app).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("server failed: {err}");
                ExitCode::from(70)
            }
        }
    })
}
