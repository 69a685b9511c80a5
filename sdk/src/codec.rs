//! The batch encoding described in `sdk/wit/plugin.wit`: the guest's side (decode input batches,
//! encode outcomes and routes). The host has its own copy in `runtime/src/plugin/codec.rs`.

use crate::{Outcome, Output, Record, Route};

pub(crate) const HAS_KEY: u8 = 1;
pub(crate) const HAS_TIMESTAMP: u8 = 2;
pub(crate) const HAS_HEADERS: u8 = 4;

pub(crate) const OUTCOME_KEEP: u8 = 0;
pub(crate) const OUTCOME_RECORDS: u8 = 1;
pub(crate) const OUTCOME_ERROR: u8 = 2;

pub(crate) const ROUTE_OK: u8 = 0;
pub(crate) const ROUTE_ERROR: u8 = 1;
pub(crate) const ROUTE_KEY: u8 = 1;
pub(crate) const ROUTE_INDEX: u8 = 2;
pub(crate) const ROUTE_HASH_KEY: u8 = 4;

/// Reads the encoded input batch. The host writes it, so a malformed batch is a host bug: the
/// reader panics, which traps the plugin and fails only this batch.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let Some(s) = self.buf.get(self.pos..self.pos + n) else {
            panic!("sluice-sdk: truncated batch from host at byte {}", self.pos)
        };
        self.pos += n;
        s
    }

    pub(crate) fn u8(&mut self) -> u8 {
        self.take(1)[0]
    }

    pub(crate) fn u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4));
        u32::from_le_bytes(b)
    }

    pub(crate) fn i64(&mut self) -> i64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8));
        i64::from_le_bytes(b)
    }

    pub(crate) fn bytes(&mut self) -> &'a [u8] {
        let n = self.u32() as usize;
        self.take(n)
    }

    pub(crate) fn str(&mut self) -> &'a str {
        match std::str::from_utf8(self.bytes()) {
            Ok(s) => s,
            Err(e) => panic!("sluice-sdk: host sent a name that is not UTF-8: {e}"),
        }
    }

    pub(crate) fn at_end(&self) -> bool {
        self.pos == self.buf.len()
    }

    /// Reads the next input record into `rec`, reusing its header and metadata vectors.
    pub(crate) fn record_into(&mut self, rec: &mut Record<'a>) {
        let flags = self.u8();
        rec.key = (flags & HAS_KEY != 0).then(|| self.bytes());
        rec.timestamp = (flags & HAS_TIMESTAMP != 0).then(|| self.i64());
        rec.headers.clear();
        for _ in 0..self.u32() {
            let name = self.str();
            rec.headers.push((name, self.bytes()));
        }
        rec.meta.clear();
        for _ in 0..self.u32() {
            let name = self.str();
            rec.meta.push((name, self.str()));
        }
        rec.value = self.bytes();
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

fn put_u32(buf: &mut Vec<u8>, n: usize) {
    let n = u32::try_from(n).unwrap_or_else(|_| panic!("sluice-sdk: {n} does not fit in u32"));
    buf.extend_from_slice(&n.to_le_bytes());
}

fn put_bytes(buf: &mut Vec<u8>, b: &[u8]) {
    put_u32(buf, b.len());
    buf.extend_from_slice(b);
}

/// Writes one input record (used by [`crate::testing`] to run trait impls through the same path
/// as the host).
pub(crate) fn put_record(buf: &mut Vec<u8>, r: &Record<'_>) {
    let mut flags = 0;
    if r.key.is_some() {
        flags |= HAS_KEY;
    }
    if r.timestamp.is_some() {
        flags |= HAS_TIMESTAMP;
    }
    buf.push(flags);
    if let Some(k) = r.key {
        put_bytes(buf, k);
    }
    if let Some(t) = r.timestamp {
        buf.extend_from_slice(&t.to_le_bytes());
    }
    put_u32(buf, r.headers.len());
    for (n, v) in &r.headers {
        put_bytes(buf, n.as_bytes());
        put_bytes(buf, v);
    }
    put_u32(buf, r.meta.len());
    for (n, v) in &r.meta {
        put_bytes(buf, n.as_bytes());
        put_bytes(buf, v.as_bytes());
    }
    put_bytes(buf, r.value);
}

/// Collects the outcomes of a batch (one per input record, in order) in the wire encoding.
///
/// [`Outcomes::push`] takes an [`Outcome`]; the `push_*` shortcuts write straight into the output
/// buffer without building one, which saves an allocation per record on hot paths.
pub struct Outcomes {
    buf: Vec<u8>,
    count: u32,
}

impl Outcomes {
    pub(crate) fn with_capacity(bytes: usize) -> Self {
        let mut buf = Vec::with_capacity(bytes + 4);
        buf.extend_from_slice(&[0; 4]);
        Self { buf, count: 0 }
    }

    /// The input record passes unchanged.
    pub fn push_keep(&mut self) {
        self.count += 1;
        self.buf.push(OUTCOME_KEEP);
    }

    /// The input record is dropped.
    pub fn push_drop(&mut self) {
        self.count += 1;
        self.buf.push(OUTCOME_RECORDS);
        put_u32(&mut self.buf, 0);
    }

    /// One output record with this value (key, headers and timestamp inherited).
    pub fn push_value(&mut self, value: &[u8]) {
        self.count += 1;
        self.buf.push(OUTCOME_RECORDS);
        put_u32(&mut self.buf, 1);
        self.buf.push(0);
        put_bytes(&mut self.buf, value);
    }

    /// One output record whose value is `value` serialized as JSON, written in place.
    pub fn push_json<T: serde::Serialize + ?Sized>(&mut self, value: &T) {
        let mark = self.buf.len();
        self.count += 1;
        self.buf.push(OUTCOME_RECORDS);
        put_u32(&mut self.buf, 1);
        self.buf.push(0);
        let len_at = self.buf.len();
        put_u32(&mut self.buf, 0);
        match serde_json::to_writer(&mut self.buf, value) {
            Ok(()) => {
                let n = self.buf.len() - len_at - 4;
                let n = u32::try_from(n).unwrap_or(u32::MAX);
                self.buf[len_at..len_at + 4].copy_from_slice(&n.to_le_bytes());
            }
            Err(e) => {
                self.buf.truncate(mark);
                self.count -= 1;
                self.push_error(&format!("cannot serialize output as JSON: {e}"));
            }
        }
    }

    /// The input record is bad; it goes to the pipeline's error policy with this message.
    pub fn push_error(&mut self, message: &str) {
        self.count += 1;
        self.buf.push(OUTCOME_ERROR);
        put_bytes(&mut self.buf, message.as_bytes());
    }

    /// Appends an [`Outcome`].
    pub fn push(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Keep => self.push_keep(),
            Outcome::Value(v) => self.push_value(&v),
            Outcome::Records(outs) => {
                self.count += 1;
                self.buf.push(OUTCOME_RECORDS);
                put_u32(&mut self.buf, outs.len());
                for o in &outs {
                    self.put_output(o);
                }
            }
            Outcome::Error(msg) => self.push_error(&msg),
        }
    }

    fn put_output(&mut self, o: &Output) {
        let mut flags = 0;
        if o.key.is_some() {
            flags |= HAS_KEY;
        }
        if o.timestamp.is_some() {
            flags |= HAS_TIMESTAMP;
        }
        if o.headers.is_some() {
            flags |= HAS_HEADERS;
        }
        let buf = &mut self.buf;
        buf.push(flags);
        if let Some(key) = &o.key {
            match key {
                Some(k) => {
                    buf.push(1);
                    put_bytes(buf, k);
                }
                None => buf.push(0),
            }
        }
        if let Some(ts) = o.timestamp {
            match ts {
                Some(t) => {
                    buf.push(1);
                    buf.extend_from_slice(&t.to_le_bytes());
                }
                None => buf.push(0),
            }
        }
        if let Some(headers) = &o.headers {
            put_u32(buf, headers.len());
            for (n, v) in headers {
                put_bytes(buf, n.as_bytes());
                put_bytes(buf, v);
            }
        }
        put_bytes(buf, &o.value);
    }

    /// How many outcomes were pushed.
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

/// Collects the routes of a batch (one per input record, in order) in the wire encoding.
pub struct Routes {
    buf: Vec<u8>,
    count: u32,
}

impl Routes {
    pub(crate) fn with_capacity(records: usize) -> Self {
        let mut buf = Vec::with_capacity(4 + records * 24);
        buf.extend_from_slice(&[0; 4]);
        Self { buf, count: 0 }
    }

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
        let mut flags = 0;
        if key.is_some() {
            flags |= ROUTE_KEY;
        }
        if index.is_some() {
            flags |= ROUTE_INDEX;
        }
        if hash_key.is_some() {
            flags |= ROUTE_HASH_KEY;
        }
        self.buf.push(ROUTE_OK);
        self.buf.push(flags);
        if let Some(k) = key {
            put_bytes(&mut self.buf, k.as_bytes());
        }
        if let Some(i) = index {
            self.buf.extend_from_slice(&i.to_le_bytes());
        }
        if let Some(h) = hash_key {
            put_bytes(&mut self.buf, h.as_bytes());
        }
    }

    /// The record cannot be routed; it goes to the pipeline's error policy.
    pub fn push_error(&mut self, message: &str) {
        self.count += 1;
        self.buf.push(ROUTE_ERROR);
        put_bytes(&mut self.buf, message.as_bytes());
    }

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
