//! The batch encoding of `sdk/wit/plugin.wit`, host side: records in, outcomes and routes out.
//! (The guest's side lives in `sluice-sdk`; the WIT file documents the layout for both.)

use bytes::Bytes;
use sluice_connectors::{Record, Route};

use crate::stage::Outcome;

const HAS_KEY: u8 = 1;
const HAS_TIMESTAMP: u8 = 2;
const HAS_HEADERS: u8 = 4;

const OUTCOME_KEEP: u8 = 0;
const OUTCOME_RECORDS: u8 = 1;
const OUTCOME_ERROR: u8 = 2;

const ROUTE_OK: u8 = 0;
const ROUTE_ERROR: u8 = 1;
const ROUTE_KEY: u8 = 1;
const ROUTE_INDEX: u8 = 2;
const ROUTE_HASH_KEY: u8 = 4;

/// A length as the wire's `u32`; batches beyond 4 GiB are refused before they get here.
fn len32(n: usize) -> [u8; 4] {
    u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes()
}

fn put_bytes(buf: &mut Vec<u8>, b: &[u8]) {
    buf.extend_from_slice(&len32(b.len()));
    buf.extend_from_slice(b);
}

/// Encodes `batch` into `buf` (cleared first).
pub(crate) fn encode_batch(batch: &[Record], buf: &mut Vec<u8>) {
    buf.clear();
    let size: usize = batch
        .iter()
        .map(|r| 32 + r.value.len() + r.key.as_ref().map_or(0, |k| k.len()))
        .sum();
    buf.reserve(size + 4);
    buf.extend_from_slice(&len32(batch.len()));
    for r in batch {
        let mut flags = 0;
        if r.key.is_some() {
            flags |= HAS_KEY;
        }
        if r.timestamp.is_some() {
            flags |= HAS_TIMESTAMP;
        }
        buf.push(flags);
        if let Some(k) = &r.key {
            put_bytes(buf, k);
        }
        if let Some(t) = r.timestamp {
            buf.extend_from_slice(&t.to_le_bytes());
        }
        buf.extend_from_slice(&len32(r.headers.len()));
        for (n, v) in &r.headers {
            put_bytes(buf, n.as_bytes());
            put_bytes(buf, v);
        }
        buf.extend_from_slice(&len32(r.meta.len()));
        for (n, v) in &r.meta {
            put_bytes(buf, n.as_bytes());
            put_bytes(buf, v.as_bytes());
        }
        put_bytes(buf, &r.value);
    }
}

/// Reads a plugin's output. Everything in it is untrusted: any inconsistency is a contract
/// violation reported as an error (never a panic).
struct Reader {
    buf: Bytes,
    pos: usize,
}

impl Reader {
    fn take(&mut self, n: usize) -> Result<std::ops::Range<usize>, String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or_else(|| format!("output truncated at byte {}", self.pos))?;
        let r = self.pos..end;
        self.pos = end;
        Ok(r)
    }
    fn u8(&mut self) -> Result<u8, String> {
        let r = self.take(1)?;
        Ok(self.buf[r.start])
    }
    fn u32(&mut self) -> Result<u32, String> {
        let r = self.take(4)?;
        let mut b = [0; 4];
        b.copy_from_slice(&self.buf[r]);
        Ok(u32::from_le_bytes(b))
    }
    fn i64(&mut self) -> Result<i64, String> {
        let r = self.take(8)?;
        let mut b = [0; 8];
        b.copy_from_slice(&self.buf[r]);
        Ok(i64::from_le_bytes(b))
    }
    /// A length-prefixed byte string, sharing the output buffer (no copy).
    fn bytes(&mut self) -> Result<Bytes, String> {
        let n = self.u32()? as usize;
        let r = self.take(n)?;
        Ok(self.buf.slice(r))
    }
    fn string(&mut self) -> Result<String, String> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec())
            .map_err(|_| format!("string at byte {} is not UTF-8", self.pos))
    }
    fn count(&mut self, expected: usize, what: &str) -> Result<(), String> {
        let n = self.u32()? as usize;
        if n != expected {
            return Err(format!("returned {n} {what} for {expected} records"));
        }
        Ok(())
    }
    fn end(&self) -> Result<(), String> {
        if self.pos != self.buf.len() {
            return Err(format!(
                "{} unexpected bytes after the output",
                self.buf.len() - self.pos
            ));
        }
        Ok(())
    }
}

/// Decodes a record output (`process`, `decode`, `encode`) for `batch`. With `json_values`, each
/// output value must be one JSON document (what a decoder promises).
pub(crate) fn decode_outcomes(
    out: Vec<u8>,
    batch: &[Record],
    json_values: bool,
) -> Result<Vec<Outcome>, String> {
    let mut r = Reader {
        buf: Bytes::from(out),
        pos: 0,
    };
    r.count(batch.len(), "outcomes")?;
    let mut outcomes = Vec::with_capacity(batch.len());
    for (i, input) in batch.iter().enumerate() {
        let outcome = match r.u8()? {
            OUTCOME_KEEP => {
                if json_values {
                    check_json(&input.value).map_err(|e| format!("record {i}: kept input {e}"))?;
                }
                Outcome::Keep
            }
            OUTCOME_RECORDS => {
                let n = r.u32()? as usize;
                if n > r.buf.len() {
                    return Err(format!("record {i}: impossible output count {n}"));
                }
                let mut records = Vec::with_capacity(n);
                for _ in 0..n {
                    let flags = r.u8()?;
                    let mut rec = input.derive(Bytes::new());
                    if flags & HAS_KEY != 0 {
                        rec.key = match r.u8()? {
                            0 => None,
                            _ => Some(r.bytes()?),
                        };
                    }
                    if flags & HAS_TIMESTAMP != 0 {
                        rec.timestamp = match r.u8()? {
                            0 => None,
                            _ => Some(r.i64()?),
                        };
                    }
                    if flags & HAS_HEADERS != 0 {
                        let h = r.u32()? as usize;
                        let mut headers = Vec::with_capacity(h.min(1024));
                        for _ in 0..h {
                            let name = r.string()?;
                            headers.push((name, r.bytes()?));
                        }
                        rec.headers = headers;
                    }
                    rec.value = r.bytes()?;
                    if json_values {
                        check_json(&rec.value).map_err(|e| format!("record {i}: output {e}"))?;
                    }
                    records.push(rec);
                }
                Outcome::Records(records)
            }
            OUTCOME_ERROR => Outcome::Error(r.string()?),
            t => return Err(format!("record {i}: unknown outcome tag {t}")),
        };
        outcomes.push(outcome);
    }
    r.end()?;
    Ok(outcomes)
}

fn check_json(value: &[u8]) -> Result<(), String> {
    serde_json::from_slice::<serde::de::IgnoredAny>(value)
        .map(|_| ())
        .map_err(|e| format!("is not valid JSON: {e}"))
}

/// Decodes a route output (`partition`) for `count` records.
pub(crate) fn decode_routes(
    out: Vec<u8>,
    count: usize,
    partition_count: Option<u32>,
) -> Result<Vec<Result<Route, String>>, String> {
    let mut r = Reader {
        buf: Bytes::from(out),
        pos: 0,
    };
    r.count(count, "routes")?;
    let mut routes = Vec::with_capacity(count);
    for i in 0..count {
        let route = match r.u8()? {
            ROUTE_OK => {
                let flags = r.u8()?;
                let key = (flags & ROUTE_KEY != 0).then(|| r.string()).transpose()?;
                let index = (flags & ROUTE_INDEX != 0).then(|| r.u32()).transpose()?;
                let explicit_hash_key = (flags & ROUTE_HASH_KEY != 0)
                    .then(|| r.string())
                    .transpose()?;
                if let (Some(ix), Some(n)) = (index, partition_count)
                    && ix >= n
                {
                    return Err(format!(
                        "record {i}: partition index {ix} is out of range (the sink has {n} partitions)"
                    ));
                }
                Ok(Route {
                    key,
                    index,
                    explicit_hash_key,
                })
            }
            ROUTE_ERROR => Err(r.string()?),
            t => return Err(format!("record {i}: unknown route tag {t}")),
        };
        routes.push(route);
    }
    r.end()?;
    Ok(routes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(v: &'static str) -> Record {
        Record::new("p".into(), 1u64.into(), Bytes::from_static(v.as_bytes()))
    }

    #[test]
    fn wrong_count_is_a_contract_violation() {
        let err = decode_outcomes(vec![1, 0, 0, 0, OUTCOME_KEEP], &[rec("a"), rec("b")], false)
            .unwrap_err();
        assert_eq!(err, "returned 1 outcomes for 2 records");
        let err = decode_routes(vec![0, 0, 0, 0], 1, None).unwrap_err();
        assert_eq!(err, "returned 0 routes for 1 records");
    }

    #[test]
    fn truncated_and_trailing_output_is_rejected() {
        let err =
            decode_outcomes(vec![1, 0, 0, 0, OUTCOME_ERROR, 9, 0], &[rec("a")], false).unwrap_err();
        assert!(err.contains("truncated"), "{err}");
        let err =
            decode_outcomes(vec![1, 0, 0, 0, OUTCOME_KEEP, 7], &[rec("a")], false).unwrap_err();
        assert!(err.contains("unexpected bytes"), "{err}");
    }

    #[test]
    fn outputs_inherit_and_override() {
        let mut input = rec("x");
        input.key = Some(Bytes::from_static(b"k"));
        input.timestamp = Some(5);
        let mut out = vec![1, 0, 0, 0, OUTCOME_RECORDS, 2, 0, 0, 0];
        out.extend([0, 1, 0, 0, 0, b'{']); // inherits everything, value "{"
        out.extend([HAS_KEY | HAS_TIMESTAMP, 0, 1]);
        out.extend(9i64.to_le_bytes());
        out.extend([2, 0, 0, 0, b'{', b'}']);
        let got = decode_outcomes(out.clone(), &[input.clone()], false).unwrap();
        let Outcome::Records(recs) = &got[0] else {
            panic!("{got:?}")
        };
        assert_eq!(recs[0].key, input.key);
        assert_eq!(recs[0].timestamp, Some(5));
        assert_eq!(&recs[0].value[..], b"{");
        assert_eq!(recs[1].key, None);
        assert_eq!(recs[1].timestamp, Some(9));
        assert_eq!(recs[1].offset, input.offset);
        let err = decode_outcomes(out, &[input], true).unwrap_err();
        assert!(err.contains("not valid JSON"), "{err}");
    }

    #[test]
    fn route_index_must_be_in_range() {
        let mut out = vec![1, 0, 0, 0, ROUTE_OK, ROUTE_INDEX];
        out.extend(4u32.to_le_bytes());
        assert!(decode_routes(out.clone(), 1, Some(8)).is_ok());
        let err = decode_routes(out, 1, Some(4)).unwrap_err();
        assert!(err.contains("out of range"), "{err}");
    }
}
