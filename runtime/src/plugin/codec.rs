//! The host's side of the batch encoding (`sluice-wire`, described in `sdk/wit/plugin.wit`):
//! records in; outcomes and routes out, decoded under the output limits.

use bytes::Bytes;
use sluice_connectors::{Record, Route};

use crate::stage::Outcome;

use sluice_wire::{
    HAS_HEADERS, HAS_KEY, HAS_TIMESTAMP, MIN_HEADER, MIN_OUTPUT_RECORD, OUTCOME_ERROR,
    OUTCOME_KEEP, OUTCOME_RECORDS, ROUTE_ERROR, ROUTE_HASH_KEY, ROUTE_INDEX, ROUTE_KEY, ROUTE_OK,
    put_len,
};

/// Encodes `batch` into `buf` (cleared first).
pub(crate) fn encode_batch(batch: &[Record], buf: &mut Vec<u8>) {
    buf.clear();
    let size: usize = batch
        .iter()
        .map(|r| 32 + r.value.len() + r.key.as_ref().map_or(0, |k| k.len()))
        .sum();
    buf.reserve(size + 4);
    put_len(buf, batch.len());
    for r in batch {
        sluice_wire::put_input_record(
            buf,
            r.key.as_deref(),
            r.timestamp,
            r.headers.iter().map(|(n, v)| (n.as_str(), v.as_ref())),
            r.meta.iter().map(|(n, v)| (n.as_ref(), v.as_str())),
            &r.value,
        );
    }
}

/// Reads a plugin's output. Everything in it is untrusted: any inconsistency is a contract
/// violation reported as an error (never a panic). Byte strings share the output buffer.
struct Reader<'a> {
    buf: &'a Bytes,
    wire: sluice_wire::Reader<'a>,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a Bytes) -> Self {
        Self {
            buf,
            wire: sluice_wire::Reader::new(buf),
        }
    }
    fn remaining(&self) -> usize {
        self.wire.remaining()
    }
    fn u8(&mut self) -> Result<u8, String> {
        self.wire.u8().map_err(|e| e.to_string())
    }
    fn u32(&mut self) -> Result<u32, String> {
        self.wire.u32().map_err(|e| e.to_string())
    }
    fn i64(&mut self) -> Result<i64, String> {
        self.wire.i64().map_err(|e| e.to_string())
    }
    /// A length-prefixed byte string, sharing the output buffer (no copy).
    fn bytes(&mut self) -> Result<Bytes, String> {
        let r = self.wire.bytes_range().map_err(|e| e.to_string())?;
        Ok(self.buf.slice(r))
    }
    fn string(&mut self) -> Result<String, String> {
        self.wire
            .str()
            .map(str::to_string)
            .map_err(|e| e.to_string())
    }
    fn count(&mut self, expected: usize, what: &str) -> Result<(), String> {
        let n = self.u32()? as usize;
        if n != expected {
            return Err(format!("returned {n} {what} for {expected} records"));
        }
        Ok(())
    }
    fn end(&self) -> Result<(), String> {
        if !self.wire.at_end() {
            return Err(format!(
                "{} unexpected bytes after the output",
                self.wire.remaining()
            ));
        }
        Ok(())
    }
}

/// What decoding one call's output may cost the host (see `docs/plugins.md`, "Limits").
#[derive(Debug, Clone, Copy)]
pub(crate) struct OutputLimits {
    /// Host bytes: the output buffer, every output record and what it inherits from its input.
    pub(crate) bytes: usize,
    /// Output records over the whole batch.
    pub(crate) records: usize,
}

/// The host memory an output record takes beyond `size_of::<Record>()` for what it inherits from
/// `input` (`Record::derive` clones the headers, metadata and offset).
fn inherited_bytes(input: &Record) -> usize {
    use std::mem::size_of;
    let headers = input.headers.capacity() * size_of::<(String, Bytes)>()
        + input.headers.iter().map(|(n, _)| n.len()).sum::<usize>();
    let meta = input.meta.capacity() * size_of::<(std::borrow::Cow<'static, str>, String)>()
        + input
            .meta
            .iter()
            .map(|(n, v)| {
                v.len()
                    + match n {
                        std::borrow::Cow::Owned(n) => n.len(),
                        std::borrow::Cow::Borrowed(_) => 0,
                    }
            })
            .sum::<usize>();
    headers + meta + input.offset.as_str().len()
}

/// Charges host memory and records against [`OutputLimits`].
struct Budget {
    bytes_left: usize,
    records_left: usize,
    limits: OutputLimits,
}

impl Budget {
    fn new(limits: OutputLimits, output_len: usize) -> Result<Self, String> {
        let mut b = Self {
            bytes_left: limits.bytes,
            records_left: limits.records,
            limits,
        };
        b.charge_bytes(output_len)?;
        Ok(b)
    }

    fn charge_bytes(&mut self, n: usize) -> Result<(), String> {
        self.bytes_left = self.bytes_left.checked_sub(n).ok_or_else(|| {
            format!(
                "output needs more than {} bytes of host memory to decode (the limit is {}× the plugin's `memory`)",
                self.limits.bytes,
                super::limits::OUTPUT_MEMORY_FACTOR
            )
        })?;
        Ok(())
    }

    /// Charges `n` output records of `each` bytes, before any of them is built.
    fn charge_records(&mut self, n: usize, each: usize) -> Result<(), String> {
        self.records_left = self.records_left.checked_sub(n).ok_or_else(|| {
            format!(
                "returned more than {} output records for one batch (the host's limit)",
                self.limits.records
            )
        })?;
        self.charge_bytes(n.saturating_mul(each))
    }
}

/// Decodes a record output (`process`, `decode`, `encode`) for `batch`. With `json_values`, each
/// output value must be one JSON document (what a decoder promises). Host memory spent on the
/// output is bounded by `limits`; allocation is never sized by a count the output claims beyond
/// what the output's length can hold.
pub(crate) fn decode_outcomes(
    out: Vec<u8>,
    batch: &[Record],
    json_values: bool,
    limits: OutputLimits,
) -> Result<Vec<Outcome>, String> {
    let mut budget = Budget::new(limits, out.len())?;
    let out = Bytes::from(out);
    let mut r = Reader::new(&out);
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
                if n > r.remaining() / MIN_OUTPUT_RECORD {
                    return Err(format!("record {i}: impossible output count {n}"));
                }
                if n > 0 {
                    let each = std::mem::size_of::<Record>() + inherited_bytes(input);
                    budget
                        .charge_records(n, each)
                        .map_err(|e| format!("record {i}: {e}"))?;
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
                        let h_max = r.remaining() / MIN_HEADER;
                        if h > h_max {
                            return Err(format!("record {i}: impossible header count {h}"));
                        }
                        budget
                            .charge_bytes(h * std::mem::size_of::<(String, Bytes)>())
                            .map_err(|e| format!("record {i}: {e}"))?;
                        let mut headers = Vec::with_capacity(h);
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
    let out = Bytes::from(out);
    let mut r = Reader::new(&out);
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
    use proptest::prelude::*;

    /// Counts the bytes this thread allocates (tests run on parallel threads).
    mod counting {
        use std::alloc::{GlobalAlloc, Layout, System};
        use std::cell::Cell;

        thread_local! {
            static ALLOCATED: Cell<usize> = const { Cell::new(0) };
        }

        fn add(n: usize) {
            let _ = ALLOCATED.try_with(|a| a.set(a.get().saturating_add(n)));
        }

        pub(super) struct Counting;

        // SAFETY: every call forwards to the system allocator unchanged; only a counter is added.
        unsafe impl GlobalAlloc for Counting {
            unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
                add(layout.size());
                unsafe { System.alloc(layout) }
            }
            unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
                add(layout.size());
                unsafe { System.alloc_zeroed(layout) }
            }
            unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
                unsafe { System.dealloc(ptr, layout) }
            }
            unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
                add(new_size.saturating_sub(layout.size()));
                unsafe { System.realloc(ptr, layout, new_size) }
            }
        }

        /// The bytes this thread allocates while running `f`.
        pub(super) fn allocated_by<R>(f: impl FnOnce() -> R) -> (R, usize) {
            let before = ALLOCATED.with(Cell::get);
            let r = f();
            (r, ALLOCATED.with(Cell::get) - before)
        }
    }

    #[global_allocator]
    static ALLOC: counting::Counting = counting::Counting;

    const UNLIMITED: OutputLimits = OutputLimits {
        bytes: usize::MAX,
        records: usize::MAX,
    };

    fn rec(v: &'static str) -> Record {
        Record::new("p".into(), 1u64.into(), Bytes::from_static(v.as_bytes()))
    }

    /// One input whose single outcome claims `n` output records, followed by `body`.
    fn records_output(n: u32, body: &[u8]) -> Vec<u8> {
        let mut out = vec![1, 0, 0, 0, OUTCOME_RECORDS];
        out.extend(n.to_le_bytes());
        out.extend(body);
        out
    }

    #[test]
    fn a_claimed_count_never_sizes_an_allocation() {
        // The audit's case: the count claims as many records as the output has bytes.
        let len = 1 << 20;
        let out = records_output(len as u32, &vec![0; len - 9]);
        let (res, allocated) =
            counting::allocated_by(|| decode_outcomes(out, &[rec("a")], false, UNLIMITED));
        let err = res.unwrap_err();
        assert!(err.contains("impossible output count"), "{err}");
        assert!(allocated < 4096, "{allocated} bytes allocated");
    }

    #[test]
    fn too_many_output_records_fail_the_batch() {
        let limits = OutputLimits {
            bytes: usize::MAX,
            records: 3,
        };
        let out = records_output(4, &[0, 0, 0, 0, 0].repeat(4));
        let err = decode_outcomes(out, &[rec("a")], false, limits).unwrap_err();
        assert_eq!(
            err,
            "record 0: returned more than 3 output records for one batch (the host's limit)"
        );
        let out = records_output(3, &[0, 0, 0, 0, 0].repeat(3));
        assert!(decode_outcomes(out, &[rec("a")], false, limits).is_ok());
    }

    #[test]
    fn host_memory_for_an_output_is_capped_counting_what_records_inherit() {
        // Each 5-byte output record clones the input's 10 KiB of metadata.
        let mut input = rec("a");
        input.meta.push(("big".into(), "x".repeat(10 * 1024)));
        let limits = OutputLimits {
            bytes: 1 << 20,
            records: usize::MAX,
        };
        let out = records_output(200, &[0, 0, 0, 0, 0].repeat(200));
        let (res, allocated) = counting::allocated_by(|| {
            decode_outcomes(out, std::slice::from_ref(&input), false, limits)
        });
        let err = res.unwrap_err();
        assert!(
            err.contains("more than 1048576 bytes of host memory"),
            "{err}"
        );
        assert!(
            allocated < 4096,
            "{allocated} bytes allocated before the error"
        );
        let out = records_output(50, &[0, 0, 0, 0, 0].repeat(50));
        let got = decode_outcomes(out, std::slice::from_ref(&input), false, limits).unwrap();
        assert!(matches!(&got[0], Outcome::Records(rs) if rs.len() == 50));
    }

    proptest! {
        /// Any bytes decode to outcomes or an error, never a panic, and the host allocates at
        /// most a constant factor of the output's size (each 5-byte output record becomes one
        /// `Record`) plus what the budget allows for inherited data.
        #[test]
        fn decoding_any_output_is_bounded(
            body in proptest::collection::vec(any::<u8>(), 0..512),
            claimed in any::<u32>(),
            head in 0usize..3,
            json in any::<bool>(),
        ) {
            let batch = [rec("{}"), rec("x"), rec("[1]")];
            let mut out = Vec::new();
            out.extend(3u32.to_le_bytes());
            out.extend([OUTCOME_RECORDS, OUTCOME_KEEP, OUTCOME_ERROR][head].to_le_bytes());
            out.extend(claimed.min(200).to_le_bytes());
            out.extend(&body);
            let limits = OutputLimits { bytes: 64 * 1024, records: 1000 };
            for bytes in [out, body] {
                let len = bytes.len();
                let (_, allocated) =
                    counting::allocated_by(|| decode_outcomes(bytes, &batch, json, limits));
                // Per output byte: at most a fifth of a `Record` (the smallest output record
                // takes 5 bytes) plus header slots, copied strings and JSON scratch.
                let bound = 3 * std::mem::size_of::<Outcome>()
                    + len * (std::mem::size_of::<Record>() / MIN_OUTPUT_RECORD + 32)
                    + 4096;
                prop_assert!(allocated <= bound, "{allocated} > {bound} for {len} bytes");
            }
        }

        #[test]
        fn decoding_any_routes_never_panics(
            body in proptest::collection::vec(any::<u8>(), 0..512),
            count in 0usize..4,
            partitions in proptest::option::of(0u32..8),
        ) {
            let _ = decode_routes(body, count, partitions);
        }
    }

    #[test]
    fn wrong_count_is_a_contract_violation() {
        let err = decode_outcomes(
            vec![1, 0, 0, 0, OUTCOME_KEEP],
            &[rec("a"), rec("b")],
            false,
            UNLIMITED,
        )
        .unwrap_err();
        assert_eq!(err, "returned 1 outcomes for 2 records");
        let err = decode_routes(vec![0, 0, 0, 0], 1, None).unwrap_err();
        assert_eq!(err, "returned 0 routes for 1 records");
    }

    #[test]
    fn truncated_and_trailing_output_is_rejected() {
        let err = decode_outcomes(
            vec![1, 0, 0, 0, OUTCOME_ERROR, 9, 0],
            &[rec("a")],
            false,
            UNLIMITED,
        )
        .unwrap_err();
        assert!(err.contains("truncated"), "{err}");
        let err = decode_outcomes(
            vec![1, 0, 0, 0, OUTCOME_KEEP, 7],
            &[rec("a")],
            false,
            UNLIMITED,
        )
        .unwrap_err();
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
        let got = decode_outcomes(out.clone(), &[input.clone()], false, UNLIMITED).unwrap();
        let Outcome::Records(recs) = &got[0] else {
            panic!("{got:?}")
        };
        assert_eq!(recs[0].key, input.key);
        assert_eq!(recs[0].timestamp, Some(5));
        assert_eq!(&recs[0].value[..], b"{");
        assert_eq!(recs[1].key, None);
        assert_eq!(recs[1].timestamp, Some(9));
        assert_eq!(recs[1].offset, input.offset);
        let err = decode_outcomes(out, &[input], true, UNLIMITED).unwrap_err();
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
