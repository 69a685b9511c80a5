//! `sluice offsets import --from-kcl-table TABLE SPEC`: a KCL application's checkpoints become
//! the spec's offsets, written through the spec's offset store.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, bail};
use sluice_connectors::SourceConfig;
use sluice_connectors::kinesis::StartPosition;

use crate::offsets::kcl::{self, Action, Plan, Sentinel, StreamFilter};
use crate::offsets::{self, Reset, ResetTo};
use crate::spec::{LoadedSpec, OffsetsSpec};

/// What `offsets import` was asked.
pub struct ImportArgs {
    pub table: String,
    pub endpoint: Option<String>,
    pub dry_run: bool,
    pub force: bool,
}

pub async fn import(loaded: &LoadedSpec, args: ImportArgs) -> anyhow::Result<ExitCode> {
    let spec = &loaded.spec;
    let name = &spec.name;
    let SourceConfig::Kinesis(source) = &spec.source else {
        bail!(
            "{}: `offsets import --from-kcl-table` imports the checkpoints of a Kinesis stream; the source of pipeline `{name}` is `{}`, not `kinesis`",
            loaded.file.display(),
            spec.source.kind()
        );
    };
    if let OffsetsSpec::Memory(_) = spec.offsets {
        bail!(
            "{}: pipeline `{name}` keeps its offsets in memory (`offsets: {{store: memory}}`), which forgets them when this command exits: name a file, dynamodb or kafka store to import into",
            loaded.file.display()
        );
    }
    let stream = StreamFilter::parse(&source.stream).map_err(|m| anyhow::anyhow!("{m}"))?;

    // The lease table is a DynamoDB table: reach it as the dynamodb offset store does when there
    // is one, else with the Kinesis source's region and credentials (not its endpoint, which
    // serves Kinesis: the SDK's default, `AWS_ENDPOINT_URL_DYNAMODB` included, applies).
    let mut aws = match &spec.offsets {
        OffsetsSpec::Dynamodb(d) => d.aws.clone(),
        _ => {
            let mut a = source.aws.clone();
            a.region = a.region();
            a.endpoint = None;
            a
        }
    };
    if args.endpoint.is_some() {
        aws.endpoint = args.endpoint.clone();
    }
    let sdk = aws
        .sdk_config()
        .await
        .context("AWS configuration for the KCL table")?;
    let client = aws_sdk_dynamodb::Client::new(&sdk);
    let items = kcl::read_table(&client, &args.table).await?;
    let leases = kcl::parse(&args.table, &items)?;
    let plan = kcl::plan(&args.table, &leases, &stream)?;
    let listed = sluice_connectors::kinesis::shards_of(source)
        .await
        .with_context(|| format!("listing the shards of stream {}", stream.name))?;
    let expired = kcl::check_shards(&args.table, &stream.name, &plan, &listed)?;
    let start = match source.start_position {
        StartPosition::Latest => "latest",
        StartPosition::TrimHorizon => "trim_horizon",
        StartPosition::AtTimestamp => "at_timestamp",
    };
    print_plan(&plan, start)?;
    let behind: Vec<&str> = plan
        .steps
        .iter()
        .filter(|s| matches!(s.action, Action::StartPosition(Sentinel::TrimHorizon)))
        .map(|s| s.shard.as_str())
        .collect();
    if !behind.is_empty() && source.start_position != StartPosition::TrimHorizon {
        eprintln!(
            "warning: the KCL would read shard(s) {} from TRIM_HORIZON, but the spec starts shards without an offset at `{start}`: records written before the run are skipped there unless their parents are finished. Set `start_position: trim_horizon` to read them",
            kcl::some(&behind)
        );
    }

    if !expired.is_empty() {
        eprintln!(
            "note: stream {} no longer holds shard(s) {} (expired); their offsets are stored all the same",
            stream.name,
            kcl::some(&expired)
        );
    }

    let store = offsets::open(&spec.offsets);
    let held = store.load(name).await?;
    if !held.is_empty() && !args.force {
        bail!(
            "{} already holds {} offset(s) of pipeline `{name}`: importing would replace them. Check them with `sluice offsets list`, then pass --force to replace them with the KCL's",
            store.describe(),
            held.len()
        );
    }
    let writes = plan.offsets();
    let stale: Vec<String> = held
        .keys()
        .filter(|p| !writes.contains_key(*p))
        .map(|p| p.to_string())
        .collect();
    let unset = kcl::unset(&plan);
    let left = if unset.is_empty() {
        String::new()
    } else {
        let list: Vec<&str> = unset.into_iter().collect();
        format!(
            "; {} shard(s) left to the start position ({})",
            list.len(),
            kcl::some(&list)
        )
    };
    if args.dry_run {
        eprintln!(
            "dry run: {} offset(s) of `{name}` would be written to {}{}{left}; nothing was written",
            writes.len(),
            store.describe(),
            if stale.is_empty() {
                String::new()
            } else {
                format!(" and {} forgotten ({})", stale.len(), kcl::some(&stale))
            }
        );
        return Ok(ExitCode::SUCCESS);
    }
    // With --force the store ends up as the KCL table says: shards without a KCL position
    // forget what the store held, and start at the spec's start position.
    for p in &stale {
        store.reset(&Reset::one(name, p, ResetTo::Earliest)).await?;
    }
    store.commit(name, &writes).await?;
    tracing::debug!(table = %args.table, pipeline = %name, offsets = writes.len(), "imported KCL checkpoints");
    eprintln!(
        "imported {} offset(s) of `{name}` from KCL table {} into {}{left}",
        writes.len(),
        args.table,
        store.describe()
    );
    Ok(ExitCode::SUCCESS)
}

fn print_plan(plan: &Plan, start: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let width = |f: fn(&kcl::Step) -> usize, min: usize| {
        plan.steps.iter().map(f).max().unwrap_or(0).max(min)
    };
    let (ws, wc) = (
        width(|s| s.shard.len(), 5),
        width(|s| s.checkpoint.len(), 14),
    );
    writeln!(out, "{:ws$}  {:wc$}  SLUICE", "SHARD", "KCL CHECKPOINT")?;
    for s in &plan.steps {
        let what = match &s.action {
            Action::Resume(o) => format!("offset {o}: resumes after the checkpointed (sub-)record"),
            Action::Finished => "finished: its children may start".to_string(),
            Action::FinishedParent { child } => format!(
                "finished: no lease, and its child {child} has progressed (the KCL deletes a parent's lease once its children run)"
            ),
            Action::StartPosition(sentinel) => format!(
                "nothing written: the KCL had not checkpointed it ({}); it starts at the spec's start_position ({start}), or at its start once its parents are finished",
                sentinel.as_str()
            ),
            Action::UnleasedParent { child } => format!(
                "nothing written: parent of {child}, without a lease, and no child has progressed; it starts at the spec's start_position ({start})"
            ),
        };
        writeln!(out, "{:ws$}  {:wc$}  {what}", s.shard, s.checkpoint)?;
    }
    if plan.single_stream {
        eprintln!(
            "note: the leases do not name their stream (a single-stream KCL application): they are taken as the spec's stream's"
        );
    }
    for (stream, n) in &plan.other_streams {
        eprintln!("skipped {n} lease(s) of stream {stream}");
    }
    for p in &plan.pending {
        eprintln!(
            "note: shard {p}: a prepared checkpoint was never committed; the committed checkpoint is imported"
        );
    }
    Ok(())
}
