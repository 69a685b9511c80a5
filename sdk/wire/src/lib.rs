//! The batch encoding between the Sluice host and its plugins, described in `sdk/wit/plugin.wit`:
//! one definition for the host, the guest SDK and its testing helpers.
//!
//! All integers are little-endian; `bytes` is a `u32` length and the bytes; a string is `bytes`
//! holding UTF-8. Readers never panic and never trust a claimed length: every read is
//! bounds-checked and returns [`Error`].

#![no_std]

extern crate alloc;

use alloc::vec::Vec;
use core::fmt;
use core::ops::Range;

/// The version of the `sluice:plugin` WIT package this encoding belongs to (checked against
/// `sdk/wit/plugin.wit` by a test).
pub const WIT_VERSION: &str = "0.1.0";

/// Input record flags (host → guest), and the override flags of an output record.
pub const HAS_KEY: u8 = 1;
pub const HAS_TIMESTAMP: u8 = 2;
/// Output records only: the record carries its own header list.
pub const HAS_HEADERS: u8 = 4;

/// Outcome tags of a record output.
pub const OUTCOME_KEEP: u8 = 0;
pub const OUTCOME_RECORDS: u8 = 1;
pub const OUTCOME_ERROR: u8 = 2;

/// Route tags and flags of a route output.
pub const ROUTE_OK: u8 = 0;
pub const ROUTE_ERROR: u8 = 1;
pub const ROUTE_KEY: u8 = 1;
pub const ROUTE_INDEX: u8 = 2;
pub const ROUTE_HASH_KEY: u8 = 4;

/// The fewest bytes one output record takes (a flags byte and an empty value's length), so a
/// claimed count can be checked against what is left before anything is allocated for it.
pub const MIN_OUTPUT_RECORD: usize = 5;
/// The fewest bytes one header takes (two empty lengths).
pub const MIN_HEADER: usize = 8;

/// What is wrong with an encoded buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The buffer ends before a field it announces.
    Truncated { at: usize },
    /// A string field is not UTF-8.
    NotUtf8 { at: usize },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Truncated { at } => write!(f, "output truncated at byte {at}"),
            Error::NotUtf8 { at } => write!(f, "string at byte {at} is not UTF-8"),
        }
    }
}

/// Reads an encoded buffer front to back.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// The offset of the next read.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn at_end(&self) -> bool {
        self.pos == self.buf.len()
    }

    /// The range of the next `n` bytes, consumed.
    pub fn take(&mut self, n: usize) -> Result<Range<usize>, Error> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or(Error::Truncated { at: self.pos })?;
        let r = self.pos..end;
        self.pos = end;
        Ok(r)
    }

    pub fn u8(&mut self) -> Result<u8, Error> {
        let r = self.take(1)?;
        Ok(self.buf[r.start])
    }

    pub fn u32(&mut self) -> Result<u32, Error> {
        let r = self.take(4)?;
        let mut b = [0; 4];
        b.copy_from_slice(&self.buf[r]);
        Ok(u32::from_le_bytes(b))
    }

    pub fn i64(&mut self) -> Result<i64, Error> {
        let r = self.take(8)?;
        let mut b = [0; 8];
        b.copy_from_slice(&self.buf[r]);
        Ok(i64::from_le_bytes(b))
    }

    /// The range of a length-prefixed byte string (for readers that share the buffer).
    pub fn bytes_range(&mut self) -> Result<Range<usize>, Error> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    /// A length-prefixed byte string.
    pub fn bytes(&mut self) -> Result<&'a [u8], Error> {
        let r = self.bytes_range()?;
        Ok(&self.buf[r])
    }

    /// A length-prefixed UTF-8 string.
    pub fn str(&mut self) -> Result<&'a str, Error> {
        let at = self.pos;
        core::str::from_utf8(self.bytes()?).map_err(|_| Error::NotUtf8 { at })
    }
}

/// A length or count as the wire's `u32`. Nothing reaches 4 GiB here (a wasm32 memory cannot
/// hold it), so a larger value is clamped rather than wrapped.
pub fn put_len(buf: &mut Vec<u8>, n: usize) {
    buf.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes());
}

pub fn put_bytes(buf: &mut Vec<u8>, b: &[u8]) {
    put_len(buf, b.len());
    buf.extend_from_slice(b);
}

pub fn put_i64(buf: &mut Vec<u8>, n: i64) {
    buf.extend_from_slice(&n.to_le_bytes());
}

/// Writes one input record (host → guest): flags, key, timestamp, headers, metadata, value.
pub fn put_input_record<'r>(
    buf: &mut Vec<u8>,
    key: Option<&[u8]>,
    timestamp: Option<i64>,
    headers: impl ExactSizeIterator<Item = (&'r str, &'r [u8])>,
    meta: impl ExactSizeIterator<Item = (&'r str, &'r str)>,
    value: &[u8],
) {
    let mut flags = 0;
    if key.is_some() {
        flags |= HAS_KEY;
    }
    if timestamp.is_some() {
        flags |= HAS_TIMESTAMP;
    }
    buf.push(flags);
    if let Some(k) = key {
        put_bytes(buf, k);
    }
    if let Some(t) = timestamp {
        put_i64(buf, t);
    }
    put_len(buf, headers.len());
    for (n, v) in headers {
        put_bytes(buf, n.as_bytes());
        put_bytes(buf, v);
    }
    put_len(buf, meta.len());
    for (n, v) in meta {
        put_bytes(buf, n.as_bytes());
        put_bytes(buf, v.as_bytes());
    }
    put_bytes(buf, value);
}

/// Writes one output record (guest → host): what it overrides of its input (`Some(None)` clears
/// a key or timestamp), then its value.
pub fn put_output_record<'r>(
    buf: &mut Vec<u8>,
    key: Option<Option<&[u8]>>,
    timestamp: Option<Option<i64>>,
    headers: Option<impl ExactSizeIterator<Item = (&'r str, &'r [u8])>>,
    value: &[u8],
) {
    let mut flags = 0;
    if key.is_some() {
        flags |= HAS_KEY;
    }
    if timestamp.is_some() {
        flags |= HAS_TIMESTAMP;
    }
    if headers.is_some() {
        flags |= HAS_HEADERS;
    }
    buf.push(flags);
    match key {
        Some(Some(k)) => {
            buf.push(1);
            put_bytes(buf, k);
        }
        Some(None) => buf.push(0),
        None => {}
    }
    match timestamp {
        Some(Some(t)) => {
            buf.push(1);
            put_i64(buf, t);
        }
        Some(None) => buf.push(0),
        None => {}
    }
    if let Some(headers) = headers {
        put_len(buf, headers.len());
        for (n, v) in headers {
            put_bytes(buf, n.as_bytes());
            put_bytes(buf, v);
        }
    }
    put_bytes(buf, value);
}

/// Writes one route (guest → host).
pub fn put_route(buf: &mut Vec<u8>, key: Option<&str>, index: Option<u32>, hash_key: Option<&str>) {
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
    buf.push(ROUTE_OK);
    buf.push(flags);
    if let Some(k) = key {
        put_bytes(buf, k.as_bytes());
    }
    if let Some(i) = index {
        buf.extend_from_slice(&i.to_le_bytes());
    }
    if let Some(h) = hash_key {
        put_bytes(buf, h.as_bytes());
    }
}

/// Writes a per-record error (an outcome or a route, by `tag`).
pub fn put_error(buf: &mut Vec<u8>, tag: u8, message: &str) {
    buf.push(tag);
    put_bytes(buf, message.as_bytes());
}

/// One input record as read from a batch, borrowing the buffer.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct InputRecord<'a> {
    pub key: Option<&'a [u8]>,
    pub timestamp: Option<i64>,
    pub headers: Vec<(&'a str, &'a [u8])>,
    pub meta: Vec<(&'a str, &'a str)>,
    pub value: &'a [u8],
}

/// Reads the next input record into `rec`, reusing its header and metadata vectors.
pub fn read_input_record<'a>(r: &mut Reader<'a>, rec: &mut InputRecord<'a>) -> Result<(), Error> {
    let flags = r.u8()?;
    rec.key = if flags & HAS_KEY != 0 {
        Some(r.bytes()?)
    } else {
        None
    };
    rec.timestamp = if flags & HAS_TIMESTAMP != 0 {
        Some(r.i64()?)
    } else {
        None
    };
    rec.headers.clear();
    for _ in 0..r.u32()? {
        let name = r.str()?;
        rec.headers.push((name, r.bytes()?));
    }
    rec.meta.clear();
    for _ in 0..r.u32()? {
        let name = r.str()?;
        rec.meta.push((name, r.str()?));
    }
    rec.value = r.bytes()?;
    Ok(())
}

/// Compact JSON output (feature `json`): the bytes `serde_json::to_writer` writes for a `Value`,
/// but strings are scanned for characters to escape eight bytes at a time. serde_json looks up
/// every byte of a string in a table, a loop that took about a third of a JSON plugin's time on
/// 1 KiB records in wasm (docs/benchmarks.md, "Plugins").
#[cfg(feature = "json")]
pub mod json {
    use alloc::vec::Vec;
    use core::fmt::{self, Write as _};
    use serde_json::Value;

    /// `value` as compact JSON: the bytes `serde_json::to_vec` gives.
    pub fn to_vec(value: &Value) -> Vec<u8> {
        // serde_json's first guess too.
        let mut buf = Vec::with_capacity(128);
        write_value(&mut buf, value);
        buf
    }

    /// Appends `value` as compact JSON.
    pub fn write_value(buf: &mut Vec<u8>, value: &Value) {
        match value {
            Value::Null => buf.extend_from_slice(b"null"),
            Value::Bool(true) => buf.extend_from_slice(b"true"),
            Value::Bool(false) => buf.extend_from_slice(b"false"),
            Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    buf.extend_from_slice(itoa::Buffer::new().format(u).as_bytes());
                } else if let Some(i) = n.as_i64() {
                    buf.extend_from_slice(itoa::Buffer::new().format(i).as_bytes());
                } else {
                    // A float displays as serde_json serializes it; a Vec cannot fail a write.
                    let _ = write!(VecWriter(buf), "{n}");
                }
            }
            Value::String(s) => write_str(buf, s),
            Value::Array(items) => {
                buf.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        buf.push(b',');
                    }
                    write_value(buf, item);
                }
                buf.push(b']');
            }
            Value::Object(map) => {
                buf.push(b'{');
                for (i, (key, item)) in map.iter().enumerate() {
                    if i > 0 {
                        buf.push(b',');
                    }
                    write_str(buf, key);
                    buf.push(b':');
                    write_value(buf, item);
                }
                buf.push(b'}');
            }
        }
    }

    /// Appends `s` as a JSON string, escaped as serde_json escapes it.
    fn write_str(buf: &mut Vec<u8>, s: &str) {
        let bytes = s.as_bytes();
        buf.reserve(bytes.len() + 2);
        buf.push(b'"');
        // `bytes[done..i]` is checked and not written yet.
        let mut done = 0;
        let mut i = 0;
        loop {
            // Whole chunks of 8 bytes that need no escape.
            while let Some(chunk) = bytes[i..].first_chunk::<8>() {
                if may_need_escape(u64::from_le_bytes(*chunk)) {
                    break;
                }
                i += 8;
            }
            // Then byte by byte through the chunk that may need one (or the string's tail).
            let stop = (i + 8).min(bytes.len());
            while i < stop {
                let b = bytes[i];
                if NEEDS_ESCAPE[usize::from(b)] {
                    buf.extend_from_slice(&bytes[done..i]);
                    put_escape(buf, b);
                    done = i + 1;
                }
                i += 1;
            }
            if i == bytes.len() {
                break;
            }
        }
        buf.extend_from_slice(&bytes[done..]);
        buf.push(b'"');
    }

    /// Control characters, `"` and `\\`.
    static NEEDS_ESCAPE: [bool; 256] = {
        let mut table = [false; 256];
        let mut b = 0;
        while b < 0x20 {
            table[b] = true;
            b += 1;
        }
        table[b'"' as usize] = true;
        table[b'\\' as usize] = true;
        table
    };

    /// Whether any of 8 bytes may be a control character, `"` or `\\`. Exact when none is: a
    /// byte may only be flagged wrongly above one that truly matches, and the caller then checks
    /// byte by byte.
    fn may_need_escape(w: u64) -> bool {
        const ONES: u64 = u64::MAX / 255;
        const HIGH: u64 = ONES << 7;
        let control = w.wrapping_sub(ONES * 0x20) & !w;
        let q = w ^ (ONES * u64::from(b'"'));
        let quote = q.wrapping_sub(ONES) & !q;
        let b = w ^ (ONES * u64::from(b'\\'));
        let backslash = b.wrapping_sub(ONES) & !b;
        (control | quote | backslash) & HIGH != 0
    }

    fn put_escape(buf: &mut Vec<u8>, b: u8) {
        let short = match b {
            b'"' => b'"',
            b'\\' => b'\\',
            0x08 => b'b',
            0x0c => b'f',
            b'\n' => b'n',
            b'\r' => b'r',
            b'\t' => b't',
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                buf.extend_from_slice(b"\\u00");
                buf.push(HEX[usize::from(b >> 4)]);
                buf.push(HEX[usize::from(b & 0xf)]);
                return;
            }
        };
        buf.push(b'\\');
        buf.push(short);
    }

    struct VecWriter<'a>(&'a mut Vec<u8>);

    impl fmt::Write for VecWriter<'_> {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            self.0.extend_from_slice(s.as_bytes());
            Ok(())
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use alloc::string::String;
        use serde_json::json;

        fn same_as_serde_json(v: &Value) {
            let mut ours = Vec::new();
            write_value(&mut ours, v);
            let theirs = serde_json::to_string(v).unwrap();
            assert_eq!(core::str::from_utf8(&ours).unwrap(), theirs);
        }

        #[test]
        fn writes_what_serde_json_writes() {
            same_as_serde_json(&json!({
                "a": null, "b": [true, false, [], {}], "n": [0, -7, 18446744073709551615u64,
                -9223372036854775808i64, 1.5, -0.0, 1e300, 2.5e-8, 100.0],
                "s": "", "é ü 漢 🙂": "naïve \u{7f} \u{2028}", "nested": {"x": {"y": [1, "z"]}}
            }));
        }

        #[test]
        fn escapes_every_character_at_every_position() {
            // Each ASCII character alone and placed around the 8-byte chunk boundaries, with
            // runs before and after, and next to multi-byte characters.
            for c in 0u8..=0x7f {
                for before in 0..20 {
                    for after in [0, 1, 7, 8, 9] {
                        let mut s = String::new();
                        s.extend(core::iter::repeat_n('x', before));
                        s.push(char::from(c));
                        s.extend(core::iter::repeat_n('é', after));
                        same_as_serde_json(&Value::String(s));
                    }
                }
            }
            let all: String = (0u8..=0x7f).map(char::from).collect();
            let mut map = serde_json::Map::new();
            map.insert(all.clone(), json!([all.clone(), all]));
            same_as_serde_json(&Value::Object(map));
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use alloc::vec;

    #[test]
    fn the_wit_version_is_the_wit_files() {
        let wit = include_str!("../../wit/plugin.wit");
        assert!(wit.contains(&alloc::format!("package sluice:plugin@{WIT_VERSION};")));
    }

    #[test]
    fn input_records_round_trip() {
        let mut buf = Vec::new();
        let headers = [("h", &b"v"[..])];
        let meta = [("shard-id", "s-1")];
        put_input_record(
            &mut buf,
            Some(b"k"),
            Some(-5),
            headers.iter().copied(),
            meta.iter().copied(),
            b"{}",
        );
        put_input_record(&mut buf, None, None, [].into_iter(), [].into_iter(), b"");
        let mut r = Reader::new(&buf);
        let mut rec = InputRecord::default();
        read_input_record(&mut r, &mut rec).unwrap();
        assert_eq!(
            rec,
            InputRecord {
                key: Some(b"k"),
                timestamp: Some(-5),
                headers: vec![("h", b"v")],
                meta: vec![("shard-id", "s-1")],
                value: b"{}",
            }
        );
        read_input_record(&mut r, &mut rec).unwrap();
        assert_eq!(rec, InputRecord::default());
        assert!(r.at_end());
    }

    #[test]
    fn a_claimed_length_is_checked_not_trusted() {
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xff, 1]);
        assert_eq!(r.bytes(), Err(Error::Truncated { at: 4 }));
        let mut r = Reader::new(&[2, 0, 0, 0, 0xc3, 0x28]);
        assert_eq!(r.str(), Err(Error::NotUtf8 { at: 0 }));
        assert_eq!(Reader::new(&[1, 2]).u32(), Err(Error::Truncated { at: 0 }));
    }

    #[test]
    fn routes_and_outputs_write_what_the_wit_describes() {
        let mut buf = Vec::new();
        put_route(&mut buf, Some("a"), Some(3), None);
        assert_eq!(
            buf,
            [
                ROUTE_OK,
                ROUTE_KEY | ROUTE_INDEX,
                1,
                0,
                0,
                0,
                b'a',
                3,
                0,
                0,
                0
            ]
        );
        buf.clear();
        put_output_record(
            &mut buf,
            Some(None),
            None,
            None::<core::iter::Empty<(&str, &[u8])>>,
            b"x",
        );
        assert_eq!(buf, [HAS_KEY, 0, 1, 0, 0, 0, b'x']);
    }
}
