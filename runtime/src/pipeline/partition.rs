//! Built-in partitioners: `random`, `fixed`, and `fields` (Flink's PARTITION BY rule).

use serde_json::Value;
use sluice_connectors::{Record, Route};

use crate::spec::{BuiltinPartitioner, FieldsPartitioner};
use crate::stage::{Partitioner, StageError};

/// FNV-1a, 64 bit: a stable hash, the same in every version and on every machine.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The route of a record with partition key `key`: the key, and its stable index when the sink
/// has partitions.
fn by_key(key: String, count: Option<u32>) -> Route {
    Route {
        index: count
            .filter(|c| *c > 0)
            .map(|c| (stable_hash(key.as_bytes()) % u64::from(c)) as u32),
        key: Some(key),
        explicit_hash_key: None,
    }
}

/// The built-in partitioner a spec names.
pub fn builtin(kind: BuiltinPartitioner) -> Box<dyn Partitioner> {
    match kind {
        BuiltinPartitioner::Random => Box::new(Random),
        BuiltinPartitioner::Fixed => Box::new(Fixed),
    }
}

/// A built-in partitioner routes each record on its own.
trait RouteEach: Send {
    const NAME: &'static str;
    fn route(&self, record: &Record, count: Option<u32>) -> Result<Route, String>;
}

impl<T: RouteEach> Partitioner for T {
    fn name(&self) -> &str {
        T::NAME
    }

    fn partition(
        &mut self,
        batch: &[Record],
        count: Option<u32>,
    ) -> Result<Vec<Result<Route, String>>, StageError> {
        Ok(batch.iter().map(|r| self.route(r, count)).collect())
    }
}

struct Random;

impl RouteEach for Random {
    const NAME: &'static str = "partitioner random";

    fn route(&self, _: &Record, count: Option<u32>) -> Result<Route, String> {
        let n: u128 = rand::random();
        Ok(Route {
            key: Some(sluice_connectors::hex32(n)),
            index: count.filter(|c| *c > 0).map(|c| (n % u128::from(c)) as u32),
            explicit_hash_key: None,
        })
    }
}

struct Fixed;

impl RouteEach for Fixed {
    const NAME: &'static str = "partitioner fixed";

    fn route(&self, record: &Record, count: Option<u32>) -> Result<Route, String> {
        Ok(by_key(record.partition.to_string(), count))
    }
}

/// Partition key = the listed top-level JSON fields joined by the delimiter.
pub struct Fields {
    cfg: FieldsPartitioner,
}

impl Fields {
    pub fn new(cfg: FieldsPartitioner) -> Self {
        Self { cfg }
    }

    fn key(&self, value: &[u8]) -> Result<String, String> {
        let v: Value = serde_json::from_slice(value).map_err(|e| format!("invalid JSON: {e}"))?;
        let mut key = String::new();
        for (i, f) in self.cfg.fields.iter().enumerate() {
            if i > 0 {
                key.push_str(&self.cfg.delimiter);
            }
            match v.get(f) {
                Some(Value::String(s)) => key.push_str(s),
                Some(Value::Null) | None => {
                    return Err(format!("partition field `{f}` is missing"));
                }
                Some(other) => key.push_str(&other.to_string()),
            }
        }
        Ok(key)
    }
}

impl RouteEach for Fields {
    const NAME: &'static str = "partitioner fields";

    fn route(&self, record: &Record, count: Option<u32>) -> Result<Route, String> {
        self.key(&record.value).map(|k| by_key(k, count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_keys_are_32_hex_digits_like_format() {
        for n in [0, 1, 0xabc, u128::MAX, u128::MAX / 3, 1 << 100] {
            assert_eq!(sluice_connectors::hex32(n), format!("{n:032x}"));
        }
    }

    #[test]
    fn fields_join_values_and_hash_stably() {
        let mut p = Fields::new(FieldsPartitioner {
            fields: vec!["user_id".into(), "behavior".into()],
            delimiter: "|".into(),
        });
        let r = Record::new(
            "0".into(),
            0.into(),
            &br#"{"user_id":7,"behavior":"pv"}"#[..],
        );
        let bad = Record::new("0".into(), 1.into(), &br#"{"behavior":"pv"}"#[..]);
        let out = p.partition(&[r.clone(), bad], Some(4)).expect("partition");
        let route = out[0].as_ref().expect("routed");
        assert_eq!(route.key.as_deref(), Some("7|pv"));
        assert_eq!(route.index, Some((stable_hash(b"7|pv") % 4) as u32));
        assert!(
            out[1]
                .as_ref()
                .unwrap_err()
                .contains("`user_id` is missing")
        );
        let again = p.partition(&[r], Some(4)).expect("partition");
        assert_eq!(again[0], out[0]);
    }
}
