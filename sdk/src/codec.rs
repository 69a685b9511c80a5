//! The guest's side of the batch encoding (`sluice-wire`, described in `sdk/wit/plugin.wit`):
//! lazy input batches, and outcome and route buffers written in place.

use std::marker::PhantomData;

use crate::{Outcome, Output, Record, Route};

pub(crate) use sluice_wire::{
    HAS_HEADERS, HAS_KEY, HAS_TIMESTAMP, OUTCOME_ERROR, OUTCOME_KEEP, OUTCOME_RECORDS, ROUTE_ERROR,
    ROUTE_HASH_KEY, ROUTE_INDEX, ROUTE_KEY, ROUTE_OK,
};
use sluice_wire::{put_bytes, put_len};

/// Reads the encoded input batch. The host writes it, so a malformed batch is a host bug: the
/// reader panics, which traps the plugin and fails only this batch.
pub(crate) struct Reader<'a>(sluice_wire::Reader<'a>);

fn ok<T>(r: Result<T, sluice_wire::Error>) -> T {
    r.unwrap_or_else(|e| panic!("sluice-sdk: malformed batch from host: {e}"))
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self(sluice_wire::Reader::new(buf))
    }

    pub(crate) fn u8(&mut self) -> u8 {
        ok(self.0.u8())
    }

    pub(crate) fn u32(&mut self) -> u32 {
        ok(self.0.u32())
    }

    pub(crate) fn i64(&mut self) -> i64 {
        ok(self.0.i64())
    }

    pub(crate) fn bytes(&mut self) -> &'a [u8] {
        ok(self.0.bytes())
    }

    pub(crate) fn at_end(&self) -> bool {
        self.0.at_end()
    }

    /// Reads the next input record into `rec`, reusing its header and metadata vectors.
    pub(crate) fn record_into(&mut self, rec: &mut Record<'a>) {
        let r = &mut self.0;
        let flags = ok(r.u8());
        rec.key = (flags & HAS_KEY != 0).then(|| ok(r.bytes()));
        rec.timestamp = (flags & HAS_TIMESTAMP != 0).then(|| ok(r.i64()));
        rec.headers.clear();
        for _ in 0..ok(r.u32()) {
            let name = ok(r.str());
            rec.headers.push((name, ok(r.bytes())));
        }
        rec.meta.clear();
        for _ in 0..ok(r.u32()) {
            let name = ok(r.str());
            rec.meta.push((name, ok(r.str())));
        }
        rec.value = ok(r.bytes());
    }
}

/// The records of one batch, decoded lazily from the host's buffer.
pub struct Batch<'a> {
    reader: Reader<'a>,
    len: u32,
}

impl<'a> Batch<'a> {
    pub(crate) fn decode(buf: &'a [u8]) -> Self {
        let mut reader = Reader::new(buf);
        let len = reader.u32();
        Self { reader, len }
    }

    /// The number of records in the batch.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Calls `f` with each record, in order. The record is a view into the batch; copy what you
    /// keep.
    pub fn for_each(mut self, mut f: impl FnMut(&Record<'a>)) {
        let mut rec = Record::default();
        for _ in 0..self.len {
            self.reader.record_into(&mut rec);
            f(&rec);
        }
    }
}

/// Writes one input record (used by [`crate::testing`] to run trait impls through the same path
/// as the host).
pub(crate) fn put_record(buf: &mut Vec<u8>, r: &Record<'_>) {
    sluice_wire::put_input_record(
        buf,
        r.key,
        r.timestamp,
        r.headers.iter().copied(),
        r.meta.iter().copied(),
        r.value,
    );
}

/// The answer to one batch in the wire encoding, written in place: a little-endian `u32` count,
/// then that many items (`T` is [`Outcome`] or [`Route`]). Plugins see it as [`Outcomes`] or
/// [`Routes`].
pub struct Counted<T> {
    buf: Vec<u8>,
    count: u32,
    item: PhantomData<fn() -> T>,
}

impl<T> Counted<T> {
    pub(crate) fn with_capacity(bytes: usize) -> Self {
        let mut buf = Vec::with_capacity(bytes + 4);
        buf.extend_from_slice(&[0; 4]);
        Self {
            buf,
            count: 0,
            item: PhantomData,
        }
    }

    /// How many items were pushed.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub(crate) fn finish(mut self) -> Vec<u8> {
        let count = self.count.to_le_bytes();
        self.buf[..4].copy_from_slice(&count);
        self.buf
    }
}

/// Collects the outcomes of a batch (one per input record, in order) in the wire encoding.
///
/// [`Outcomes::push`] takes an [`Outcome`]; the `push_*` shortcuts write straight into the output
/// buffer without building one, which saves an allocation per record on hot paths.
pub type Outcomes = Counted<Outcome>;

impl Outcomes {
    /// The input record passes unchanged.
    pub fn push_keep(&mut self) {
        self.count += 1;
        self.buf.push(OUTCOME_KEEP);
    }

    /// The input record is dropped.
    pub fn push_drop(&mut self) {
        self.count += 1;
        self.buf.push(OUTCOME_RECORDS);
        put_len(&mut self.buf, 0);
    }

    /// One output record with this value (key, headers and timestamp inherited).
    pub fn push_value(&mut self, value: &[u8]) {
        self.count += 1;
        self.buf.push(OUTCOME_RECORDS);
        put_len(&mut self.buf, 1);
        self.buf.push(0);
        put_bytes(&mut self.buf, value);
    }

    /// One output record whose value is `value` serialized as JSON, written in place.
    pub fn push_json<T: serde::Serialize + ?Sized>(&mut self, value: &T) {
        if let Err(e) = self.push_written(|buf| serde_json::to_writer(buf, value)) {
            self.push_error(&format!("cannot serialize output as JSON: {e}"));
        }
    }

    /// One output record whose value is this JSON value, written in place with the SDK's JSON
    /// writer ([`crate::json::write`]: the bytes [`Outcomes::push_json`] gives, faster).
    pub fn push_json_value(&mut self, value: &serde_json::Value) {
        let Ok(()) = self.push_written(|buf| {
            crate::json::write(buf, value);
            Ok::<(), std::convert::Infallible>(())
        });
    }

    /// One output record whose value `write` appends to the buffer; if it fails, nothing is
    /// pushed.
    fn push_written<E>(
        &mut self,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<(), E> {
        let mark = self.buf.len();
        self.buf.push(OUTCOME_RECORDS);
        put_len(&mut self.buf, 1);
        self.buf.push(0);
        let len_at = self.buf.len();
        put_len(&mut self.buf, 0);
        if let Err(e) = write(&mut self.buf) {
            self.buf.truncate(mark);
            return Err(e);
        }
        self.count += 1;
        let n = self.buf.len() - len_at - 4;
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        self.buf[len_at..len_at + 4].copy_from_slice(&n.to_le_bytes());
        Ok(())
    }

    /// The input record is bad; it goes to the pipeline's error policy with this message.
    pub fn push_error(&mut self, message: &str) {
        self.count += 1;
        sluice_wire::put_error(&mut self.buf, OUTCOME_ERROR, message);
    }

    /// Appends an [`Outcome`].
    pub fn push(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Keep => self.push_keep(),
            Outcome::Value(v) => self.push_value(&v),
            Outcome::Records(outs) => {
                self.count += 1;
                self.buf.push(OUTCOME_RECORDS);
                put_len(&mut self.buf, outs.len());
                for o in &outs {
                    self.put_output(o);
                }
            }
            Outcome::Error(msg) => self.push_error(&msg),
        }
    }

    fn put_output(&mut self, o: &Output) {
        sluice_wire::put_output_record(
            &mut self.buf,
            o.key.as_ref().map(|k| k.as_deref()),
            o.timestamp,
            o.headers
                .as_ref()
                .map(|h| h.iter().map(|(n, v)| (n.as_str(), v.as_slice()))),
            &o.value,
        );
    }
}

/// Collects the routes of a batch (one per input record, in order) in the wire encoding.
pub type Routes = Counted<Route>;

impl Routes {
    /// Appends one route or a per-record error.
    pub fn push(&mut self, route: Result<Route, String>) {
        match route {
            Ok(r) => self.push_route(r.key.as_deref(), r.index, r.explicit_hash_key.as_deref()),
            Err(e) => self.push_error(&e),
        }
    }

    /// Appends a route without building a [`Route`].
    pub fn push_route(&mut self, key: Option<&str>, index: Option<u32>, hash_key: Option<&str>) {
        self.count += 1;
        sluice_wire::put_route(&mut self.buf, key, index, hash_key);
    }

    /// The record cannot be routed; it goes to the pipeline's error policy.
    pub fn push_error(&mut self, message: &str) {
        self.count += 1;
        sluice_wire::put_error(&mut self.buf, ROUTE_ERROR, message);
    }
}
