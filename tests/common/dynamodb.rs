//! DynamoDB test helpers: the moto server started by `scripts/test.sh`
//! (`SLUICE_TEST_DYNAMODB_ENDPOINT`), a blocking client for it, random tables, spec snippets.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, PutRequest,
    ScalarAttributeType, StreamSpecification, StreamViewType, WriteRequest,
};

pub type Item = HashMap<String, AttributeValue>;

/// The emulator's endpoint; panics with a hint when nothing answers there.
pub fn endpoint() -> String {
    let url = std::env::var("SLUICE_TEST_DYNAMODB_ENDPOINT")
        .unwrap_or_else(|_| "http://127.0.0.1:5000".to_string());
    let host = url.trim_start_matches("http://").trim_end_matches('/');
    let up = host
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok());
    assert!(
        up,
        "no DynamoDB emulator answers at {url}: run the tests through scripts/test.sh (which starts \
         moto), or start one with `scripts/emulators/dynamodb.sh start DIR` and export \
         SLUICE_TEST_DYNAMODB_ENDPOINT from DIR/dynamodb.env"
    );
    url
}

/// The `aws:` block of a spec for the emulator.
pub fn aws_yaml(endpoint: &str, indent: &str) -> String {
    format!(
        "{indent}aws:\n{indent}  endpoint: {endpoint}\n{indent}  region: us-east-1\n{indent}  credentials:\n{indent}    provider: basic\n{indent}    access_key_id: test\n{indent}    secret_access_key: test\n"
    )
}

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
        let conf = aws_sdk_dynamodb::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(&endpoint)
            .credentials_provider(Credentials::new("test", "test", None, None, "test"))
            .build();
        Self {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
            client: Client::from_conf(conf),
            endpoint,
        }
    }

    /// A new table keyed by `hash` (N or S), with a NEW_AND_OLD_IMAGES stream if asked.
    pub fn create_table(&self, prefix: &str, hash: &str, numeric: bool, stream: bool) -> String {
        let name = format!("{prefix}-{:016x}", rand::random::<u64>());
        let t = if numeric {
            ScalarAttributeType::N
        } else {
            ScalarAttributeType::S
        };
        let mut b = self
            .client
            .create_table()
            .table_name(&name)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(hash)
                    .attribute_type(t)
                    .build()
                    .expect("attr"),
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(hash)
                    .key_type(KeyType::Hash)
                    .build()
                    .expect("key"),
            );
        if stream {
            b = b.stream_specification(
                StreamSpecification::builder()
                    .stream_enabled(true)
                    .stream_view_type(StreamViewType::NewAndOldImages)
                    .build()
                    .expect("stream"),
            );
        }
        self.rt.block_on(b.send()).expect("create table");
        name
    }

    pub fn put(&self, table: &str, item: Item) {
        self.rt
            .block_on(
                self.client
                    .put_item()
                    .table_name(table)
                    .set_item(Some(item))
                    .send(),
            )
            .expect("put");
    }

    pub fn delete(&self, table: &str, key: Item) {
        self.rt
            .block_on(
                self.client
                    .delete_item()
                    .table_name(table)
                    .set_key(Some(key))
                    .send(),
            )
            .expect("delete");
    }

    /// `{id: N, body: "item N"}` for each id, in batches of 25.
    pub fn put_ids(&self, table: &str, ids: std::ops::Range<u64>) {
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
            self.rt
                .block_on(
                    self.client
                        .batch_write_item()
                        .request_items(table, chunk.to_vec())
                        .send(),
                )
                .expect("batch write");
        }
    }

    pub fn scan(&self, table: &str) -> Vec<Item> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let r = self
                .rt
                .block_on(
                    self.client
                        .scan()
                        .table_name(table)
                        .set_exclusive_start_key(start)
                        .send(),
                )
                .expect("scan");
            out.extend(r.items.unwrap_or_default());
            start = r.last_evaluated_key.filter(|k| !k.is_empty());
            if start.is_none() {
                return out;
            }
        }
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
