//! The `dynamodb` offset store: a table keyed by `namespace` (partition key, the pipeline name)
//! and `partition` (sort key), one item per source partition with `offset`, `finished`,
//! `updated_at`, a `generation` counter, and `owner` / `lease_expires_at` for scale-out leases.
//!
//! Every commit is a conditional update on the generation this worker last read or wrote: a
//! worker whose view is stale (another worker, or `sluice offsets reset`, wrote since) is
//! refused instead of moving the offset back. The client connects (and creates the table, with
//! `create_table: true`) on first use, so opening the store does no I/O.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::operation::update_item::{UpdateItemError, UpdateItemOutput};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ReturnValue,
    ReturnValuesOnConditionCheckFailure, ScalarAttributeType, TableStatus,
};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use schemars::JsonSchema;
use serde::Deserialize;
use sluice_connectors::error::{Classify, retriable};
use sluice_connectors::retry::RetryPolicy;
use sluice_connectors::units::Dur;
use sluice_connectors::{Committed, CommittedOffsets, ConnectorError, Offset, PartitionId};
use tokio::sync::OnceCell;

use super::{OffsetError, OffsetRow, OffsetStore, Prune, Reset, ResetTo};

/// The DynamoDB offset store.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DynamoStoreSpec {
    /// The table, keyed by `namespace` (partition key, S) and `partition` (sort key, S).
    #[serde(default = "default_offsets_table")]
    #[schemars(length(min = 3, max = 255))]
    pub table: String,
    /// Create the table (on-demand capacity) on first use when it does not exist.
    #[serde(default)]
    pub create_table: bool,
    /// How often acknowledged progress is committed (and at shutdown).
    #[serde(default = "super::default_commit_interval")]
    pub commit_interval: Dur,
    /// How to reach DynamoDB.
    #[serde(default)]
    pub aws: sluice_connectors::aws::AwsConfig,
    /// Scale-out: several `sluice run` processes with this spec share the source's shards
    /// (Kinesis, DynamoDB Streams) through leases in this table. See docs/scale-out.md.
    pub leases: Option<super::leases::LeaseSpec>,
}

fn default_offsets_table() -> String {
    "sluice_offsets".into()
}

pub(super) type Item = HashMap<String, AttributeValue>;

/// What a lease write's condition says of the row's generation, and what it writes there.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) enum Gen {
    /// The row has no generation yet: the write makes it 1.
    #[default]
    New,
    /// The row is at this generation (as the writer last saw it): the write bumps it. Every
    /// write that changes who holds the lease or its offset is one.
    Was(u64),
    /// Any generation, left as it is: a request for a lease (`next_owner`) and its withdrawal.
    /// They change no ownership, and the owner moves the generation at every renewal and
    /// commit, so a request on the generation it scanned could lose every round.
    Any,
}

impl From<Option<u64>> for Gen {
    fn from(g: Option<u64>) -> Self {
        g.map_or(Gen::New, Gen::Was)
    }
}

/// What a conditional lease write changes (see [`DynamoStore::lease_write`]).
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct LeaseWrite<'a> {
    /// The condition on the row's generation, and its new value.
    pub generation: Gen,
    /// The condition also names the current owner.
    pub owner_is: Option<&'a str>,
    /// `Some(Some(o))`: set the owner; `Some(None)`: remove it.
    pub owner: Option<Option<&'a str>>,
    /// `Some(Some(o))`: ask the owner to hand over to `o` (only when no handoff is pending);
    /// `Some(None)`: clear the request.
    pub next_owner: Option<Option<&'a str>>,
    /// Write `lease_expires_at` (for people) this far from now.
    pub expires_in: Option<Duration>,
    /// The condition also names the pending handoff's new owner.
    pub next_owner_is: Option<&'a str>,
}

/// Commits of one namespace sent at once.
const CONCURRENCY: usize = 16;

/// Retries of one conditional write (or read) on throttling and 5xx errors.
const COMMIT_RETRY: RetryPolicy =
    RetryPolicy::new(8, Duration::from_millis(100), Duration::from_secs(5), 2.0);

/// A conditional UpdateItem, retried on throttling and 5xx errors but never on its condition
/// failing (the caller reads the refusal).
async fn conditional_update(
    what: &str,
    req: &UpdateItemFluentBuilder,
) -> Result<UpdateItemOutput, SdkError<UpdateItemError, HttpResponse>> {
    COMMIT_RETRY
        .run(
            what,
            |e: &SdkError<_, _>| {
                e.code() != Some("ConditionalCheckFailedException") && retriable(e)
            },
            || req.clone().send(),
        )
        .await
}

pub struct DynamoStore {
    spec: DynamoStoreSpec,
    client: OnceCell<Client>,
    /// Who commits, stored as `owner`: host, process and a random suffix.
    owner: String,
    /// The generation of each row as this worker last read or wrote it.
    generations: std::sync::Mutex<HashMap<(String, String), u64>>,
}

impl DynamoStore {
    pub fn new(spec: &DynamoStoreSpec) -> Self {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into());
        // With leases the owner is the worker id: leases and commits name the same worker.
        let owner = match &spec.leases {
            Some(l) => l.worker_id.clone().unwrap_or_else(super::default_worker_id),
            None => format!(
                "{host}:{}:{:08x}",
                std::process::id(),
                rand::random::<u32>()
            ),
        };
        Self {
            spec: spec.clone(),
            client: OnceCell::new(),
            owner,
            generations: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Who this store writes as (with leases: the worker id).
    pub fn owner(&self) -> &str {
        &self.owner
    }

    fn table(&self) -> &str {
        &self.spec.table
    }

    fn gens(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), u64>> {
        // A poisoned lock only means a panic elsewhere while holding a plain map.
        self.generations.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a generation this worker wrote. Its own writes (a commit, a renewal) may answer
    /// out of order: the counter only grows, so a later answer never moves it back.
    fn advance(&self, key: (String, String), g: u64) {
        let mut gens = self.gens();
        let known = gens.entry(key).or_insert(g);
        *known = (*known).max(g);
    }

    /// A failure of the table that is not an SDK error (it is missing, it never became active).
    fn fail(&self, call: &str, message: String) -> OffsetError {
        OffsetError::Backend {
            store: self.describe(),
            source: ConnectorError::retriable(format!("{call}: {message}")),
        }
    }

    fn sdk_fail(&self, call: &str, e: &impl Classify) -> OffsetError {
        OffsetError::Backend {
            store: self.describe(),
            source: ConnectorError::call("dynamodb", call, e),
        }
    }

    async fn client(&self) -> Result<&Client, OffsetError> {
        self.client
            .get_or_try_init(|| async {
                let sdk =
                    self.spec
                        .aws
                        .sdk_config()
                        .await
                        .map_err(|source| OffsetError::Backend {
                            store: self.describe(),
                            source,
                        })?;
                let client = Client::new(&sdk);
                self.ensure_table(&client).await?;
                Ok(client)
            })
            .await
    }

    /// Checks the table exists, creating it when asked to; waits until it is active.
    async fn ensure_table(&self, c: &Client) -> Result<(), OffsetError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        let mut created = false;
        loop {
            match c.describe_table().table_name(self.table()).send().await {
                Ok(out) => {
                    let status = out.table().and_then(|t| t.table_status()).cloned();
                    if status == Some(TableStatus::Active) || status.is_none() {
                        return Ok(());
                    }
                }
                Err(e) if e.code() == Some("ResourceNotFoundException") => {
                    if !self.spec.create_table {
                        return Err(self.fail(
                            "DescribeTable",
                            "the table does not exist: create it (keys `namespace` S, `partition` S) or set `create_table: true`".into(),
                        ));
                    }
                    if !created {
                        self.create_table(c).await?;
                        created = true;
                        tracing::info!(table = %self.table(), "created the offsets table");
                    }
                }
                Err(e) if retriable(&e) => {}
                Err(e) => return Err(self.sdk_fail("DescribeTable", &e)),
            }
            if tokio::time::Instant::now() > deadline {
                return Err(self.fail(
                    "DescribeTable",
                    "the table did not become active within 120s".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn create_table(&self, c: &Client) -> Result<(), OffsetError> {
        let attr = |n: &str| {
            AttributeDefinition::builder()
                .attribute_name(n)
                .attribute_type(ScalarAttributeType::S)
                .build()
        };
        let key = |n: &str, t: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(n)
                .key_type(t)
                .build()
        };
        let build =
            |e: aws_sdk_dynamodb::error::BuildError| self.fail("CreateTable", e.to_string());
        let res = c
            .create_table()
            .table_name(self.table())
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attr("namespace").map_err(build)?)
            .attribute_definitions(attr("partition").map_err(build)?)
            .key_schema(key("namespace", KeyType::Hash).map_err(build)?)
            .key_schema(key("partition", KeyType::Range).map_err(build)?)
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            // Another worker created it first.
            Err(e) if e.code() == Some("ResourceInUseException") => Ok(()),
            Err(e) => Err(self.sdk_fail("CreateTable", &e)),
        }
    }

    /// Every item of one namespace (Query) or of all (Scan), strongly consistent.
    async fn items(&self, namespace: Option<&str>) -> Result<Vec<Item>, OffsetError> {
        let c = self.client().await?;
        // Every page, strongly consistent: the SDK's paginators follow LastEvaluatedKey.
        macro_rules! all_items {
            ($request:expr, $op:literal) => {
                $request
                    .consistent_read(true)
                    .into_paginator()
                    .items()
                    .send()
                    .try_collect()
                    .await
                    .map_err(|e| self.sdk_fail($op, &e))
            };
        }
        match namespace {
            Some(ns) => all_items!(
                c.query()
                    .table_name(self.table())
                    .key_condition_expression("#ns = :ns")
                    .expression_attribute_names("#ns", "namespace")
                    .expression_attribute_values(":ns", AttributeValue::S(ns.to_string())),
                "Query"
            ),
            None => all_items!(c.scan().table_name(self.table()), "Scan"),
        }
    }

    /// A stored item as a row and its generation.
    fn row(&self, item: &Item) -> Result<(OffsetRow, u64), OffsetError> {
        let s = |k: &str| match item.get(k) {
            Some(AttributeValue::S(v)) => Ok(v.clone()),
            _ => Err(OffsetError::Corrupt {
                store: self.describe(),
                message: format!("an item has no string `{k}`: {item:?}"),
            }),
        };
        let namespace = s("namespace")?;
        let partition = s("partition")?;
        let time = |t: &str| DateTime::parse_from_rfc3339(t).map(|t| t.with_timezone(&Utc));
        let owner = match item.get("owner") {
            Some(AttributeValue::S(o)) => Some(o.clone()),
            _ => None,
        };
        let lease_expires_at = match item.get("lease_expires_at") {
            Some(AttributeValue::N(ms)) => ms
                .parse::<i64>()
                .ok()
                .filter(|ms| *ms > 0)
                .and_then(DateTime::from_timestamp_millis),
            _ => None,
        };
        // Without leases `owner` only names the last writer: a row is a lease once a lease
        // write gave it an expiry.
        let owner = owner.filter(|_| lease_expires_at.is_some());
        // A lease taken before any commit has no offset yet.
        let offset = match item.get("offset") {
            Some(AttributeValue::S(o)) => Offset::new(o.clone()),
            _ => Offset::new(String::new()),
        };
        let updated_at = match s("updated_at") {
            Ok(t) => time(&t).map_err(|e| OffsetError::Corrupt {
                store: self.describe(),
                message: format!("`updated_at` of {namespace}/{partition} is not a time: {e}"),
            })?,
            // A lease row being made, seen half-written (moto builds an item attribute by
            // attribute while other requests read it): nothing committed in it yet.
            Err(_) if offset.as_str().is_empty() => DateTime::<Utc>::UNIX_EPOCH,
            Err(e) => return Err(e),
        };
        let generation = match item.get("generation") {
            Some(AttributeValue::N(n)) => n.parse().unwrap_or(0),
            _ => 0,
        };
        Ok((
            OffsetRow {
                offset,
                finished: matches!(item.get("finished"), Some(AttributeValue::Bool(true))),
                namespace,
                partition,
                updated_at,
                owner,
                lease_expires_at,
            },
            generation,
        ))
    }

    fn key(namespace: &str, partition: &str) -> Item {
        HashMap::from([
            (
                "namespace".to_string(),
                AttributeValue::S(namespace.to_string()),
            ),
            (
                "partition".to_string(),
                AttributeValue::S(partition.to_string()),
            ),
        ])
    }

    /// Writes one partition's offset if its generation is still the one this worker knows.
    ///
    /// A refused write whose row shows this worker as its last writer is this worker's own
    /// earlier write whose response was lost (a retry by the SDK or by us, or a commit reported
    /// as failed after it landed): nobody else wrote since, so the generation is adopted (and the
    /// commit is done when the row already holds this offset). Any other refusal is
    /// [`OffsetError::Fenced`].
    pub(super) async fn commit_one(
        &self,
        namespace: &str,
        partition: &str,
        c: &Committed,
    ) -> Result<(), OffsetError> {
        let client = self.client().await?;
        let key = (namespace.to_string(), partition.to_string());
        let mut known = self.gens().get(&key).copied();
        let mut adopted = false;
        loop {
            let next = known.unwrap_or(0) + 1;
            let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            let mut req = client
                .update_item()
                .table_name(self.table())
                .set_key(Some(Self::key(namespace, partition)))
                .update_expression(
                    "SET #o = :o, finished = :f, updated_at = :u, generation = :next, #owner = :me, lease_expires_at = if_not_exists(lease_expires_at, :zero)",
                )
                .expression_attribute_names("#o", "offset")
                .expression_attribute_names("#owner", "owner")
                .expression_attribute_values(":o", AttributeValue::S(c.offset.to_string()))
                .expression_attribute_values(":f", AttributeValue::Bool(c.finished))
                .expression_attribute_values(":u", AttributeValue::S(now))
                .expression_attribute_values(":next", AttributeValue::N(next.to_string()))
                .expression_attribute_values(":me", AttributeValue::S(self.owner.clone()))
                .expression_attribute_values(":zero", AttributeValue::N("0".into()))
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                );
            req = match known {
                Some(g) => req
                    .condition_expression("generation = :g")
                    .expression_attribute_values(":g", AttributeValue::N(g.to_string())),
                None => req.condition_expression("attribute_not_exists(generation)"),
            };
            let sent = conditional_update("offset store UpdateItem", &req).await;
            let e = match sent {
                Ok(_) => {
                    self.advance(key, next);
                    return Ok(());
                }
                Err(e) if e.code() == Some("ConditionalCheckFailedException") => e,
                Err(e) => return Err(self.sdk_fail("UpdateItem", &e)),
            };
            let now_item = e.as_service_error().and_then(|s| match s {
                aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(x) => x.item(),
                _ => None,
            });
            let attr = |item: &Item, k: &str| match item.get(k) {
                Some(AttributeValue::S(v) | AttributeValue::N(v)) => Some(v.clone()),
                _ => None,
            };
            if let Some(item) = now_item
                && !adopted
                && attr(item, "owner").as_deref() == Some(self.owner.as_str())
                && let Some(g) = attr(item, "generation").and_then(|g| g.parse::<u64>().ok())
            {
                let landed = attr(item, "offset").as_deref() == Some(c.offset.as_str())
                    && matches!(item.get("finished"), Some(AttributeValue::Bool(f)) if *f == c.finished);
                tracing::debug!(table = %self.table(), partition, generation = g, landed, "offset commit refused by this worker's own earlier write; adopting its generation");
                if landed {
                    self.advance(key, g);
                    return Ok(());
                }
                known = Some(g);
                adopted = true;
                continue;
            }
            let detail = now_item
                .map(|item| {
                    let g = |k: &str| attr(item, k).unwrap_or_else(|| "?".into());
                    format!(" (now generation {} by {})", g("generation"), g("owner"))
                })
                .unwrap_or_default();
            return Err(OffsetError::Fenced {
                store: self.describe(),
                namespace: namespace.to_string(),
                partition: partition.to_string(),
                detail,
            });
        }
    }

    /// Reads one row's generation again (strongly consistent): after this, commits of the
    /// partition are conditioned on what its previous owner last wrote.
    async fn refresh(&self, namespace: &str, partition: &str) -> Result<(), OffsetError> {
        let item = self.get(namespace, partition).await?;
        let key = (namespace.to_string(), partition.to_string());
        match item {
            Some(item) => {
                let (_, g) = self.row(&item)?;
                self.gens().insert(key, g);
            }
            None => {
                self.gens().remove(&key);
            }
        }
        Ok(())
    }

    /// One row as it stands (strongly consistent read), if it exists.
    pub(super) async fn get(
        &self,
        namespace: &str,
        partition: &str,
    ) -> Result<Option<Item>, OffsetError> {
        let client = self.client().await?;
        let out = COMMIT_RETRY
            .run("offset store GetItem", retriable, || {
                client
                    .get_item()
                    .table_name(self.table())
                    .set_key(Some(Self::key(namespace, partition)))
                    .consistent_read(true)
                    .send()
            })
            .await
            .map_err(|e| self.sdk_fail("GetItem", &e))?;
        Ok(out.item)
    }

    /// Every lease row of a namespace, strongly consistent: (row, generation, next owner).
    pub(super) async fn lease_rows(
        &self,
        namespace: &str,
    ) -> Result<Vec<(OffsetRow, u64, Option<String>)>, OffsetError> {
        let mut out = Vec::new();
        for it in self.items(Some(namespace)).await? {
            let (row, g) = self.row(&it)?;
            let next = match it.get("next_owner") {
                Some(AttributeValue::S(o)) => Some(o.clone()),
                _ => None,
            };
            out.push((row, g, next));
        }
        Ok(out)
    }

    /// The generation this worker knows for a row.
    pub(super) fn known(&self, namespace: &str, partition: &str) -> Option<u64> {
        self.gens()
            .get(&(namespace.to_string(), partition.to_string()))
            .copied()
    }

    /// One conditional lease write, on and to the generation `w.generation` says. `Ok(Ok(row))`
    /// is the row as written,
    /// `Ok(Err(row))` a refused condition with the row as it stands (if any).
    pub(super) async fn lease_write(
        &self,
        namespace: &str,
        partition: &str,
        w: LeaseWrite<'_>,
    ) -> Result<Result<Item, Option<Item>>, OffsetError> {
        let client = self.client().await?;
        let mut sets = vec!["updated_at = if_not_exists(updated_at, :now)".to_string()];
        let mut removes: Vec<&str> = Vec::new();
        let mut cond: Vec<String> = Vec::new();
        let now = Utc::now();
        let mut req = client
            .update_item()
            .table_name(self.table())
            .set_key(Some(Self::key(namespace, partition)))
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(
                ":now",
                AttributeValue::S(now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            )
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        let next = match w.generation {
            Gen::Any => None,
            Gen::Was(g) => {
                cond.push("generation = :g".into());
                req = req.expression_attribute_values(":g", AttributeValue::N(g.to_string()));
                Some(g + 1)
            }
            Gen::New => {
                cond.push("attribute_not_exists(generation)".into());
                Some(1)
            }
        };
        if let Some(next) = next {
            sets.push("generation = :next".into());
            req = req.expression_attribute_values(":next", AttributeValue::N(next.to_string()));
        }
        if let Some(o) = w.next_owner_is {
            cond.push("next_owner = :nextwas".into());
            req = req.expression_attribute_values(":nextwas", AttributeValue::S(o.to_string()));
        }
        if let Some(o) = w.owner_is {
            cond.push("#owner = :was".into());
            req = req.expression_attribute_values(":was", AttributeValue::S(o.to_string()));
        }
        match w.owner {
            Some(Some(o)) => {
                sets.push("#owner = :owner".into());
                req = req.expression_attribute_values(":owner", AttributeValue::S(o.to_string()));
            }
            Some(None) => removes.push("#owner"),
            None => {}
        }
        match w.next_owner {
            Some(Some(o)) => {
                cond.push("attribute_not_exists(next_owner)".into());
                sets.push("next_owner = :nextowner".into());
                req =
                    req.expression_attribute_values(":nextowner", AttributeValue::S(o.to_string()));
            }
            Some(None) => removes.push("next_owner"),
            None => {}
        }
        if let Some(d) = w.expires_in {
            let at = now + chrono::Duration::from_std(d).unwrap_or_default();
            sets.push("lease_expires_at = :exp".into());
            req = req.expression_attribute_values(
                ":exp",
                AttributeValue::N(at.timestamp_millis().to_string()),
            );
        }
        let mut update = format!("SET {}", sets.join(", "));
        if !removes.is_empty() {
            update.push_str(&format!(" REMOVE {}", removes.join(", ")));
        }
        let req = req
            .update_expression(update)
            .condition_expression(cond.join(" AND "));
        let sent = conditional_update("lease UpdateItem", &req).await;
        let key = (namespace.to_string(), partition.to_string());
        match sent {
            Ok(out) => {
                let item = out.attributes.unwrap_or_default();
                if let Some(AttributeValue::N(g)) = item.get("generation")
                    && let Ok(g) = g.parse::<u64>()
                {
                    match w.owner_is {
                        // A take: the row may have been deleted and made again since.
                        None => {
                            self.gens().insert(key, g);
                        }
                        Some(_) => self.advance(key, g),
                    }
                }
                Ok(Ok(item))
            }
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => {
                let old = e.as_service_error().and_then(|s| match s {
                    aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(x) => x.item().cloned(),
                    _ => None,
                });
                Ok(Err(old))
            }
            Err(e) => Err(self.sdk_fail("UpdateItem", &e)),
        }
    }

    async fn delete(&self, row: &OffsetRow, generation: Option<u64>) -> Result<bool, OffsetError> {
        let c = self.client().await?;
        let mut req = c
            .delete_item()
            .table_name(self.table())
            .set_key(Some(Self::key(&row.namespace, &row.partition)));
        if let Some(g) = generation {
            req = req
                .condition_expression("generation = :g")
                .expression_attribute_values(":g", AttributeValue::N(g.to_string()));
        }
        match req.send().await {
            Ok(_) => {
                self.gens()
                    .remove(&(row.namespace.clone(), row.partition.clone()));
                Ok(true)
            }
            // Updated since it was listed: no longer stale, keep it.
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => Ok(false),
            Err(e) => Err(self.sdk_fail("DeleteItem", &e)),
        }
    }
}

#[async_trait]
impl OffsetStore for DynamoStore {
    fn describe(&self) -> String {
        format!("dynamodb table {}", self.spec.table)
    }

    async fn load(&self, namespace: &str) -> Result<CommittedOffsets, OffsetError> {
        let mut out = CommittedOffsets::new();
        let items = self.items(Some(namespace)).await?;
        let mut gens = HashMap::new();
        for it in &items {
            let (row, g) = self.row(it)?;
            gens.insert((row.namespace.clone(), row.partition.clone()), g);
            if row.offset.as_str().is_empty() {
                // A lease without a commit yet.
                continue;
            }
            out.insert(
                row.partition.as_str().into(),
                Committed {
                    offset: row.offset,
                    finished: row.finished,
                },
            );
        }
        let mut known = self.gens();
        known.retain(|(ns, _), _| ns != namespace);
        known.extend(gens);
        Ok(out)
    }

    async fn claim(&self, namespace: &str, partitions: &[PartitionId]) -> Result<(), OffsetError> {
        for p in partitions {
            self.refresh(namespace, p).await?;
        }
        Ok(())
    }

    async fn commit(&self, namespace: &str, offsets: &CommittedOffsets) -> Result<(), OffsetError> {
        type Job<'a> = std::pin::Pin<Box<dyn Future<Output = Result<(), OffsetError>> + Send + 'a>>;
        let jobs: Vec<Job<'_>> = offsets
            .iter()
            .map(|(p, c)| {
                let (p, c) = (p.to_string(), c.clone());
                Box::pin(async move { self.commit_one(namespace, &p, &c).await }) as Job<'_>
            })
            .collect();
        let mut s = futures::stream::iter(jobs).buffer_unordered(CONCURRENCY);
        let mut first_err = None;
        while let Some(r) = s.next().await {
            if let Err(e) = r {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    async fn list(&self, namespace: Option<&str>) -> Result<Vec<OffsetRow>, OffsetError> {
        let mut rows = Vec::new();
        for it in self.items(namespace).await? {
            rows.push(self.row(&it)?.0);
        }
        rows.sort_by(|a, b| (&a.namespace, &a.partition).cmp(&(&b.namespace, &b.partition)));
        Ok(rows)
    }

    async fn reset(&self, req: &Reset) -> Result<Vec<OffsetRow>, OffsetError> {
        let namespace = req.namespace.as_str();
        let existing: BTreeMap<String, OffsetRow> = self
            .list(Some(namespace))
            .await?
            .into_iter()
            .map(|r| (r.partition.clone(), r))
            .collect();
        let c = self.client().await?;
        let mut changed = Vec::new();
        for p in req.targets(existing.keys()) {
            match &req.to {
                ResetTo::Earliest => {
                    if let Some(row) = existing.get(&p)
                        && self.delete(row, None).await?
                    {
                        changed.push(row.clone());
                    }
                }
                ResetTo::Offset(o) => {
                    let now = Utc::now();
                    // An operator's reset wins over any worker: it bumps the generation, so a
                    // worker still running with the old view is refused at its next commit.
                    let out = c
                        .update_item()
                        .table_name(self.table())
                        .set_key(Some(Self::key(namespace, &p)))
                        .update_expression("SET #o = :o, finished = :f, updated_at = :u, #owner = :me ADD generation :one")
                        .expression_attribute_names("#o", "offset")
                        .expression_attribute_names("#owner", "owner")
                        .expression_attribute_values(":o", AttributeValue::S(o.to_string()))
                        .expression_attribute_values(":f", AttributeValue::Bool(false))
                        .expression_attribute_values(
                            ":u",
                            AttributeValue::S(now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
                        )
                        .expression_attribute_values(":me", AttributeValue::S(format!("reset by {}", self.owner)))
                        .expression_attribute_values(":one", AttributeValue::N("1".into()))
                        .return_values(ReturnValue::AllNew)
                        .send()
                        .await
                        .map_err(|e| self.sdk_fail("UpdateItem", &e))?;
                    if let Some(item) = out.attributes() {
                        let (row, g) = self.row(item)?;
                        self.gens().insert((namespace.to_string(), p.clone()), g);
                        changed.push(row);
                    }
                }
            }
        }
        Ok(changed)
    }

    async fn prune(&self, req: &Prune) -> Result<Vec<OffsetRow>, OffsetError> {
        let mut pruned = Vec::new();
        for it in self.items(req.namespace.as_deref()).await? {
            let (row, g) = self.row(&it)?;
            if !req.is_stale(row.updated_at) {
                continue;
            }
            if req.dry_run || self.delete(&row, Some(g)).await? {
                pruned.push(row);
            }
        }
        pruned.sort_by(|a, b| (&a.namespace, &a.partition).cmp(&(&b.namespace, &b.partition)));
        Ok(pruned)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use super::*;

    pub(crate) fn spec(table: &str, create: bool) -> DynamoStoreSpec {
        serde_json::from_value(serde_json::json!({
            "table": table,
            "create_table": create,
            "aws": sluice_test_kit::aws_json(&sluice_test_kit::emulator::dynamodb()),
        }))
        .expect("spec")
    }

    pub(crate) fn table() -> String {
        sluice_test_kit::unique_name("offsets")
    }

    /// A store on table `t` (made when missing) that loaded the namespace "pipe".
    async fn loaded(t: &str) -> DynamoStore {
        let store = DynamoStore::new(&spec(t, true));
        store.load("pipe").await.expect("load");
        store
    }

    /// The offset `store` holds for partition "0" of "pipe".
    async fn offset_of(store: &DynamoStore) -> Offset {
        store.load("pipe").await.expect("load")["0"].offset.clone()
    }

    /// `store` commits offset `o` of partition `p`, and is refused as fenced.
    async fn assert_fenced(store: &DynamoStore, p: &str, o: u64, why: &str) {
        let e = store.commit("pipe", &one(p, o)).await.expect_err(why);
        assert!(e.is_fenced(), "{e}");
    }

    fn one(p: &str, o: u64) -> CommittedOffsets {
        CommittedOffsets::from([(
            Arc::from(p),
            Committed {
                offset: Offset::from(o),
                finished: false,
            },
        )])
    }

    #[tokio::test]
    async fn contract() {
        super::super::contract::check(&DynamoStore::new(&spec(&table(), true))).await;
    }

    #[tokio::test]
    async fn a_missing_table_is_an_error_unless_created() {
        let e = DynamoStore::new(&spec(&table(), false))
            .load("p")
            .await
            .expect_err("no table");
        assert!(e.to_string().contains("create_table: true"), "{e}");
    }

    #[tokio::test]
    async fn two_writers_commit_their_own_partitions_concurrently() {
        let t = table();
        let (a, b) = (loaded(&t).await, loaded(&t).await);
        let (ra, rb) = tokio::join!(
            async {
                for i in 0..20 {
                    a.commit("pipe", &one("shard-a", i)).await?;
                }
                Ok::<_, OffsetError>(())
            },
            async {
                for i in 0..20 {
                    b.commit("pipe", &one("shard-b", 100 + i)).await?;
                }
                Ok::<_, OffsetError>(())
            }
        );
        ra.expect("writer a");
        rb.expect("writer b");
        let loaded = DynamoStore::new(&spec(&t, false))
            .load("pipe")
            .await
            .expect("load");
        assert_eq!(loaded["shard-a"].offset, Offset::from(19));
        assert_eq!(loaded["shard-b"].offset, Offset::from(119));
        let rows = a.list(Some("pipe")).await.expect("list");
        assert_eq!(rows.len(), 2);
    }

    #[tokio::test]
    async fn a_stale_writer_cannot_move_an_offset_back() {
        let t = table();
        let old = loaded(&t).await;
        old.commit("pipe", &one("0", 10)).await.expect("commit");
        // Another worker takes over from the stored state and moves on.
        let new = DynamoStore::new(&spec(&t, true));
        assert_eq!(offset_of(&new).await, Offset::from(10));
        new.commit("pipe", &one("0", 50)).await.expect("commit");
        // The old worker, unaware, tries to commit an older offset: refused.
        let e = old.commit("pipe", &one("0", 20)).await.expect_err("stale");
        assert!(e.to_string().contains("stale commit rejected"), "{e}");
        assert!(
            e.to_string().contains(&new.owner),
            "names the newer owner: {e}"
        );
        // A brand-new writer that never read the row is stale too.
        let blind = DynamoStore::new(&spec(&t, true));
        assert!(blind.commit("pipe", &one("0", 1)).await.is_err());
        assert_eq!(offset_of(&new).await, Offset::from(50));
        // The current owner goes on committing.
        new.commit("pipe", &one("0", 60)).await.expect("commit");
        // An operator's reset wins, and fences the running worker.
        let cli = DynamoStore::new(&spec(&t, false));
        cli.reset(&Reset::one("pipe", "0", ResetTo::Offset(Offset::from(5))))
            .await
            .expect("reset");
        assert!(new.commit("pipe", &one("0", 61)).await.is_err());
        assert_eq!(offset_of(&cli).await, Offset::from(5));
    }
    #[tokio::test]
    async fn a_retried_commit_whose_write_already_landed_is_success() {
        let t = table();
        let a = loaded(&t).await;
        a.commit("pipe", &one("0", 10)).await.expect("commit");
        let key = ("pipe".to_string(), "0".to_string());
        let before = a.gens()[&key];
        a.commit("pipe", &one("0", 11)).await.expect("commit");
        // The write of offset 11 landed, but its response was lost: this worker still holds the
        // generation it had before, and sends the same write again.
        a.gens().insert(key.clone(), before);
        a.commit("pipe", &one("0", 11))
            .await
            .expect("a retry of a write that landed is not a conflict");
        // Lost again, and the tracker moved on to a later offset meanwhile.
        a.gens().insert(key.clone(), before);
        a.commit("pipe", &one("0", 12))
            .await
            .expect("this worker's own last write is no conflict either");
        a.commit("pipe", &one("0", 13)).await.expect("commit");
        let other = DynamoStore::new(&spec(&t, false));
        assert_eq!(offset_of(&other).await, Offset::from(13));
        // Another writer still fences it.
        other.commit("pipe", &one("0", 20)).await.expect("commit");
        assert_fenced(&a, "0", 14, "fenced").await;
    }

    #[tokio::test]
    async fn a_partition_claimed_after_a_rebalance_takes_over_from_its_previous_owner() {
        let t = table();
        let a = loaded(&t).await;
        a.commit("pipe", &one("orders/3", 1)).await.expect("commit");
        let b = loaded(&t).await;
        for o in 2..=4 {
            a.commit("pipe", &one("orders/3", o)).await.expect("commit");
        }
        // The group moves orders/3 from a to b: b's view from its start is stale.
        assert_fenced(&b, "orders/3", 5, "an unclaimed stale view is refused").await;
        b.claim("pipe", &[PartitionId::from("orders/3")])
            .await
            .expect("claim");
        b.commit("pipe", &one("orders/3", 5))
            .await
            .expect("the new owner commits");
        b.commit("pipe", &one("orders/3", 6))
            .await
            .expect("and goes on");
        // The previous owner, if it still ran, would now be fenced.
        assert_fenced(&a, "orders/3", 5, "fenced").await;
        // A claim of a partition nobody committed yet lets the first commit create it.
        b.claim("pipe", &[PartitionId::from("orders/9")])
            .await
            .expect("claim");
        b.commit("pipe", &one("orders/9", 1)).await.expect("commit");
    }
}
