//! `promptops`: the platform in one binary.
//!
//! - `promptops` or `promptops serve`: all six services in one process, on
//!   the embedded event log and SQLite unless `NATS_URL` / `DATABASE_URL` say
//!   otherwise;
//! - `promptops serve <service>`: one service (as each service's own binary does);
//! - client commands (`promptops status`, and more with later issues) talk to a
//!   running platform at `PROMPTOPS_URL` with `PROMPTOPS_API_KEY`.

mod audit;
mod billing;
mod client;
mod eval;
mod files;
mod serve;

use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};
use promptops_evaluation::metrics::ReferenceMetric;

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
    /// Sync a directory of YAML prompt files with the registry.
    Prompts {
        #[command(subcommand)]
        command: PromptsCommand,
    },
    /// Evaluation: score files offline.
    Eval {
        #[command(subcommand)]
        command: EvalCommand,
    },
    /// The audit trail of the platform at PROMPTOPS_URL.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Billing of the platform at PROMPTOPS_URL.
    Billing {
        #[command(subcommand)]
        command: BillingCommand,
    },
    /// Read models: rebuild one from the event log.
    Projections {
        #[command(subcommand)]
        command: ProjectionsCommand,
    },
    /// Check that the platform at PROMPTOPS_URL is up and ready.
    Status {
        /// Print the readiness document as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Verify the hash chains (and signed checkpoints) of your org's trail;
    /// prints JSON, exits 1 naming the first broken entry.
    Verify {
        /// From this time (RFC 3339, inclusive).
        #[arg(long)]
        from: Option<String>,
        /// Before this time (RFC 3339, exclusive).
        #[arg(long)]
        to: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum BillingCommand {
    /// Prove the usage ledger equals the log's terminal runs for a range
    /// (default: the last 30 days); prints JSON, exits 1 listing any gap.
    Reconcile {
        /// From this time (RFC 3339, inclusive), by the run's end.
        #[arg(long)]
        from: Option<String>,
        /// Before this time (RFC 3339, exclusive).
        #[arg(long)]
        to: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum ProjectionsCommand {
    /// Drop a read model and replay it from the start of the log (stop the
    /// service that owns it first): audit_trail, analytics or usage_ledger.
    Rebuild { name: String },
}

#[derive(Debug, Subcommand)]
enum EvalCommand {
    /// Score hypotheses against references, one segment per line, and print
    /// JSON {"metric", "corpus", "sentences"} (BLEU as sacrebleu, ROUGE as rouge-score).
    Score {
        /// bleu, rouge1, rouge2, rougeL or rougeLsum.
        #[arg(long)]
        metric: ReferenceMetric,
        /// The system outputs, one per line.
        #[arg(long)]
        hypotheses: std::path::PathBuf,
        /// The references, one per line, aligned with the hypotheses.
        #[arg(long)]
        references: std::path::PathBuf,
        /// ROUGE only: Porter-stem tokens longer than three characters.
        #[arg(long)]
        stem: bool,
    },
    /// Start an evaluation run on the platform at PROMPTOPS_URL, follow it to
    /// its end and print it as JSON; optionally fail on regressions.
    Run {
        /// The run as JSON: the body of POST /api/v1/evaluation-runs.
        #[arg(long)]
        spec: std::path::PathBuf,
        /// A base run to compare with (needs --gate-metric).
        #[arg(long)]
        against: Option<String>,
        /// Exit 3 when any case of this metric is lower than in the base run.
        #[arg(long)]
        gate_metric: Option<String>,
        /// How much lower a case may score before it counts as regressed.
        #[arg(long, default_value_t = 0.0)]
        threshold: f64,
    },
}

#[derive(Debug, Subcommand)]
enum PromptsCommand {
    /// Send the files to the registry: a new version only where a file differs.
    Push {
        dir: std::path::PathBuf,
        /// Print what would change; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Write the latest version of every prompt (or of one folder) as files.
    Pull {
        dir: std::path::PathBuf,
        /// Only this folder and below it.
        #[arg(long)]
        folder: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve { service: None }) {
        Command::Serve { service } => serve::main(service.as_deref()),
        Command::Status { json } => client::status(json),
        Command::Audit {
            command: AuditCommand::Verify { from, to },
        } => audit::verify(from.as_deref(), to.as_deref()),
        Command::Billing {
            command: BillingCommand::Reconcile { from, to },
        } => billing::reconcile(from.as_deref(), to.as_deref()),
        Command::Projections {
            command: ProjectionsCommand::Rebuild { name },
        } if name == promptops_billing::ledger::PROJECTION => billing::rebuild_ledger(),
        Command::Projections {
            command: ProjectionsCommand::Rebuild { name },
        } => audit::rebuild(&name),
        Command::Eval {
            command:
                EvalCommand::Score {
                    metric,
                    hypotheses,
                    references,
                    stem,
                },
        } => eval::score(metric, &hypotheses, &references, stem),
        Command::Eval {
            command:
                EvalCommand::Run {
                    spec,
                    against,
                    gate_metric,
                    threshold,
                },
        } => eval::run(&spec, against.as_deref(), gate_metric.as_deref(), threshold),
        Command::Prompts {
            command: PromptsCommand::Push { dir, dry_run },
        } => files::push(&dir, dry_run),
        Command::Prompts {
            command: PromptsCommand::Pull { dir, folder },
        } => files::pull(&dir, folder.as_deref()),
    }
}
