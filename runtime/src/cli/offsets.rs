//! `sluice offsets list|reset|prune|import`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use sluice_connectors::Offset;

use crate::offsets::{self, OffsetRow, ResetTo};
use crate::spec::{self, units::parse_duration};

#[derive(Subcommand)]
pub enum OffsetsCommand {
    /// Show the stored offsets of a spec's pipeline (or of every pipeline in its store).
    List {
        spec: PathBuf,
        /// Every namespace in the store, not only this pipeline's.
        #[arg(long)]
        all: bool,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Move a pipeline's offsets: to the start position (`earliest`) or after a given offset.
    Reset {
        spec: PathBuf,
        /// Only this partition (shard id, topic-partition, file).
        #[arg(long)]
        partition: Option<String>,
        /// `earliest` (forget the offsets) or an offset to resume after.
        #[arg(long, default_value = "earliest")]
        to: String,
    },
    /// Delete stored offsets not updated for a while (all of them without --older-than).
    Prune {
        spec: PathBuf,
        /// Only rows last updated longer ago than this, e.g. `30d`.
        #[arg(long, value_name = "DURATION")]
        older_than: Option<String>,
        /// The namespace to prune (default: the spec's pipeline name).
        #[arg(long, conflicts_with = "all")]
        namespace: Option<String>,
        /// Every namespace in the store.
        #[arg(long)]
        all: bool,
        /// Only show what would be deleted.
        #[arg(long)]
        dry_run: bool,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Copy a KCL application's checkpoints into the spec's offset store, so that Sluice
    /// replaces the KCL consumer without re-reading or skipping records. Stop the KCL
    /// application first.
    Import {
        spec: PathBuf,
        /// The KCL application's lease table (the KCL names it after the application).
        #[arg(long = "from-kcl-table", value_name = "TABLE", required = true)]
        from_kcl_table: String,
        /// The DynamoDB endpoint of the lease table. Default: that of the spec's dynamodb offset
        /// store, or else AWS's (`AWS_ENDPOINT_URL_DYNAMODB` applies). Region and credentials
        /// are the dynamodb store's, or else the Kinesis source's.
        #[arg(long, value_name = "URL")]
        endpoint: Option<String>,
        /// Only show what would be written.
        #[arg(long)]
        dry_run: bool,
        /// Replace the offsets the store already holds for this pipeline.
        #[arg(long)]
        force: bool,
    },
}

fn print_rows(rows: &[OffsetRow], json: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        for r in rows {
            writeln!(out, "{}", serde_json::to_string(r)?)?;
        }
        return Ok(());
    }
    let w = |f: &dyn Fn(&OffsetRow) -> usize, min: usize| {
        rows.iter().map(f).max().unwrap_or(0).max(min)
    };
    let (wn, wp, wo) = (
        w(&|r| r.namespace.len(), 9),
        w(&|r| r.partition.len(), 9),
        w(&|r| r.offset.as_str().len(), 6),
    );
    // Stores with leases add who holds each partition and until when.
    let leased = rows.iter().any(|r| r.owner.is_some());
    let ww = w(&|r| r.owner.as_deref().map_or(1, str::len), 5);
    // The last column is not padded (no trailing blanks).
    let wu = if leased { 23 } else { 0 };
    write!(
        out,
        "{:wn$}  {:wp$}  {:wo$}  {:8}  {:wu$}",
        "NAMESPACE", "PARTITION", "OFFSET", "FINISHED", "UPDATED"
    )?;
    if leased {
        write!(out, "  {:ww$}  LEASE EXPIRES", "OWNER")?;
    }
    writeln!(out)?;
    let time = |t: &chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d %H:%M:%S UTC").to_string();
    for r in rows {
        let offset = match r.offset.as_str() {
            "" => "-",
            o => o,
        };
        write!(
            out,
            "{:wn$}  {:wp$}  {:wo$}  {:8}  {:wu$}",
            r.namespace,
            r.partition,
            offset,
            if r.finished { "yes" } else { "no" },
            time(&r.updated_at)
        )?;
        if leased {
            let expires = r.lease_expires_at.as_ref().map_or("-".into(), time);
            write!(
                out,
                "  {:ww$}  {expires}",
                r.owner.as_deref().unwrap_or("-")
            )?;
        }
        writeln!(out)?;
    }
    Ok(())
}

fn confirm(question: &str) -> bool {
    if !std::io::stdin().is_terminal() {
        return false;
    }
    eprint!("{question} [y/N] ");
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer).is_ok()
        && matches!(answer.trim(), "y" | "Y" | "yes")
}

pub async fn run(cmd: OffsetsCommand) -> anyhow::Result<ExitCode> {
    let path = match &cmd {
        OffsetsCommand::List { spec, .. }
        | OffsetsCommand::Reset { spec, .. }
        | OffsetsCommand::Prune { spec, .. }
        | OffsetsCommand::Import { spec, .. } => spec.clone(),
    };
    let loaded = spec::load(&path, None).map_err(|e| anyhow::anyhow!("{e}"))?;
    let name = loaded.spec.name.clone();
    let store = offsets::open(&loaded.spec.offsets);
    match cmd {
        OffsetsCommand::List { all, json, .. } => {
            let rows = store.list((!all).then_some(name.as_str())).await?;
            print_rows(&rows, json)?;
            if rows.is_empty() && !json {
                eprintln!("no offsets stored in {}", store.describe());
            }
        }
        OffsetsCommand::Reset { partition, to, .. } => {
            let to = match to.as_str() {
                "earliest" => ResetTo::Earliest,
                o => ResetTo::Offset(Offset::from(o)),
            };
            let req = offsets::Reset {
                namespace: name.clone(),
                partition,
                to,
            };
            let rows = store.reset(&req).await?;
            match (&req.to, rows.is_empty()) {
                (_, true) => eprintln!("nothing to reset: no matching offsets of `{name}`"),
                (ResetTo::Earliest, false) => {
                    eprintln!(
                        "forgot {} offset(s) of `{name}`: those partitions start from the source's start position",
                        rows.len()
                    )
                }
                (ResetTo::Offset(o), false) => {
                    eprintln!(
                        "{} partition(s) of `{name}` resume after offset {o}",
                        rows.len()
                    )
                }
            }
        }
        OffsetsCommand::Prune {
            older_than,
            namespace,
            all,
            dry_run,
            yes,
            ..
        } => {
            let older = older_than
                .as_deref()
                .map(parse_duration)
                .transpose()
                .map_err(|e| anyhow::anyhow!("--older-than: {e}"))?;
            let req = offsets::Prune {
                namespace: if all {
                    None
                } else {
                    Some(namespace.unwrap_or(name))
                },
                older_than: older,
                dry_run: true,
            };
            let candidates = store.prune(&req).await?;
            if candidates.is_empty() {
                eprintln!("nothing to prune");
                return Ok(ExitCode::SUCCESS);
            }
            print_rows(&candidates, false)?;
            if dry_run {
                eprintln!("dry run: {} offset(s) would be deleted", candidates.len());
                return Ok(ExitCode::SUCCESS);
            }
            if !yes && !confirm(&format!("delete these {} offset(s)?", candidates.len())) {
                eprintln!("not deleted (pass --yes to delete without asking)");
                return Ok(ExitCode::FAILURE);
            }
            let pruned = store
                .prune(&offsets::Prune {
                    dry_run: false,
                    ..req
                })
                .await
                .context("prune failed")?;
            eprintln!("deleted {} offset(s)", pruned.len());
        }
        OffsetsCommand::Import {
            from_kcl_table,
            endpoint,
            dry_run,
            force,
            ..
        } => {
            let args = super::kcl::ImportArgs {
                table: from_kcl_table,
                endpoint,
                dry_run,
                force,
            };
            return super::kcl::import(&loaded, args).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}
