//! The `sluice` command line: `run`, `validate`, `schema`, `offsets`, `plugin`.

mod config;
mod kcl;
mod logging;
mod offsets;
mod plugin;
mod progress;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::plugin::PluginHost;
use crate::spec;

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "Move data between Kinesis, DynamoDB, Kafka and files, with WebAssembly plugins.",
    long_about = None
)]
struct Cli {
    /// Log format on standard error.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log filter (also `SLUICE_LOG`), e.g. `debug` or `sluice_runtime=debug`.
    #[arg(long, global = true, env = "SLUICE_LOG", default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run one or more pipelines until their sources are exhausted or SIGINT/SIGTERM.
    Run(run::RunArgs),
    /// Check specs (and the plugins they use) without running anything.
    Validate {
        /// Spec files.
        #[arg(required = true)]
        specs: Vec<PathBuf>,
        /// Print each valid spec as resolved (variables replaced, secrets redacted).
        #[arg(long)]
        print: bool,
        /// Also check that each spec can run with `sluice run --until-caught-up` (its source
        /// has a tip to stop at).
        #[arg(long)]
        until_caught_up: bool,
    },
    /// Print the JSON Schema of specs (for editors: yaml-language-server).
    Schema {
        /// Print the Markdown spec reference instead.
        #[arg(long)]
        markdown: bool,
    },
    /// List, reset, prune and import stored offsets.
    #[command(subcommand)]
    Offsets(offsets::OffsetsCommand),
    /// Create and try out WebAssembly plugins.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
}

/// Runs the command line; the exit code says how it went.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let progress = match &cli.command {
        Command::Run(args) => progress::Display::new(!args.no_progress, cli.log_format),
        _ => progress::Display::new(false, cli.log_format),
    };
    logging::init(cli.log_format, &cli.log, progress.multi());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Run(args) => run::run(args, progress).await,
            Command::Validate {
                specs,
                print,
                until_caught_up,
            } => validate(&specs, print, until_caught_up),
            Command::Schema { markdown } => {
                if markdown {
                    print!("{}", spec::reference::markdown());
                } else {
                    println!("{:#}", spec::json_schema());
                }
                Ok(ExitCode::SUCCESS)
            }
            Command::Offsets(cmd) => offsets::run(cmd).await,
            Command::Plugin(cmd) => plugin::run(cmd),
        }
    });
    // Plugin threads and blocking readers (stdin) must not hold the process open.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, each text once: library errors show their source in
/// their own message (for logs), so `{e:#}` would repeat it.
fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn validate(specs: &[PathBuf], print: bool, until_caught_up: bool) -> anyhow::Result<ExitCode> {
    let host = PluginHost::new()?;
    let mut ok = true;
    for path in specs {
        match spec::load_with(path, Some(&host), until_caught_up) {
            Ok(loaded) => {
                let s = &loaded.spec;
                println!(
                    "{}: ok (pipeline `{}`: {} → {})",
                    path.display(),
                    s.name,
                    s.source.kind(),
                    s.sink.kind()
                );
                if print {
                    println!("{}", serde_yaml::to_string(&loaded.redacted())?);
                }
            }
            Err(errors) => {
                ok = false;
                println!("{errors}");
                println!(
                    "{}: {} error{}",
                    path.display(),
                    errors.0.len(),
                    if errors.0.len() == 1 { "" } else { "s" }
                );
            }
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_cause_already_in_the_message_is_shown_once() {
        let source = std::io::Error::other("table t is missing");
        let e = anyhow::Error::new(std::io::Error::other(format!("store: {source}")))
            .context("offsets list failed");
        assert_eq!(
            super::one_line(&e),
            "offsets list failed: store: table t is missing"
        );
        let e = anyhow::anyhow!("disk full").context("cannot write");
        assert_eq!(super::one_line(&e), "cannot write: disk full");
    }
}
