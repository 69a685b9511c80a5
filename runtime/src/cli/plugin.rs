//! `sluice plugin new|test`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};

use crate::plugin::{PluginHost, PluginKind, TestRun, run_test, scaffold};

#[derive(Copy, Clone, ValueEnum)]
pub enum Kind {
    Transform,
    Format,
    Partitioner,
}

impl From<Kind> for PluginKind {
    fn from(k: Kind) -> Self {
        match k {
            Kind::Transform => PluginKind::Transform,
            Kind::Format => PluginKind::Format,
            Kind::Partitioner => PluginKind::Partitioner,
        }
    }
}

#[derive(Copy, Clone, ValueEnum)]
pub enum Lang {
    Rust,
    Python,
}

#[derive(Subcommand)]
pub enum PluginCommand {
    /// Create a plugin crate that builds to wasm32-wasip2 with one command.
    New {
        name: String,
        #[arg(long, value_enum)]
        kind: Kind,
        /// Parent folder of the new crate.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The plugin's language: a Rust crate, or a Python project built with componentize-py.
        #[arg(long, value_enum, default_value = "rust")]
        lang: Lang,
    },
    /// Run a plugin over sample records and print what comes out.
    Test {
        /// The plugin's `.wasm` component.
        wasm: PathBuf,
        #[arg(long, value_enum)]
        kind: Kind,
        /// The plugin's config as JSON.
        #[arg(long, default_value = "{}")]
        config: String,
        /// Records, one value per line (`-`: standard input).
        #[arg(long)]
        input: PathBuf,
        /// Input lines are record envelopes (`{"value", "key", "headers", "timestamp",
        /// "metadata"}`, the shape a file sink with `envelope: true` writes) and output is printed
        /// as envelopes, so a plugin that reads keys, headers or source metadata can be tried.
        #[arg(long)]
        envelopes: bool,
        /// Partition count passed to a partitioner.
        #[arg(long)]
        partitions: Option<u32>,
    },
}

pub fn run(cmd: PluginCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PluginCommand::New {
            name,
            kind,
            dir,
            lang,
        } => {
            let sdk = scaffold::sdk_dir().ok_or_else(|| {
                anyhow::anyhow!(
                    "no cache folder for the plugin SDK: set SLUICE_CACHE_DIR (or HOME) to a writable folder"
                )
            })?;
            match lang {
                Lang::Rust => {
                    let path = scaffold::new_plugin(&name, kind.into(), &dir, &sdk)?;
                    eprintln!(
                        "created {}\nbuild it with: cargo build --release --target wasm32-wasip2 --manifest-path {}/Cargo.toml",
                        path.display(),
                        path.display()
                    );
                }
                Lang::Python => {
                    let path = scaffold::new_python_plugin(&name, kind.into(), &dir, &sdk)?;
                    eprintln!(
                        "created {}\nbuild it with: {}/build.sh (needs `pip install {}`)",
                        path.display(),
                        path.display(),
                        scaffold::COMPONENTIZE_PY
                    );
                }
            }
        }
        PluginCommand::Test {
            wasm,
            kind,
            config,
            input,
            partitions,
            envelopes,
        } => {
            let host = PluginHost::new()?;
            let mut out = std::io::stdout().lock();
            let run = TestRun {
                wasm: &wasm,
                kind: kind.into(),
                config: &config,
                input: &input,
                partitions,
                envelopes,
            };
            run_test(&host, &run, &mut out)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
