//! JSON helpers for the common case: record values that are JSON objects.

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
pub use serde_json::value::RawValue;
pub use serde_json::{Map, Value};

/// Parses a record value as JSON.
pub fn parse(bytes: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("value is not valid JSON: {e}"))
}

/// Serializes a JSON value as compact JSON (the bytes `serde_json::to_vec` gives, written faster:
/// see [`write()`]).
pub fn to_vec(value: &Value) -> Vec<u8> {
    sluice_wire::json::to_vec(value)
}

/// Appends a JSON value as compact JSON to `buf`: the bytes serde_json writes, but strings are
/// scanned eight bytes at a time instead of one: the JSON mask plugin on 1 KiB records got about
/// a quarter faster (docs/benchmarks.md, "Plugins").
pub fn write(buf: &mut Vec<u8>, value: &Value) {
    sluice_wire::json::write_value(buf, value);
}

/// The value at a dotted path (`user.email`; array elements by index: `items.0.id`).
pub fn get_path<'v>(value: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.').try_fold(value, |v, part| match v {
        Value::Object(m) => m.get(part),
        Value::Array(a) => part.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

/// The value at a dotted path, mutably.
pub fn get_path_mut<'v>(value: &'v mut Value, path: &str) -> Option<&'v mut Value> {
    path.split('.').try_fold(value, |v, part| match v {
        Value::Object(m) => m.get_mut(part),
        Value::Array(a) => part.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
        _ => None,
    })
}

/// Extracts top-level fields of a JSON object without building a [`Value`]: for each name, the
/// field's raw JSON text (borrowed from `bytes`) if present. Fast enough for per-record
/// partitioning. Fails if `bytes` is not a JSON object.
pub fn top_level_fields<'a, S: AsRef<str>>(
    bytes: &'a [u8],
    names: &[S],
) -> Result<Vec<Option<&'a RawValue>>, String> {
    let mut found = vec![None; names.len()];
    top_level_fields_into(bytes, names, &mut found)?;
    Ok(found)
}

/// Like [`top_level_fields`], but fills `found[i]` for `names[i]` (the slice may live on the
/// stack, so nothing is allocated per record). Panics if `found` is shorter than `names`.
pub fn top_level_fields_into<'a, S: AsRef<str>>(
    bytes: &'a [u8],
    names: &[S],
    found: &mut [Option<&'a RawValue>],
) -> Result<(), String> {
    let found = &mut found[..names.len()];
    found.fill(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    FieldsSeed { names, found }
        .deserialize(&mut de)
        .and_then(|()| de.end())
        .map_err(|e| format!("value is not a JSON object: {e}"))
}

/// The text of a JSON value used as a key: a string's contents (unescaped), other values as
/// their JSON text (`42`, `true`, `{"a":1}`).
pub fn key_text(raw: &RawValue) -> Cow<'_, str> {
    let text = raw.get();
    if text.starts_with('"') {
        if !text.contains('\\') {
            return Cow::Borrowed(&text[1..text.len() - 1]);
        }
        if let Ok(s) = serde_json::from_str::<String>(text) {
            return Cow::Owned(s);
        }
    }
    Cow::Borrowed(text)
}

struct FieldsSeed<'n, 'f, 'a, S> {
    names: &'n [S],
    found: &'f mut [Option<&'a RawValue>],
}

impl<'de, S: AsRef<str>> DeserializeSeed<'de> for FieldsSeed<'_, '_, 'de, S> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, S: AsRef<str>> Visitor<'de> for FieldsSeed<'_, '_, 'de, S> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match self.names.iter().position(|n| n.as_ref() == key) {
                Some(i) => self.found[i] = Some(map.next_value::<&'de RawValue>()?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let mut v: Value = serde_json::json!({"a": {"b": [1, {"c": 2}]}});
        assert_eq!(get_path(&v, "a.b.1.c"), Some(&Value::from(2)));
        assert_eq!(get_path(&v, "a.x"), None);
        *get_path_mut(&mut v, "a.b.0").unwrap() = "x".into();
        assert_eq!(v["a"]["b"][0], "x");
    }

    #[test]
    fn push_json_value_writes_what_push_json_writes() {
        let doc: Value = serde_json::json!({"s": "a\"b\n\u{1}é", "n": [1, -2.5, null], "o": {}});
        let mut fast = crate::Outcomes::with_capacity(0);
        let mut serde = crate::Outcomes::with_capacity(0);
        fast.push_json_value(&doc);
        serde.push_json(&doc);
        assert_eq!(fast.finish(), serde.finish());
        assert_eq!(to_vec(&doc), serde_json::to_vec(&doc).unwrap());
        assert_eq!(crate::Outcome::json_value(&doc), crate::Outcome::json(&doc));
    }

    #[test]
    fn top_level_fields_borrows_raw_text() {
        let doc = br#"{"id": 42, "name": "a\"b", "nested": {"id": 1}, "user": "u1"}"#;
        let f = top_level_fields(doc, &["user", "id", "missing", "name"]).unwrap();
        assert_eq!(f[0].map(key_text).as_deref(), Some("u1"));
        assert_eq!(f[1].map(key_text).as_deref(), Some("42"));
        assert!(f[2].is_none());
        assert_eq!(f[3].map(key_text).as_deref(), Some("a\"b"));
        assert!(top_level_fields(b"[1]", &["a"]).is_err());
        assert!(top_level_fields(b"{\"a\":1} x", &["a"]).is_err());
    }
}
