//! Reading a Kinesis Client Library (KCL) application's lease table, so that its checkpoints
//! become a Sluice pipeline's offsets (`sluice offsets import --from-kcl-table`).
//!
//! A KCL lease table is keyed by `leaseKey` (S): the shard id, or `account:stream:epoch:shardId`
//! in multi-stream mode (early KCL 2 releases wrote `stream:shardId`). Each lease holds
//! `checkpoint` (the last processed record's sequence number, or a sentinel: `TRIM_HORIZON`,
//! `LATEST`, `AT_TIMESTAMP`, `SHARD_END`), `checkpointSubSequenceNumber` (the KPL sub-record
//! inside that record) and `parentShardId` (SS). KCL 3.5 keeps other entities in the same table,
//! tagged with `entityType`; only `LEASE` items (and items without the tag) are leases.
//!
//! The KCL resumes a shard at its checkpoint's record and drops every user record up to and
//! including the checkpointed sub-record. Sluice's offset `<seq>:<sub>` means the same to the
//! Kinesis source (an `AT_SEQUENCE_NUMBER` iterator, then skip), for a plain record as well as an
//! aggregate, so a checkpoint is imported as `<seq>:<sub>` whatever its sub-sequence number.
//!
//! ```
//! use sluice_runtime::offsets::kcl::{self, Action, StreamFilter};
//! use aws_sdk_dynamodb::types::AttributeValue as V;
//! let lease = std::collections::HashMap::from([
//!     ("leaseKey".to_string(), V::S("shardId-000000000001".into())),
//!     ("checkpoint".to_string(), V::S("49590338271490256608559692538361571095921575989136588818".into())),
//!     ("checkpointSubSequenceNumber".to_string(), V::N("3".into())),
//! ]);
//! let leases = kcl::parse("app", &[lease]).unwrap();
//! let plan = kcl::plan("app", &leases, &StreamFilter::parse("orders").unwrap()).unwrap();
//! assert!(matches!(&plan.steps[0].action, Action::Resume(o) if o.as_str().ends_with(":3")));
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, KeyType};
use sluice_connectors::kinesis::{ListedShard, StreamRef};
use sluice_connectors::{Committed, CommittedOffsets, ConnectorError, Offset};

pub type Item = HashMap<String, AttributeValue>;

/// The offset stored for a shard the KCL read to its end: never resumed from (a finished shard
/// is not read again), it only says where the finish came from.
pub const SHARD_END: &str = "SHARD_END";

/// Why an import cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum KclError {
    /// A DynamoDB call on the table failed.
    #[error(transparent)]
    Aws(#[from] ConnectorError),
    #[error("table {table} is not a KCL lease table: {reason}")]
    NotLeaseTable { table: String, reason: String },
    #[error("KCL table {table}: lease `{lease}`: {reason}")]
    BadLease {
        table: String,
        lease: String,
        reason: String,
    },
    #[error("KCL table {table} does not belong to stream {stream}: {reason}")]
    OtherStream {
        table: String,
        stream: String,
        reason: String,
    },
    #[error("KCL table {table} holds no lease of stream {stream}{others}")]
    NoLeases {
        table: String,
        stream: String,
        /// ` (only of streams a, b)` or ` (it holds no lease at all)`.
        others: String,
    },
}

/// A KCL sentinel that names no record: the KCL had not checkpointed the shard yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sentinel {
    TrimHorizon,
    Latest,
    AtTimestamp,
}

impl Sentinel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TrimHorizon => "TRIM_HORIZON",
            Self::Latest => "LATEST",
            Self::AtTimestamp => "AT_TIMESTAMP",
        }
    }
}

/// A lease's `checkpoint`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checkpoint {
    /// The last processed record (and user record inside it).
    Sequence { seq: String, sub: u64 },
    /// The shard was read to its end.
    ShardEnd,
    /// No record processed yet.
    Unstarted(Sentinel),
}

impl Checkpoint {
    fn parse(value: &str, sub: u64) -> Option<Self> {
        Some(match value {
            "SHARD_END" => Self::ShardEnd,
            "TRIM_HORIZON" => Self::Unstarted(Sentinel::TrimHorizon),
            "LATEST" => Self::Unstarted(Sentinel::Latest),
            "AT_TIMESTAMP" => Self::Unstarted(Sentinel::AtTimestamp),
            // Kinesis sequence numbers: `0|[1-9][0-9]{0,128}`.
            s if is_sequence_number(s) => Self::Sequence {
                seq: s.to_string(),
                sub,
            },
            _ => return None,
        })
    }
}

fn is_sequence_number(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 129
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s == "0" || !s.starts_with('0'))
}

/// The stream a multi-stream lease belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseStream {
    pub account: Option<String>,
    pub name: String,
}

impl std::fmt::Display for LeaseStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.account {
            Some(a) => write!(f, "{} (account {a})", self.name),
            None => f.write_str(&self.name),
        }
    }
}

impl LeaseStream {
    /// `account:name:creationEpoch` (KCL 2.3+) or a bare `name` (earlier multi-stream leases).
    fn parse(id: &str) -> Self {
        match id.split(':').collect::<Vec<_>>().as_slice() {
            [account, name, epoch]
                if account.bytes().all(|b| b.is_ascii_digit())
                    && epoch.bytes().all(|b| b.is_ascii_digit()) =>
            {
                Self {
                    account: Some(account.to_string()),
                    name: name.to_string(),
                }
            }
            _ => Self {
                account: None,
                name: id.to_string(),
            },
        }
    }
}

/// One KCL lease, as far as the import reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub key: String,
    /// The stream of a multi-stream lease; `None` in single-stream mode, where the table serves
    /// one stream and the leases do not name it.
    pub stream: Option<LeaseStream>,
    pub shard: String,
    /// As written in the table (`checkpoint`, with `/sub` when the sub-sequence is not 0).
    pub written: String,
    pub checkpoint: Checkpoint,
    pub parents: Vec<String>,
    /// A prepared (two-phase) checkpoint that was never committed: not imported.
    pub pending: Option<String>,
}

/// Which leases belong to the spec's stream.
#[derive(Debug, Clone)]
pub struct StreamFilter {
    pub name: String,
    /// The account, when the spec names the stream by ARN.
    pub account: Option<String>,
}

impl StreamFilter {
    /// The spec's `stream:` (a name or an ARN).
    pub fn parse(stream: &str) -> Result<Self, String> {
        let r = StreamRef::parse(stream)?;
        let account = r
            .arn
            .as_deref()
            .and_then(|a| a.split(':').nth(4))
            .filter(|a| !a.is_empty())
            .map(str::to_string);
        Ok(Self {
            name: r.name,
            account,
        })
    }

    fn matches(&self, s: &LeaseStream) -> bool {
        s.name == self.name
            && match (&self.account, &s.account) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

/// What the import does with one shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Store this offset: reading resumes right after the checkpointed (sub-)record.
    Resume(Offset),
    /// Store the shard as finished (`SHARD_END`): its children may start.
    Finished,
    /// Store the shard as finished although it has no lease: a child of it has progressed, so
    /// the KCL was past it (it deletes a parent's lease once the children run).
    FinishedParent { child: String },
    /// Store nothing: the shard starts at the spec's start position.
    StartPosition(Sentinel),
    /// Store nothing for a lease-less parent whose children have not started either: it is read
    /// from the spec's start position, before its children.
    UnleasedParent { child: String },
}

/// One line of the import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub shard: String,
    /// The KCL's checkpoint as written (or `-` for a shard without a lease).
    pub checkpoint: String,
    pub action: Action,
}

/// The import of one stream's leases.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// By shard id.
    pub steps: Vec<Step>,
    /// Leases of other streams that the table also holds (skipped), by stream.
    pub other_streams: BTreeMap<String, usize>,
    /// Shards with a prepared checkpoint that was never committed (the committed one is
    /// imported).
    pub pending: Vec<String>,
    /// Whether the leases name no stream (a single-stream table: taken as the spec's stream's).
    pub single_stream: bool,
}

impl Plan {
    /// The offsets to store.
    pub fn offsets(&self) -> CommittedOffsets {
        self.steps
            .iter()
            .filter_map(|s| {
                let c = match &s.action {
                    Action::Resume(o) => Committed {
                        offset: o.clone(),
                        finished: false,
                    },
                    Action::Finished | Action::FinishedParent { .. } => Committed {
                        offset: Offset::from(SHARD_END),
                        finished: true,
                    },
                    Action::StartPosition(_) | Action::UnleasedParent { .. } => return None,
                };
                Some((s.shard.as_str().into(), c))
            })
            .collect()
    }
}

/// Checks that `table` is a KCL lease table (keyed by `leaseKey` alone) and reads all its items,
/// strongly consistent.
pub async fn read_table(client: &Client, table: &str) -> Result<Vec<Item>, KclError> {
    let at = format!("KCL table {table}");
    let described = client
        .describe_table()
        .table_name(table)
        .send()
        .await
        .map_err(|e| ConnectorError::call(&at, "DescribeTable", &e))?;
    let keys: Vec<(String, KeyType)> = described
        .table()
        .map(|t| t.key_schema())
        .unwrap_or_default()
        .iter()
        .map(|k| (k.attribute_name().to_string(), k.key_type().clone()))
        .collect();
    if !matches!(keys.as_slice(), [(name, KeyType::Hash)] if name == "leaseKey") {
        let names: Vec<&str> = keys.iter().map(|(n, _)| n.as_str()).collect();
        return Err(KclError::NotLeaseTable {
            table: table.to_string(),
            reason: format!(
                "its key is `{}`, a KCL lease table's is `leaseKey` alone",
                names.join("`, `")
            ),
        });
    }
    let mut out = Vec::new();
    let mut start: Option<Item> = None;
    loop {
        let page = client
            .scan()
            .table_name(table)
            .consistent_read(true)
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .map_err(|e| ConnectorError::call(&at, "Scan", &e))?;
        out.extend(page.items.unwrap_or_default());
        match page.last_evaluated_key.filter(|k| !k.is_empty()) {
            Some(k) => start = Some(k),
            None => return Ok(out),
        }
    }
}

/// The leases among a lease table's items (KCL 3.5 entities other than `LEASE` are skipped).
pub fn parse(table: &str, items: &[Item]) -> Result<Vec<Lease>, KclError> {
    let mut leases = Vec::new();
    for item in items {
        let text = |k: &str| match item.get(k) {
            Some(AttributeValue::S(v)) => Some(v.clone()),
            _ => None,
        };
        if text("entityType").is_some_and(|t| t != "LEASE") {
            continue;
        }
        let Some(key) = text("leaseKey") else {
            continue;
        };
        let bad = |reason: String| KclError::BadLease {
            table: table.to_string(),
            lease: key.clone(),
            reason,
        };
        let sub = match item.get("checkpointSubSequenceNumber") {
            None | Some(AttributeValue::Null(_)) => 0,
            Some(AttributeValue::N(n)) => n.parse::<u64>().map_err(|_| {
                bad(format!(
                    "`checkpointSubSequenceNumber` is `{n}`, not a sub-sequence number"
                ))
            })?,
            Some(other) => {
                return Err(bad(format!(
                    "`checkpointSubSequenceNumber` is not a number: {other:?}"
                )));
            }
        };
        let written = text("checkpoint").ok_or_else(|| {
            bad("it has no `checkpoint` (a string): not a KCL lease, or one this import cannot read".into())
        })?;
        let checkpoint = Checkpoint::parse(&written, sub).ok_or_else(|| {
            bad(format!(
                "`checkpoint` is `{written}`: neither a sequence number nor TRIM_HORIZON, LATEST, AT_TIMESTAMP or SHARD_END"
            ))
        })?;
        let (stream, shard) = match (text("streamName"), text("shardId")) {
            (Some(s), Some(shard)) => (Some(LeaseStream::parse(&s)), shard),
            _ => match key.rsplit_once(':') {
                Some((s, shard)) => (Some(LeaseStream::parse(s)), shard.to_string()),
                None => (None, key.clone()),
            },
        };
        let parents = match item.get("parentShardId") {
            Some(AttributeValue::Ss(v)) => v.clone(),
            Some(AttributeValue::S(v)) => vec![v.clone()],
            _ => Vec::new(),
        };
        let written = if sub > 0 {
            format!("{written}/{sub}")
        } else {
            written
        };
        leases.push(Lease {
            key,
            stream,
            shard,
            written,
            checkpoint,
            parents,
            pending: text("pendingCheckpoint"),
        });
    }
    Ok(leases)
}

/// What to store for the leases of `stream`.
pub fn plan(table: &str, leases: &[Lease], stream: &StreamFilter) -> Result<Plan, KclError> {
    let mut plan = Plan::default();
    let mut mine: BTreeMap<&str, &Lease> = BTreeMap::new();
    for l in leases {
        match &l.stream {
            Some(s) if !stream.matches(s) => {
                *plan.other_streams.entry(s.to_string()).or_default() += 1;
            }
            s => {
                plan.single_stream |= s.is_none();
                if let Some(dup) = mine.insert(&l.shard, l) {
                    return Err(KclError::BadLease {
                        table: table.to_string(),
                        lease: l.key.clone(),
                        reason: format!(
                            "shard {} has a second lease, `{}`: the table mixes single- and multi-stream leases",
                            l.shard, dup.key
                        ),
                    });
                }
            }
        }
    }
    if mine.is_empty() {
        let others = if plan.other_streams.is_empty() {
            " (it holds no lease at all)".to_string()
        } else {
            let names: Vec<&str> = plan.other_streams.keys().map(String::as_str).collect();
            format!(" (only of {})", some(&names))
        };
        return Err(KclError::NoLeases {
            table: table.to_string(),
            stream: stream.name.clone(),
            others,
        });
    }
    // Parents without a lease: the KCL deletes a parent's lease once its children run, and never
    // creates leases for the closed ancestors of shards it started at LATEST. A child that has
    // progressed shows the KCL was past the parent.
    let mut unleased: BTreeMap<&str, (bool, &str)> = BTreeMap::new();
    for l in mine.values() {
        let progressed = !matches!(l.checkpoint, Checkpoint::Unstarted(_));
        for p in &l.parents {
            if !mine.contains_key(p.as_str()) {
                let e = unleased.entry(p).or_insert((progressed, &l.shard));
                if progressed && !e.0 {
                    *e = (true, &l.shard);
                }
            }
        }
    }
    let mut steps: BTreeMap<String, Step> = BTreeMap::new();
    for l in mine.values() {
        if let Some(p) = &l.pending {
            plan.pending.push(format!("{} ({p})", l.shard));
        }
        let action = match &l.checkpoint {
            Checkpoint::Sequence { seq, sub } => {
                Action::Resume(Offset::new(format!("{seq}:{sub}")))
            }
            Checkpoint::ShardEnd => Action::Finished,
            Checkpoint::Unstarted(s) => Action::StartPosition(*s),
        };
        steps.insert(
            l.shard.clone(),
            Step {
                shard: l.shard.clone(),
                checkpoint: l.written.clone(),
                action,
            },
        );
    }
    for (p, (progressed, child)) in unleased {
        let child = child.to_string();
        let action = if progressed {
            Action::FinishedParent { child }
        } else {
            Action::UnleasedParent { child }
        };
        steps.insert(
            p.to_string(),
            Step {
                shard: p.to_string(),
                checkpoint: "-".into(),
                action,
            },
        );
    }
    plan.steps = steps.into_values().collect();
    Ok(plan)
}

/// Checks a plan against the shards the stream holds. Refuses a table none of whose leased shards
/// the stream holds, or with a checkpoint before its shard's first sequence number: such a table
/// is another stream's (single-stream leases do not name theirs). Returns the leased shards the
/// stream no longer holds (expired; their offsets are stored all the same, and never used).
pub fn check_shards(
    table: &str,
    stream: &str,
    plan: &Plan,
    listed: &[ListedShard],
) -> Result<Vec<String>, KclError> {
    let first: HashMap<&str, &str> = listed
        .iter()
        .map(|s| (s.id.as_str(), s.first.as_str()))
        .collect();
    let other = |reason: String| KclError::OtherStream {
        table: table.to_string(),
        stream: stream.to_string(),
        reason,
    };
    let leased: Vec<&Step> = plan.steps.iter().filter(|s| s.checkpoint != "-").collect();
    let missing: Vec<String> = leased
        .iter()
        .filter(|s| !first.contains_key(s.shard.as_str()))
        .map(|s| s.shard.clone())
        .collect();
    if !leased.is_empty() && missing.len() == leased.len() {
        return Err(other(format!(
            "the stream holds none of the {} shard(s) its leases name ({})",
            missing.len(),
            some(&missing)
        )));
    }
    for s in leased {
        let (Action::Resume(o), Some(start)) = (&s.action, first.get(s.shard.as_str())) else {
            continue;
        };
        let seq = o.as_str().split(':').next().unwrap_or_default();
        // Sequence numbers have no leading zeros: shorter is smaller.
        if !start.is_empty() && (seq.len(), seq) < (start.len(), *start) {
            return Err(other(format!(
                "the checkpoint of shard {} ({seq}) is before the shard's first sequence number ({start})",
                s.shard
            )));
        }
    }
    Ok(missing)
}

/// A list for a message: the first ten items, then how many more.
pub fn some<S: AsRef<str>>(items: &[S]) -> String {
    const SHOWN: usize = 10;
    let head: Vec<&str> = items.iter().take(SHOWN).map(AsRef::as_ref).collect();
    match items.len().saturating_sub(SHOWN) {
        0 => head.join(", "),
        more => format!("{} and {more} more", head.join(", ")),
    }
}

/// The shards a plan stores nothing for, for messages.
pub fn unset(plan: &Plan) -> BTreeSet<&str> {
    plan.steps
        .iter()
        .filter(|s| {
            matches!(
                s.action,
                Action::StartPosition(_) | Action::UnleasedParent { .. }
            )
        })
        .map(|s| s.shard.as_str())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(key: &str, checkpoint: &str, sub: Option<u64>, parents: &[&str]) -> Item {
        let mut i = Item::from([
            ("leaseKey".to_string(), AttributeValue::S(key.into())),
            (
                "checkpoint".to_string(),
                AttributeValue::S(checkpoint.into()),
            ),
            ("leaseCounter".to_string(), AttributeValue::N("7".into())),
            (
                "leaseOwner".to_string(),
                AttributeValue::S("worker-1".into()),
            ),
        ]);
        if let Some(s) = sub {
            i.insert(
                "checkpointSubSequenceNumber".into(),
                AttributeValue::N(s.to_string()),
            );
        }
        if !parents.is_empty() {
            i.insert(
                "parentShardId".into(),
                AttributeValue::Ss(parents.iter().map(|p| p.to_string()).collect()),
            );
        }
        i
    }

    fn planned(items: &[Item], stream: &str) -> Result<Plan, KclError> {
        plan(
            "t",
            &parse("t", items)?,
            &StreamFilter::parse(stream).expect("stream"),
        )
    }

    fn action<'a>(p: &'a Plan, shard: &str) -> &'a Action {
        &p.steps
            .iter()
            .find(|s| s.shard == shard)
            .unwrap_or_else(|| panic!("no step for {shard}: {p:?}"))
            .action
    }

    #[test]
    fn checkpoints_map_to_offsets_finishes_and_start_positions() {
        let p = planned(
            &[
                lease("s-0", "SHARD_END", Some(0), &[]),
                lease("s-1", "4959000000000000000001", Some(0), &["s-0"]),
                lease("s-2", "4959000000000000000002", Some(3), &["s-0"]),
                lease("s-3", "TRIM_HORIZON", None, &[]),
                lease("s-4", "LATEST", Some(0), &[]),
                lease("s-5", "AT_TIMESTAMP", Some(0), &[]),
            ],
            "orders",
        )
        .expect("plan");
        assert!(p.single_stream);
        assert_eq!(action(&p, "s-0"), &Action::Finished);
        // `:0` too: the KCL skips the checkpointed record (or sub-record 0 of an aggregate).
        assert_eq!(
            action(&p, "s-1"),
            &Action::Resume(Offset::from("4959000000000000000001:0"))
        );
        assert_eq!(
            action(&p, "s-2"),
            &Action::Resume(Offset::from("4959000000000000000002:3"))
        );
        assert_eq!(
            action(&p, "s-3"),
            &Action::StartPosition(Sentinel::TrimHorizon)
        );
        assert_eq!(action(&p, "s-4"), &Action::StartPosition(Sentinel::Latest));
        assert_eq!(
            action(&p, "s-5"),
            &Action::StartPosition(Sentinel::AtTimestamp)
        );
        let o = p.offsets();
        assert_eq!(o.len(), 3);
        assert!(o["s-0"].finished);
        assert!(!o["s-2"].finished);
        assert_eq!(unset(&p), BTreeSet::from(["s-3", "s-4", "s-5"]));
    }

    #[test]
    fn a_parent_without_a_lease_is_finished_only_when_a_child_has_progressed() {
        let p = planned(
            &[
                lease("s-2", "100", Some(0), &["s-0"]),
                lease("s-3", "TRIM_HORIZON", None, &["s-0"]),
                lease("s-4", "LATEST", None, &["s-1"]),
            ],
            "orders",
        )
        .expect("plan");
        assert_eq!(
            action(&p, "s-0"),
            &Action::FinishedParent {
                child: "s-2".into()
            }
        );
        assert_eq!(
            action(&p, "s-1"),
            &Action::UnleasedParent {
                child: "s-4".into()
            }
        );
        assert!(p.offsets()["s-0"].finished);
        assert!(!p.offsets().contains_key("s-1"));
    }

    #[test]
    fn multi_stream_leases_are_filtered_to_the_spec_stream() {
        let items = [
            lease("123456789012:orders:1700000000:s-0", "100", Some(0), &[]),
            lease("123456789012:orders:1700000000:s-1", "SHARD_END", None, &[]),
            lease("123456789012:other:1700000001:s-0", "200", Some(0), &[]),
            // Early KCL 2 multi-stream keys: `stream:shardId`.
            lease("legacy:s-9", "300", Some(0), &[]),
        ];
        let p = planned(&items, "orders").expect("plan");
        assert!(!p.single_stream);
        let shards: Vec<&str> = p.steps.iter().map(|s| s.shard.as_str()).collect();
        assert_eq!(shards, ["s-0", "s-1"]);
        assert_eq!(p.other_streams.len(), 2, "{:?}", p.other_streams);
        // By ARN, the account must match too.
        let arn = "arn:aws:kinesis:us-east-1:123456789012:stream/orders";
        assert_eq!(planned(&items, arn).expect("plan").steps.len(), 2);
        let elsewhere = "arn:aws:kinesis:us-east-1:999999999999:stream/orders";
        let e = planned(&items, elsewhere).expect_err("other account");
        assert!(
            e.to_string()
                .contains("holds no lease of stream orders (only of"),
            "{e}"
        );
        let legacy = planned(&items, "legacy").expect("plan");
        assert_eq!(legacy.steps[0].shard, "s-9");
        // The serializer's own attributes win over the key.
        let mut attrs = lease("anything", "5", Some(1), &[]);
        attrs.insert("streamName".into(), AttributeValue::S("1:orders:2".into()));
        attrs.insert("shardId".into(), AttributeValue::S("s-7".into()));
        assert_eq!(
            planned(&[attrs], "orders").expect("plan").steps[0].shard,
            "s-7"
        );
    }

    #[test]
    fn other_entities_are_skipped_and_bad_leases_refused() {
        let mut worker = lease("worker-1", "x", None, &[]);
        worker.insert(
            "entityType".into(),
            AttributeValue::S("WORKER_METRIC_STATS".into()),
        );
        let mut tagged = lease("s-1", "100", None, &[]);
        tagged.insert("entityType".into(), AttributeValue::S("LEASE".into()));
        let p = planned(&[worker, tagged], "orders").expect("plan");
        assert_eq!(p.steps.len(), 1);

        for (bad, says) in [
            (lease("s-1", "0100", None, &[]), "`checkpoint` is `0100`"),
            (lease("s-1", "ABC", None, &[]), "neither a sequence number"),
            (lease("s-1", "", None, &[]), "`checkpoint` is ``"),
        ] {
            let e = planned(&[bad], "orders").expect_err("bad");
            assert!(e.to_string().contains(says), "{e}");
            assert!(e.to_string().contains("lease `s-1`"), "{e}");
        }
        let mut no_checkpoint = lease("s-1", "1", None, &[]);
        no_checkpoint.remove("checkpoint");
        let e = planned(&[no_checkpoint], "orders").expect_err("bad");
        assert!(e.to_string().contains("no `checkpoint`"), "{e}");
        let e = planned(
            &[lease("s-1", "1", None, &[]), lease("x:s-1", "2", None, &[])],
            "x",
        )
        .expect_err("mixed");
        assert!(e.to_string().contains("second lease"), "{e}");
        let e = planned(&[], "orders").expect_err("empty");
        assert!(e.to_string().contains("no lease at all"), "{e}");
    }

    #[test]
    fn a_table_of_another_stream_is_refused_and_expired_shards_named() {
        let p = planned(
            &[
                lease("s-0", "500", Some(0), &[]),
                lease("s-1", "SHARD_END", None, &[]),
                lease("s-3", "100", Some(0), &["s-9"]),
            ],
            "orders",
        )
        .expect("plan");
        let listed = |v: &[(&str, &str)]| -> Vec<ListedShard> {
            v.iter()
                .map(|(id, first)| ListedShard {
                    id: id.to_string(),
                    first: first.to_string(),
                })
                .collect()
        };
        let gone = check_shards("t", "orders", &p, &listed(&[("s-0", "499"), ("s-3", "99")]))
            .expect("matches");
        assert_eq!(gone, ["s-1"], "s-9 has no lease: not named");
        let e = check_shards("t", "orders", &p, &listed(&[("s-0", "1000")])).expect_err("before");
        assert!(
            e.to_string()
                .contains("the checkpoint of shard s-0 (500) is before the shard's first sequence number (1000)"),
            "{e}"
        );
        let e = check_shards("t", "orders", &p, &listed(&[("x-0", "1")])).expect_err("none");
        assert!(
            e.to_string().contains(
                "does not belong to stream orders: the stream holds none of the 3 shard(s) its leases name (s-0, s-1, s-3)"
            ),
            "{e}"
        );
    }

    #[test]
    fn long_lists_in_messages_are_cut() {
        let ids: Vec<String> = (0..12).map(|i| format!("s-{i}")).collect();
        assert_eq!(
            some(&ids),
            "s-0, s-1, s-2, s-3, s-4, s-5, s-6, s-7, s-8, s-9 and 2 more"
        );
        assert_eq!(some(&ids[..2]), "s-0, s-1");
    }

    #[test]
    fn a_pending_checkpoint_is_reported_not_imported() {
        let mut l = lease("s-1", "100", Some(0), &[]);
        l.insert("pendingCheckpoint".into(), AttributeValue::S("200".into()));
        let p = planned(&[l], "orders").expect("plan");
        assert_eq!(p.pending, ["s-1 (200)"]);
        assert_eq!(action(&p, "s-1"), &Action::Resume(Offset::from("100:0")));
    }
}
