//! KPL record aggregation: many user records in one Kinesis record, in the format the Kinesis
//! Producer Library writes and the KCL reads.
//!
//! ```text
//! 0xF3 0x89 0x9A 0xC2 | protobuf AggregatedRecord | MD5(protobuf), 16 bytes
//!
//! message AggregatedRecord {
//!   repeated string partition_key_table     = 1;
//!   repeated string explicit_hash_key_table = 2;
//!   repeated Record records                 = 3;
//! }
//! message Record {
//!   required uint64 partition_key_index     = 1;
//!   optional uint64 explicit_hash_key_index = 2;
//!   required bytes  data                    = 3;
//!   repeated Tag    tags                    = 4;   // skipped when reading
//! }
//! ```
//!
//! The protobuf is small and fixed, so it is written and read by hand here rather than through a
//! code generator and a build step.

use std::collections::HashMap;

use bytes::Bytes;
use md5::{Digest, Md5};

/// The four bytes that start every aggregated record.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];
const DIGEST_LEN: usize = 16;

/// One user record inside an aggregated record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub partition_key: String,
    pub explicit_hash_key: Option<String>,
    pub data: Bytes,
}

/// The hash key Kinesis derives from a partition key: MD5 as a 128-bit big-endian number.
pub fn hash_key_of(partition_key: &str) -> u128 {
    u128::from_be_bytes(Md5::digest(partition_key.as_bytes()).into())
}

/// The user records of an aggregated record, or `None` when `data` is not one (no magic, a bad
/// checksum or a malformed message): such a record is an ordinary record, as the KCL treats it.
pub fn deaggregate(data: &Bytes) -> Option<Vec<UserRecord>> {
    if data.len() < MAGIC.len() + DIGEST_LEN || data[..MAGIC.len()] != MAGIC {
        return None;
    }
    let body = &data[MAGIC.len()..data.len() - DIGEST_LEN];
    let digest = &data[data.len() - DIGEST_LEN..];
    if Md5::digest(body).as_slice() != digest {
        return None;
    }
    let mut pks = Vec::new();
    let mut ehks = Vec::new();
    let mut raw = Vec::new();
    let mut r = Reader::new(body);
    while !r.done() {
        let (field, wire) = r.key()?;
        match (field, wire) {
            (1, 2) => pks.push(String::from_utf8(r.bytes()?.to_vec()).ok()?),
            (2, 2) => ehks.push(String::from_utf8(r.bytes()?.to_vec()).ok()?),
            (3, 2) => {
                let len = r.bytes()?.len();
                raw.push((r.pos - len, len));
            }
            (_, w) => r.skip(w)?,
        }
    }
    let mut out = Vec::with_capacity(raw.len());
    let base = MAGIC.len();
    for (off, len) in raw {
        let mut m = Reader::new(&body[off..off + len]);
        let (mut pk, mut ehk, mut payload) = (None, None, None);
        while !m.done() {
            match m.key()? {
                (1, 0) => pk = Some(m.varint()?),
                (2, 0) => ehk = Some(m.varint()?),
                (3, 2) => {
                    let b = m.bytes()?;
                    let at = base + off + m.pos - b.len();
                    payload = Some(data.slice(at..at + b.len()));
                }
                (_, w) => m.skip(w)?,
            }
        }
        let partition_key = pks.get(usize::try_from(pk?).ok()?)?.clone();
        let explicit_hash_key = match ehk {
            Some(i) => Some(ehks.get(usize::try_from(i).ok()?)?.clone()),
            None => None,
        };
        out.push(UserRecord {
            partition_key,
            explicit_hash_key,
            data: payload?,
        });
    }
    Some(out)
}

/// Builds one aggregated record.
#[derive(Debug, Default)]
pub struct Aggregate {
    pks: Vec<String>,
    pk_index: HashMap<String, u64>,
    ehks: Vec<String>,
    ehk_index: HashMap<String, u64>,
    records: Vec<(u64, Option<u64>, Bytes)>,
    /// Size of the protobuf so far.
    body: usize,
}

impl Aggregate {
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The partition key of the aggregated record: the first user record's, as the KPL does.
    pub fn partition_key(&self) -> Option<&str> {
        self.records
            .first()
            .and_then(|(i, _, _)| self.pks.get(*i as usize))
            .map(String::as_str)
    }

    /// The explicit hash key of the aggregated record: the first user record's, or the hash
    /// of its partition key, so the aggregate lands on the shard of its first record.
    pub fn explicit_hash_key(&self) -> Option<String> {
        let (pk, ehk, _) = self.records.first()?;
        match ehk {
            Some(i) => self.ehks.get(*i as usize).cloned(),
            None => self
                .pks
                .get(*pk as usize)
                .map(|k| hash_key_of(k).to_string()),
        }
    }

    /// The only user record's data and explicit hash key, when there is exactly one.
    pub fn single(&self) -> Option<(Bytes, Option<String>)> {
        match self.records.as_slice() {
            [(_, ehk, data)] => Some((
                data.clone(),
                ehk.and_then(|i| self.ehks.get(i as usize).cloned()),
            )),
            _ => None,
        }
    }

    /// Size in bytes of the Kinesis record (magic, protobuf, checksum) with this user record
    /// added.
    pub fn size_with(&self, r: &UserRecord) -> usize {
        let mut add = 0;
        let pk_idx = match self.pk_index.get(&r.partition_key) {
            Some(i) => *i,
            None => {
                add += field_len(r.partition_key.len());
                self.pks.len() as u64
            }
        };
        let ehk_idx = r
            .explicit_hash_key
            .as_ref()
            .map(|k| match self.ehk_index.get(k) {
                Some(i) => *i,
                None => {
                    add += field_len(k.len());
                    self.ehks.len() as u64
                }
            });
        add += field_len(record_len(pk_idx, ehk_idx, r.data.len()));
        MAGIC.len() + self.body + add + DIGEST_LEN
    }

    /// Size in bytes of the finished Kinesis record.
    pub fn size(&self) -> usize {
        MAGIC.len() + self.body + DIGEST_LEN
    }

    pub fn add(&mut self, r: UserRecord) {
        let pk_idx = match self.pk_index.get(&r.partition_key) {
            Some(i) => *i,
            None => {
                let i = self.pks.len() as u64;
                self.body += field_len(r.partition_key.len());
                self.pk_index.insert(r.partition_key.clone(), i);
                self.pks.push(r.partition_key);
                i
            }
        };
        let ehk_idx = r.explicit_hash_key.map(|k| match self.ehk_index.get(&k) {
            Some(i) => *i,
            None => {
                let i = self.ehks.len() as u64;
                self.body += field_len(k.len());
                self.ehk_index.insert(k.clone(), i);
                self.ehks.push(k);
                i
            }
        });
        self.body += field_len(record_len(pk_idx, ehk_idx, r.data.len()));
        self.records.push((pk_idx, ehk_idx, r.data));
    }

    /// The aggregated record's bytes.
    pub fn finish(&self) -> Bytes {
        let mut body = Vec::with_capacity(self.body);
        for k in &self.pks {
            put_bytes(&mut body, 1, k.as_bytes());
        }
        for k in &self.ehks {
            put_bytes(&mut body, 2, k.as_bytes());
        }
        for (pk, ehk, data) in &self.records {
            put_key(&mut body, 3, 2);
            put_varint(&mut body, record_len(*pk, *ehk, data.len()) as u64);
            put_key(&mut body, 1, 0);
            put_varint(&mut body, *pk);
            if let Some(e) = ehk {
                put_key(&mut body, 2, 0);
                put_varint(&mut body, *e);
            }
            put_bytes(&mut body, 3, data);
        }
        let mut out = Vec::with_capacity(MAGIC.len() + body.len() + DIGEST_LEN);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&body);
        out.extend_from_slice(&Md5::digest(&body));
        Bytes::from(out)
    }
}

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

/// Size of a length-delimited field with a one-byte key.
fn field_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

/// Size of an encoded `Record` message (without its own key and length).
fn record_len(pk: u64, ehk: Option<u64>, data: usize) -> usize {
    1 + varint_len(pk) + ehk.map_or(0, |e| 1 + varint_len(e)) + field_len(data)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_key(out: &mut Vec<u8>, field: u32, wire: u8) {
    put_varint(out, (u64::from(field) << 3) | u64::from(wire));
}

fn put_bytes(out: &mut Vec<u8>, field: u32, b: &[u8]) {
    put_key(out, field, 2);
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// A protobuf reader over a byte slice; every method returns `None` on malformed input.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn varint(&mut self) -> Option<u64> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos)?;
            self.pos += 1;
            v |= u64::from(b & 0x7F) << shift;
            if b < 0x80 {
                return Some(v);
            }
        }
        None
    }

    fn key(&mut self) -> Option<(u64, u8)> {
        let k = self.varint()?;
        Some((k >> 3, (k & 7) as u8))
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.varint()?).ok()?;
        let end = self.pos.checked_add(len)?;
        let b = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(b)
    }

    fn skip(&mut self, wire: u8) -> Option<()> {
        match wire {
            0 => self.varint().map(|_| ()),
            1 => self.advance(8),
            2 => self.bytes().map(|_| ()),
            5 => self.advance(4),
            _ => None,
        }
    }

    fn advance(&mut self, n: usize) -> Option<()> {
        let end = self.pos.checked_add(n)?;
        (end <= self.buf.len()).then(|| self.pos = end)
    }
}
