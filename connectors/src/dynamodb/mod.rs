//! The `dynamodb` sink (records → items with BatchWriteItem, dedup by keys, deletes, metadata
//! attributes, a replay guard) and the `dynamodb` source (a parallel Scan snapshot, the table's
//! DynamoDB Stream, or a snapshot followed by the stream).
//!
//! Items map to and from JSON in [`item`]: plain JSON (numbers keep their exact text) or
//! DynamoDB-JSON.

mod config;
pub mod item;
mod sink;
mod source;
mod stream;

pub use config::{
    DynamoSinkConfig, DynamoSourceConfig, ItemFormat, SinkMode, SourceMode, StreamStart,
    check_table_to_table,
};
pub use sink::DynamoSink;
pub use source::DynamoSource;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::KeyType;

use crate::error::{ConnectorError, retriable};
use crate::retry::RetryPolicy;

/// The table's key attributes, partition key first.
pub(crate) async fn key_schema(
    client: &Client,
    table: &str,
    retry: &RetryPolicy,
) -> Result<Vec<String>, ConnectorError> {
    let at = format!("dynamodb {table}");
    let out = retry
        .run(&format!("{at}: DescribeTable"), retriable, || {
            client.describe_table().table_name(table).send()
        })
        .await
        .map_err(|e| ConnectorError::call(&at, "DescribeTable", &e))?;
    let schema = out.table().map(|t| t.key_schema()).unwrap_or_default();
    let mut keys: Vec<(bool, String)> = schema
        .iter()
        .map(|k| {
            (
                k.key_type() != &KeyType::Hash,
                k.attribute_name().to_string(),
            )
        })
        .collect();
    keys.sort();
    if keys.is_empty() {
        return Err(ConnectorError::fatal(format!(
            "{at}: DescribeTable: the table has no key schema"
        )));
    }
    Ok(keys.into_iter().map(|(_, k)| k).collect())
}
