//! `sluice run`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use tokio_util::sync::CancellationToken;

use super::progress::{Display, human};
use crate::pipeline::{Pipeline, RunOptions, Summary};
use crate::plugin::PluginHost;
use crate::spec;

#[derive(Args)]
pub struct RunArgs {
    /// Spec files; each is one pipeline, all run in this process.
    #[arg(required = true)]
    specs: Vec<PathBuf>,
    /// Stop each pipeline cleanly once this many records are delivered and committed.
    #[arg(long, value_name = "N")]
    max_records: Option<u64>,
    /// No live progress bars (log lines every 10 s instead).
    #[arg(long)]
    pub no_progress: bool,
    /// Swap in rebuilt plugin `.wasm` files while running (every plugin as with `reload: true`):
    /// a changed file is checked, then runs from the next batch; one that fails the check is
    /// refused with a log line.
    #[arg(long)]
    watch_plugins: bool,
}

pub async fn run(args: RunArgs, display: Display) -> anyhow::Result<ExitCode> {
    let host =
        PluginHost::with_watch(args.watch_plugins).context("cannot start the plugin host")?;
    // Nothing starts unless every spec is valid.
    let mut loaded = Vec::new();
    let mut invalid = false;
    for path in &args.specs {
        match spec::load(path, Some(&host)) {
            Ok(l) => loaded.push(l),
            Err(errors) => {
                invalid = true;
                eprintln!("{errors}");
            }
        }
    }
    if invalid {
        eprintln!("error: invalid spec; nothing was started");
        return Ok(ExitCode::FAILURE);
    }
    let mut names = std::collections::HashSet::new();
    for l in &loaded {
        if !names.insert(l.spec.name.clone()) {
            anyhow::bail!(
                "two specs are named `{}`: pipeline names must be unique (they namespace offsets)",
                l.spec.name
            );
        }
    }
    let mut pipelines = Vec::new();
    for l in &loaded {
        let p = Pipeline::build(l, &host).await.with_context(|| {
            format!(
                "cannot start pipeline `{}` ({})",
                l.spec.name,
                l.file.display()
            )
        })?;
        pipelines.push((p, l.spec.sink.target()));
    }

    let shutdown = CancellationToken::new();
    watch_signals(shutdown.clone());
    let opts = RunOptions {
        max_records: args.max_records,
    };
    let mut tasks = Vec::new();
    for (p, target) in pipelines {
        let stop = CancellationToken::new();
        display.track(p.name(), p.metrics(), stop.clone());
        let token = shutdown.clone();
        let name = p.name().to_string();
        tasks.push((
            name,
            target,
            tokio::spawn(async move {
                let r = p.run(token, opts).await;
                stop.cancel();
                r
            }),
        ));
    }
    let mut failed = false;
    for (name, target, task) in tasks {
        match task.await {
            Ok(Ok(summary)) => report(&summary, &target),
            Ok(Err(e)) => {
                failed = true;
                tracing::error!(pipeline = %name, error = %e, "pipeline failed");
                eprintln!("error: pipeline `{name}` failed: {e}");
            }
            Err(e) => {
                failed = true;
                eprintln!("error: pipeline `{name}` crashed: {e}");
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn report(s: &Summary, target: &str) {
    let secs = s.elapsed.as_secs_f64().max(1e-3);
    let c = s.counts;
    eprintln!(
        "{}: {} records read, {} delivered, {} committed, {} dead-lettered in {:.2}s ({}/s, {:.1} MB/s) → {}",
        s.name,
        c.read,
        c.delivered,
        c.committed,
        c.dead_lettered,
        secs,
        human((c.delivered as f64 / secs) as u64),
        c.bytes_read as f64 / secs / 1e6,
        target
    );
    if let Some(dl) = &s.dead_letter
        && c.dead_lettered > 0
    {
        eprintln!("{}: bad records are in {}", s.name, dl.display());
    }
}

/// First SIGINT/SIGTERM: stop reading, drain, commit. Second: exit at once.
fn watch_signals(shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch SIGTERM");
                    return;
                }
            };
        for n in 0.. {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            if n == 0 {
                tracing::info!(
                    "stopping: draining in-flight records and committing (signal again to exit at once)"
                );
                shutdown.cancel();
            } else {
                eprintln!("exiting without draining");
                std::process::exit(130);
            }
        }
    });
}
