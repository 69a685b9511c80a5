//! Routes JSON records by a stable hash of listed top-level fields: the partition key is the
//! fields' values joined by `delimiter` (the Flink Kinesis `PARTITION BY` rule), the partition
//! index is the key's FNV-1a hash mapped onto the sink's partition count.

use sluice_sdk::{Batch, Partitioner, Record, Route, Routes, hash, json};

/// Partition by the values of JSON fields.
#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Top-level fields of the JSON value whose values make the partition key, in order.
    #[schemars(length(min = 1))]
    pub fields: Vec<String>,
    /// Joins the field values into the key.
    #[serde(default = "default_delimiter")]
    pub delimiter: String,
    /// A record without one of the fields: `error` (default; the record goes to the error policy)
    /// or `empty` (the value counts as an empty string).
    #[serde(default)]
    pub on_missing: OnMissing,
}

fn default_delimiter() -> String {
    "|".into()
}

#[derive(Default, Clone, Copy, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnMissing {
    #[default]
    Error,
    Empty,
}

pub struct FieldPartitioner {
    config: Config,
    key: String,
}

impl FieldPartitioner {
    /// Builds the key of `value` into `self.key`.
    fn key_of(&mut self, value: &[u8]) -> Result<(), String> {
        // The found fields live on the stack for up to 8 fields: no allocation per record.
        let n = self.config.fields.len();
        let mut stack = [None; 8];
        let mut heap = Vec::new();
        let found: &mut [Option<&json::RawValue>] = if n <= stack.len() {
            &mut stack[..n]
        } else {
            heap.resize(n, None);
            &mut heap
        };
        json::top_level_fields_into(value, &self.config.fields, found)?;
        self.key.clear();
        for (i, (field, raw)) in self.config.fields.iter().zip(found.iter()).enumerate() {
            if i > 0 {
                self.key.push_str(&self.config.delimiter);
            }
            match raw {
                Some(raw) => self.key.push_str(&json::key_text(raw)),
                None if self.config.on_missing == OnMissing::Empty => {}
                None => return Err(format!("field `{field}` is missing")),
            }
        }
        Ok(())
    }

    fn index(&self, partition_count: Option<u32>) -> Option<u32> {
        partition_count
            .filter(|n| *n > 0)
            .map(|n| hash::bucket(hash::fnv1a64(self.key.as_bytes()), n))
    }
}

impl Partitioner for FieldPartitioner {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        Ok(FieldPartitioner {
            config,
            key: String::new(),
        })
    }

    fn partition(&mut self, record: &Record<'_>, n: Option<u32>) -> Result<Route, String> {
        self.key_of(record.value)?;
        Ok(Route {
            key: Some(self.key.clone()),
            index: self.index(n),
            explicit_hash_key: None,
        })
    }

    // Same as the default, without building a `Route` per record.
    fn partition_batch(&mut self, batch: Batch<'_>, n: Option<u32>, out: &mut Routes) {
        batch.for_each(|r| match self.key_of(r.value) {
            Ok(()) => out.push_route(Some(&self.key), self.index(n), None),
            Err(e) => out.push_error(&e),
        });
    }
}

sluice_sdk::export_partitioner!(FieldPartitioner);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use sluice_sdk::testing;

    #[test]
    fn stable_key_and_index() {
        let out = testing::partition::<FieldPartitioner>(
            json!({"fields": ["user_id", "region"]}),
            &[
                Record::new(br#"{"user_id":"u1","region":"eu","x":1}"#),
                Record::new(br#"{"region":"eu","user_id":"u1"}"#),
                Record::new(br#"{"user_id":7,"region":"us"}"#),
                Record::new(br#"{"region":"us"}"#),
            ],
            Some(8),
        )
        .unwrap();
        let first = out[0].clone().unwrap();
        assert_eq!(first.key.as_deref(), Some("u1|eu"));
        assert_eq!(first.index, Some(hash::bucket(hash::fnv1a64(b"u1|eu"), 8)));
        assert_eq!(out[1], Ok(first));
        assert_eq!(out[2].as_ref().unwrap().key.as_deref(), Some("7|us"));
        assert!(out[3].as_ref().unwrap_err().contains("user_id"));
    }

    #[test]
    fn no_index_without_partition_count() {
        let out = testing::partition::<FieldPartitioner>(
            json!({"fields": ["a"], "on_missing": "empty"}),
            &[Record::new(br#"{}"#)],
            None,
        )
        .unwrap();
        assert_eq!(
            out,
            vec![Ok(Route {
                key: Some(String::new()),
                index: None,
                explicit_hash_key: None
            })]
        );
    }
}
