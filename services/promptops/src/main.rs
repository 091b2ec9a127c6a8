//! `promptops`: the platform in one binary.
//!
//! - `promptops` or `promptops serve`: all six services in one process, on
//!   the embedded event log and SQLite unless `NATS_URL` / `DATABASE_URL` say
//!   otherwise;
//! - `promptops serve <service>`: one service (as each service's own binary does);
//! - client commands (`promptops status`, and more with later issues) talk to a
//!   running platform at `PROMPTOPS_URL` with `PROMPTOPS_API_KEY`.

mod client;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "promptops",
    version,
    about = "Prompts as code: registry, execution, evaluation, billing and audit"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the platform: all services (default) or one of them.
    Serve {
        /// gateway, prompts, execution, evaluation, billing or audit.
        service: Option<String>,
    },
    /// Check that the platform at PROMPTOPS_URL is up and ready.
    Status {
        /// Print the readiness document as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve { service: None }) {
        Command::Serve { service } => serve::main(service.as_deref()),
        Command::Status { json } => client::status(json),
    }
}
