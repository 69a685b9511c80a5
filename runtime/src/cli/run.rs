//! `sluice run`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use tokio_util::sync::CancellationToken;

use super::progress::{Display, human};
use crate::pipeline::supervisor::Supervisor;
use crate::pipeline::{RunOptions, Summary};
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
    /// Serve the operations API (health, readiness, Prometheus metrics, pipelines) on this
    /// address, e.g. `127.0.0.1:9464`. Keep it on loopback unless something in front of it
    /// controls access; `SLUICE_HTTP_TOKEN` protects the control endpoints. Wins over the
    /// `--config` file's `http.address`.
    #[arg(long, env = "SLUICE_HTTP", value_name = "ADDR")]
    http: Option<std::net::SocketAddr>,
    /// This worker's id in shard leases (`offsets.leases`): unique among the processes that run
    /// the same pipeline. Default: the host name and the process id.
    #[arg(long, env = "SLUICE_WORKER_ID", value_name = "ID")]
    worker_id: Option<String>,
    /// The host's settings, independent of the specs (YAML): `http: {address, token_env}`.
    #[arg(long, env = "SLUICE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// End when caught up (for cron jobs and backfills): each partition is read up to the tip it
    /// had when the run started (Kinesis: MillisBehindLatest 0 on each open shard, closed shards
    /// to their end; Kafka: the high watermark; DynamoDB Streams: no newer records), everything
    /// delivered is committed, and the run exits 0. Sources without a tip (stdin, an endless
    /// generator) are refused.
    #[arg(long)]
    until_caught_up: bool,
}

pub async fn run(args: RunArgs, display: Display) -> anyhow::Result<ExitCode> {
    // Signals are watched before anything else: a SIGTERM while plugins compile or specs load
    // stops the run cleanly instead of killing it.
    let shutdown = CancellationToken::new();
    watch_signals(shutdown.clone());
    let config = match &args.config {
        Some(path) => super::config::HostConfig::load(path)?,
        None => super::config::HostConfig::default(),
    };
    let env = |name: &str| std::env::var(name).ok();
    let http = super::config::http_settings(args.http, config.http.as_ref(), &env)?;
    let host =
        PluginHost::with_watch(args.watch_plugins).context("cannot start the plugin host")?;
    // Nothing starts unless every spec is valid.
    let mut loaded = Vec::new();
    let mut invalid = false;
    for path in &args.specs {
        match spec::load_with(path, Some(&host), args.until_caught_up) {
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
    let worker = args
        .worker_id
        .clone()
        .unwrap_or_else(crate::offsets::default_worker_id);
    for l in &mut loaded {
        if let spec::OffsetsSpec::Dynamodb(d) = &mut l.spec.offsets
            && let Some(leases) = &mut d.leases
        {
            leases.worker_id = Some(worker.clone());
        }
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
    let opts = RunOptions {
        max_records: args.max_records,
        until_caught_up: args.until_caught_up,
    };
    let supervisors: Vec<Supervisor> = loaded
        .iter()
        .map(|l| Supervisor::new(&l.spec.name))
        .collect();
    let handles: Vec<_> = supervisors.iter().map(Supervisor::handle).collect();
    if let Some((addr, token)) = http {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (--http)"))?;
        let api = Arc::new(crate::http::Api::new(handles.clone(), token));
        tracing::info!(address = %listener.local_addr().unwrap_or(addr), "serving the operations API");
        tokio::spawn(async move {
            // Serves until the process exits.
            if let Err(e) = crate::http::serve(listener, api, CancellationToken::new()).await {
                tracing::error!(error = %e, "the operations API stopped");
            }
        });
    }
    let host = Arc::new(host);
    let mut tasks = Vec::new();
    for (sup, l) in supervisors.into_iter().zip(loaded) {
        let stop = CancellationToken::new();
        let handle = sup.handle();
        display.track(handle.name(), handle.metrics(), stop.clone());
        let (token, host) = (shutdown.clone(), host.clone());
        let name = handle.name().to_string();
        let target = l.spec.sink.target();
        let file = l.file.clone();
        tasks.push((
            name,
            target,
            file,
            tokio::spawn(async move {
                let r = sup.run(&l, &host, token, opts).await;
                stop.cancel();
                r
            }),
        ));
    }
    // One pipeline failing for good never stops the others: each is awaited to its end.
    let mut failed = false;
    for (name, target, file, task) in tasks {
        match task.await {
            Ok(Ok(summary)) => report(&summary, &target),
            Ok(Err(e)) => {
                failed = true;
                tracing::error!(pipeline = %name, error = %e, "pipeline failed");
                eprintln!("error: pipeline `{name}` ({}) failed: {e}", file.display());
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

/// First SIGINT/SIGTERM: stop reading, drain, commit. Second: exit at once. The handlers are
/// installed before this returns (not when the spawned task first runs).
fn watch_signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM/SIGINT");
            return;
        }
    };
    tokio::spawn(async move {
        for n in 0.. {
            tokio::select! {
                _ = int.recv() => {}
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
