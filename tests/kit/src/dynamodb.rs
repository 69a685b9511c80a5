//! DynamoDB helpers: a blocking client of moto, random tables, items.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, PutRequest,
    ScalarAttributeType, StreamSpecification, StreamViewType, WriteRequest,
};

pub type Item = HashMap<String, AttributeValue>;

/// The emulator's endpoint; panics with a hint when nothing answers there.
pub fn endpoint() -> String {
    crate::emulator::dynamodb()
}

pub use crate::aws_yaml;

/// A client of the emulator with a runtime of its own, for synchronous tests.
pub struct Dynamo {
    pub rt: tokio::runtime::Runtime,
    pub client: Client,
    pub endpoint: String,
}

pub fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_string())
}

impl Dynamo {
    pub fn new() -> Self {
        let endpoint = endpoint();
        Self {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
            client: client(&endpoint),
            endpoint,
        }
    }

    /// A new table keyed by `hash` (N or S), with a NEW_AND_OLD_IMAGES stream if asked.
    pub fn create_table(&self, prefix: &str, hash: &str, numeric: bool, stream: bool) -> String {
        let name = crate::unique_name(prefix);
        let t = if numeric {
            ScalarAttributeType::N
        } else {
            ScalarAttributeType::S
        };
        self.rt
            .block_on(create_table(&self.client, &name, (hash, t), None, stream));
        name
    }

    pub fn put(&self, table: &str, item: Item) {
        self.rt.block_on(put(&self.client, table, item));
    }

    pub fn delete(&self, table: &str, key: Item) {
        self.rt.block_on(delete(&self.client, table, key));
    }

    /// `{id: N, body: "item N"}` for each id, in batches of 25.
    pub fn put_ids(&self, table: &str, ids: std::ops::Range<u64>) {
        self.rt.block_on(put_ids(&self.client, table, ids));
    }

    pub fn scan(&self, table: &str) -> Vec<Item> {
        self.rt.block_on(scan(&self.client, table))
    }

    /// Items by the text of their `key` attribute, for comparisons.
    pub fn by_key(&self, table: &str, key: &str) -> BTreeMap<String, Item> {
        self.scan(table)
            .into_iter()
            .map(|i| {
                let k = match i.get(key) {
                    Some(AttributeValue::S(v) | AttributeValue::N(v)) => v.clone(),
                    other => panic!("no {key} in {other:?}"),
                };
                (k, i)
            })
            .collect()
    }

    pub fn count(&self, table: &str) -> usize {
        self.scan(table).len()
    }
}

/// A client of the emulator at `endpoint` (region us-east-1, static test credentials).
pub fn client(endpoint: &str) -> Client {
    let conf = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .build();
    Client::from_conf(conf)
}

/// Creates table `name` keyed by `hash` (and `range`), with a NEW_AND_OLD_IMAGES stream if
/// asked.
pub async fn create_table(
    c: &Client,
    name: &str,
    hash: (&str, ScalarAttributeType),
    range: Option<(&str, ScalarAttributeType)>,
    stream: bool,
) {
    let attr = |name: &str, t: ScalarAttributeType| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(t)
            .build()
            .expect("attr")
    };
    let key = |name: &str, t: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(t)
            .build()
            .expect("key")
    };
    let mut b = c
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr(hash.0, hash.1))
        .key_schema(key(hash.0, KeyType::Hash));
    if let Some((r, t)) = range {
        b = b
            .attribute_definitions(attr(r, t))
            .key_schema(key(r, KeyType::Range));
    }
    if stream {
        b = b.stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::NewAndOldImages)
                .build()
                .expect("stream spec"),
        );
    }
    b.send().await.expect("create table");
}

/// An item (or key) from its attributes: `item([("id", s("a")), ("v", n(1))])`.
pub fn item<K: Into<String>>(attrs: impl IntoIterator<Item = (K, AttributeValue)>) -> Item {
    attrs.into_iter().map(|(k, v)| (k.into(), v)).collect()
}

/// Writes one item.
pub async fn put(c: &Client, table: &str, item: Item) {
    let req = c.put_item().table_name(table).set_item(Some(item));
    req.send().await.expect("put");
}

/// Deletes the item with this key.
pub async fn delete(c: &Client, table: &str, key: Item) {
    let req = c.delete_item().table_name(table).set_key(Some(key));
    req.send().await.expect("delete");
}

/// `{id: N, body: "item N"}` for each id, in batches of 25.
pub async fn put_ids(c: &Client, table: &str, ids: std::ops::Range<u64>) {
    let reqs: Vec<WriteRequest> = ids
        .map(|i| {
            WriteRequest::builder()
                .put_request(
                    PutRequest::builder()
                        .item("id", n(i))
                        .item("body", s(&format!("item {i}")))
                        .build()
                        .expect("put"),
                )
                .build()
        })
        .collect();
    for chunk in reqs.chunks(25) {
        c.batch_write_item()
            .request_items(table, chunk.to_vec())
            .send()
            .await
            .expect("batch write");
    }
}

/// Every item of a table.
pub async fn scan(c: &Client, table: &str) -> Vec<Item> {
    let mut out = Vec::new();
    let mut start = None;
    loop {
        let r = c
            .scan()
            .table_name(table)
            .set_exclusive_start_key(start)
            .send()
            .await
            .expect("scan");
        out.extend(r.items.unwrap_or_default());
        start = r.last_evaluated_key.filter(|k| !k.is_empty());
        if start.is_none() {
            return out;
        }
    }
}
