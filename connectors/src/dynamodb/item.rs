//! DynamoDB items and JSON: plain JSON (numbers kept as their exact text) and DynamoDB-JSON
//! (`{"id": {"S": "a"}}`), both ways.
//!
//! `serde_json` without `arbitrary_precision` turns `12345678901234567890123` into a float, so
//! records are parsed by a small parser of its own ([`parse`]) that keeps number text as written,
//! and items are written back by [`write_plain`] / [`write_ddb`] without a detour through
//! `serde_json::Value`.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_smithy_types::Blob;

mod json;

pub use json::{Json, parse};

/// How plain JSON becomes attribute values.
#[derive(Debug, Clone, Default)]
pub struct PlainRules {
    /// Top-level fields holding base64 text to store as binary (`B`).
    pub binary_fields: Vec<String>,
    /// Top-level fields whose arrays are stored as sets (`SS` of strings, `NS` of numbers).
    pub sets: Vec<String>,
}

/// A plain JSON value as an attribute value (string → S, number → N with its exact text,
/// bool → BOOL, null → NULL, array → L, object → M).
pub fn plain_to_av(v: Json) -> AttributeValue {
    match v {
        Json::Null => AttributeValue::Null(true),
        Json::Bool(b) => AttributeValue::Bool(b),
        Json::Num(n) => AttributeValue::N(n),
        Json::Str(s) => AttributeValue::S(s),
        Json::Arr(a) => AttributeValue::L(a.into_iter().map(plain_to_av).collect()),
        Json::Obj(m) => {
            AttributeValue::M(m.into_iter().map(|(k, v)| (k, plain_to_av(v))).collect())
        }
    }
}

/// A plain JSON object as an item, applying `rules` to its top-level fields.
pub fn plain_item(v: Json, rules: &PlainRules) -> Result<HashMap<String, AttributeValue>, String> {
    let Json::Obj(members) = v else {
        return Err("the record is not a JSON object".into());
    };
    let mut item = HashMap::with_capacity(members.len());
    for (k, v) in members {
        let av = if rules.binary_fields.iter().any(|f| f == &k) {
            match v {
                Json::Str(s) => AttributeValue::B(Blob::new(
                    aws_smithy_types::base64::decode(&s)
                        .map_err(|e| format!("field `{k}` is not base64 ({e})"))?,
                )),
                Json::Null => AttributeValue::Null(true),
                _ => return Err(format!("field `{k}` must be a base64 string")),
            }
        } else if rules.sets.iter().any(|f| f == &k) {
            match v {
                Json::Arr(a) if a.is_empty() => continue, // DynamoDB has no empty sets.
                Json::Arr(a) if a.iter().all(|x| matches!(x, Json::Str(_))) => {
                    AttributeValue::Ss(dedup(a.into_iter().filter_map(|x| match x {
                        Json::Str(s) => Some(s),
                        _ => None,
                    })))
                }
                Json::Arr(a) if a.iter().all(|x| matches!(x, Json::Num(_))) => {
                    AttributeValue::Ns(dedup(a.into_iter().filter_map(|x| match x {
                        Json::Num(s) => Some(s),
                        _ => None,
                    })))
                }
                Json::Null => AttributeValue::Null(true),
                _ => {
                    return Err(format!(
                        "field `{k}` is a set: it must be an array of only strings or only numbers"
                    ));
                }
            }
        } else {
            plain_to_av(v)
        };
        item.insert(k, av);
    }
    Ok(item)
}

fn dedup(it: impl Iterator<Item = String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    it.filter(|s| seen.insert(s.clone())).collect()
}

/// A DynamoDB-JSON object (`{"id": {"S": "a"}}`) as an item.
pub fn ddb_item(v: Json) -> Result<HashMap<String, AttributeValue>, String> {
    let Json::Obj(members) = v else {
        return Err("the record is not a JSON object".into());
    };
    members
        .into_iter()
        .map(|(k, v)| {
            ddb_to_av(v)
                .map(|av| (k.clone(), av))
                .map_err(|e| format!("attribute `{k}`: {e}"))
        })
        .collect()
}

/// One DynamoDB-JSON attribute value.
pub fn ddb_to_av(v: Json) -> Result<AttributeValue, String> {
    let Json::Obj(mut m) = v else {
        return Err("expected an object like {\"S\": \"text\"}".into());
    };
    if m.len() != 1 {
        return Err("expected exactly one type key (S, N, B, BOOL, NULL, L, M, SS, NS, BS)".into());
    }
    // Just checked: exactly one member.
    let (t, v) = m.remove(0);
    let strings = |v: Json| -> Result<Vec<String>, String> {
        match v {
            Json::Arr(a) => a
                .into_iter()
                .map(|x| match x {
                    Json::Str(s) => Ok(s),
                    _ => Err(format!("{t} must hold strings")),
                })
                .collect(),
            _ => Err(format!("{t} must be an array")),
        }
    };
    let blob = |s: &str| {
        aws_smithy_types::base64::decode(s)
            .map(Blob::new)
            .map_err(|e| format!("not base64 ({e})"))
    };
    Ok(match (t.as_str(), v) {
        ("S", Json::Str(s)) => AttributeValue::S(s),
        ("N", Json::Str(s) | Json::Num(s)) => AttributeValue::N(s),
        ("B", Json::Str(s)) => AttributeValue::B(blob(&s)?),
        ("BOOL", Json::Bool(b)) => AttributeValue::Bool(b),
        ("NULL", Json::Bool(b)) => AttributeValue::Null(b),
        ("L", Json::Arr(a)) => {
            AttributeValue::L(a.into_iter().map(ddb_to_av).collect::<Result<_, _>>()?)
        }
        ("M", Json::Obj(m)) => AttributeValue::M(
            m.into_iter()
                .map(|(k, v)| ddb_to_av(v).map(|av| (k, av)))
                .collect::<Result<_, _>>()?,
        ),
        ("SS", v) => AttributeValue::Ss(strings(v)?),
        ("NS", Json::Arr(a)) => AttributeValue::Ns(
            a.into_iter()
                .map(|x| match x {
                    Json::Str(s) | Json::Num(s) => Ok(s),
                    _ => Err("NS must hold numbers".to_string()),
                })
                .collect::<Result<_, _>>()?,
        ),
        ("BS", v) => AttributeValue::Bs(
            strings(v)?
                .iter()
                .map(|s| blob(s))
                .collect::<Result<_, _>>()?,
        ),
        (t, _) => return Err(format!("unknown type `{t}` or a value of the wrong kind")),
    })
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    // Serialising a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn write_num(out: &mut Vec<u8>, n: &str) {
    // DynamoDB numbers are valid JSON numbers except for a leading `+` or `.` (never returned).
    out.extend_from_slice(n.as_bytes());
}

/// Writes an attribute value as plain JSON: numbers as their exact text, binary as base64, sets
/// as arrays.
pub fn write_plain(av: &AttributeValue, out: &mut Vec<u8>) {
    match av {
        AttributeValue::S(s) => write_str(out, s),
        AttributeValue::N(n) => write_num(out, n),
        AttributeValue::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        AttributeValue::Null(_) => out.extend_from_slice(b"null"),
        AttributeValue::B(b) => write_str(out, &aws_smithy_types::base64::encode(b.as_ref())),
        AttributeValue::L(l) => write_list(out, l, write_plain),
        AttributeValue::M(m) => write_plain_map(m, out),
        AttributeValue::Ss(v) => write_list(out, v, |s, o| write_str(o, s)),
        AttributeValue::Ns(v) => write_list(out, v, |s, o| write_num(o, s)),
        AttributeValue::Bs(v) => write_list(out, v, |b, o| {
            write_str(o, &aws_smithy_types::base64::encode(b.as_ref()))
        }),
        _ => out.extend_from_slice(b"null"),
    }
}

/// Writes an item as a plain JSON object, attributes in name order (stable output).
pub fn write_plain_map(m: &HashMap<String, AttributeValue>, out: &mut Vec<u8>) {
    write_map(m, out, write_plain);
}

/// Writes an item as a DynamoDB-JSON object.
pub fn write_ddb_map(m: &HashMap<String, AttributeValue>, out: &mut Vec<u8>) {
    write_map(m, out, write_ddb);
}

fn write_map(
    m: &HashMap<String, AttributeValue>,
    out: &mut Vec<u8>,
    each: fn(&AttributeValue, &mut Vec<u8>),
) {
    let mut keys: Vec<&String> = m.keys().collect();
    keys.sort();
    write_joined(out, *b"{}", keys, |k, out| {
        write_str(out, k);
        out.push(b':');
        each(&m[k], out);
    });
}

fn write_list<T>(out: &mut Vec<u8>, v: &[T], each: impl Fn(&T, &mut Vec<u8>)) {
    write_joined(out, *b"[]", v, each);
}

/// Writes `items` between the `brackets`, separated by commas.
fn write_joined<T>(
    out: &mut Vec<u8>,
    [open, close]: [u8; 2],
    items: impl IntoIterator<Item = T>,
    each: impl Fn(T, &mut Vec<u8>),
) {
    out.push(open);
    for (i, x) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        each(x, out);
    }
    out.push(close);
}

/// Writes an attribute value as DynamoDB-JSON (`{"N":"1"}`).
pub fn write_ddb(av: &AttributeValue, out: &mut Vec<u8>) {
    let tagged = |out: &mut Vec<u8>, t: &str, f: &dyn Fn(&mut Vec<u8>)| {
        out.extend_from_slice(b"{\"");
        out.extend_from_slice(t.as_bytes());
        out.extend_from_slice(b"\":");
        f(out);
        out.push(b'}');
    };
    let b64 = |b: &Blob| aws_smithy_types::base64::encode(b.as_ref());
    match av {
        AttributeValue::S(s) => tagged(out, "S", &|o| write_str(o, s)),
        AttributeValue::N(n) => tagged(out, "N", &|o| write_str(o, n)),
        AttributeValue::Bool(b) => tagged(out, "BOOL", &|o| {
            o.extend_from_slice(if *b { b"true" } else { b"false" })
        }),
        AttributeValue::Null(_) => tagged(out, "NULL", &|o| o.extend_from_slice(b"true")),
        AttributeValue::B(b) => tagged(out, "B", &|o| write_str(o, &b64(b))),
        AttributeValue::L(l) => tagged(out, "L", &|o| write_list(o, l, write_ddb)),
        AttributeValue::M(m) => tagged(out, "M", &|o| write_ddb_map(m, o)),
        AttributeValue::Ss(v) => tagged(out, "SS", &|o| write_list(o, v, |s, o| write_str(o, s))),
        AttributeValue::Ns(v) => tagged(out, "NS", &|o| write_list(o, v, |s, o| write_str(o, s))),
        AttributeValue::Bs(v) => tagged(out, "BS", &|o| {
            write_list(o, v, |b, o| write_str(o, &b64(b)))
        }),
        _ => tagged(out, "NULL", &|o| o.extend_from_slice(b"true")),
    }
}

/// A DynamoDB Streams attribute value as a DynamoDB one (the two SDKs have separate types).
pub fn from_stream(av: aws_sdk_dynamodbstreams::types::AttributeValue) -> AttributeValue {
    use aws_sdk_dynamodbstreams::types::AttributeValue as S;
    match av {
        S::S(s) => AttributeValue::S(s),
        S::N(n) => AttributeValue::N(n),
        S::B(b) => AttributeValue::B(b),
        S::Bool(b) => AttributeValue::Bool(b),
        S::Null(b) => AttributeValue::Null(b),
        S::L(l) => AttributeValue::L(l.into_iter().map(from_stream).collect()),
        S::M(m) => AttributeValue::M(from_stream_map(m)),
        S::Ss(v) => AttributeValue::Ss(v),
        S::Ns(v) => AttributeValue::Ns(v),
        S::Bs(v) => AttributeValue::Bs(v),
        _ => AttributeValue::Null(true),
    }
}

/// A DynamoDB Streams image as an item.
pub fn from_stream_map(
    m: HashMap<String, aws_sdk_dynamodbstreams::types::AttributeValue>,
) -> HashMap<String, AttributeValue> {
    m.into_iter().map(|(k, v)| (k, from_stream(v))).collect()
}

/// Approximate size of an item as DynamoDB counts it (names plus values), for the 400 KB limit.
pub fn item_size(item: &HashMap<String, AttributeValue>) -> usize {
    item.iter().map(|(k, v)| k.len() + av_size(v)).sum()
}

fn av_size(v: &AttributeValue) -> usize {
    match v {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => n.len().div_ceil(2) + 1,
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::L(l) => 3 + l.iter().map(|x| 1 + av_size(x)).sum::<usize>(),
        AttributeValue::M(m) => {
            3 + m
                .iter()
                .map(|(k, x)| 1 + k.len() + av_size(x))
                .sum::<usize>()
        }
        AttributeValue::Ss(v) | AttributeValue::Ns(v) => v.iter().map(String::len).sum(),
        AttributeValue::Bs(v) => v.iter().map(|b| b.as_ref().len()).sum(),
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_dynamodb::types::AttributeValue;

    use super::*;

    fn s(v: &str) -> AttributeValue {
        AttributeValue::S(v.into())
    }
    fn n(v: impl ToString) -> AttributeValue {
        AttributeValue::N(v.to_string())
    }

    #[test]
    fn plain_json_maps_to_attribute_values_with_exact_numbers() {
        let j = parse(br#"{"id":"a","big":123456789012345678901234567890,"f":1.50,"e":-2E+3,"t":true,"z":null,"l":[1,"x"],"m":{"k":"\u00e9\ud83d\ude00"},"bin":"aGk=","tags":["a","b","a"],"nums":[1,2]}"#).expect("parse");
        let rules = PlainRules {
            binary_fields: vec!["bin".into()],
            sets: vec!["tags".into(), "nums".into()],
        };
        let it = plain_item(j, &rules).expect("item");
        assert_eq!(it["big"], n("123456789012345678901234567890"));
        assert_eq!(it["f"], n("1.50"));
        assert_eq!(it["e"], n("-2E+3"));
        assert_eq!(it["t"], AttributeValue::Bool(true));
        assert_eq!(it["z"], AttributeValue::Null(true));
        assert_eq!(it["l"], AttributeValue::L(vec![n(1), s("x")]));
        assert_eq!(
            it["m"],
            AttributeValue::M([("k".to_string(), s("é😀"))].into())
        );
        assert_eq!(
            it["bin"],
            AttributeValue::B(aws_smithy_types::Blob::new(b"hi".to_vec()))
        );
        assert_eq!(it["tags"], AttributeValue::Ss(vec!["a".into(), "b".into()]));
        assert_eq!(it["nums"], AttributeValue::Ns(vec!["1".into(), "2".into()]));
        // And back: plain JSON keeps the number text; DynamoDB-JSON round-trips exactly.
        let mut out = Vec::new();
        write_plain_map(&it, &mut out);
        let text = String::from_utf8(out).expect("utf8");
        assert!(
            text.contains(r#""big":123456789012345678901234567890"#),
            "{text}"
        );
        assert!(text.contains(r#""bin":"aGk=""#), "{text}");
        assert!(text.contains(r#""l":[1,"x"],"m":{"k":"#), "{text}");
        assert!(
            text.starts_with(r#"{"big":"#) && text.ends_with("}"),
            "{text}"
        );
        let mut ddb = Vec::new();
        write_ddb_map(&it, &mut ddb);
        let back = ddb_item(parse(&ddb).expect("parse")).expect("ddb item");
        assert_eq!(back, it);
    }

    #[test]
    fn bad_json_and_bad_items_are_explained() {
        assert!(parse(b"{\"a\":").unwrap_err().contains("byte 5"));
        assert!(parse(b"[1] x").unwrap_err().contains("trailing"));
        let rules = PlainRules {
            binary_fields: vec!["b".into()],
            sets: vec!["s".into()],
        };
        let e = plain_item(parse(br#"{"b":"%%%"}"#).expect("json"), &rules).unwrap_err();
        assert!(e.contains("`b` is not base64"), "{e}");
        let e = plain_item(parse(br#"{"s":[1,"x"]}"#).expect("json"), &rules).unwrap_err();
        assert!(e.contains("only strings or only numbers"), "{e}");
        let e = ddb_item(parse(br#"{"a":{"Q":"1"}}"#).expect("json")).unwrap_err();
        assert!(e.contains("attribute `a`"), "{e}");
        assert!(matches!(parse(b"[]").expect("json"), Json::Arr(_)));
        assert!(matches!(parse(b"{ }").expect("json"), Json::Obj(m) if m.is_empty()));
        for (bad, says) in [
            (&b"[1 2]"[..], "byte 3: expected `,` or `]`"),
            (b"{\"a\":1 \"b\":2}", "byte 7: expected `,` or `}`"),
            (b"{1:2}", "expected a member name"),
            (b"{\"a\" 1}", "expected `:`"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(says), "{e}");
        }
    }
}
