//! `jq:` transforms: a jq program run natively on each JSON record, with jaq (jaq-core, jaq-std,
//! jaq-json), so small field edits need no plugin at all.
//!
//! Each output of the program is a record: none drops the input, several make several records. A
//! runtime error sends the record to the error policy with jq's message. The program sees the
//! record's envelope as `$meta` (`key`, `timestamp`, `headers`, `metadata`, `partition`,
//! `offset`), and with `output: envelope` each output is `{value, key?, timestamp?, headers?}`, so
//! a program can set a record's key, timestamp and headers.
//!
//! The program is trusted configuration, not sandboxed data: it cannot read files, the environment
//! (`env`/`$ENV` are not offered) or further input, and every record may yield at most
//! [`MAX_OUTPUTS`] outputs, but a program that loops without producing output is not interrupted
//! (run untrusted logic as a wasm plugin, whose calls have a deadline).

use std::borrow::Cow;

use bytes::Bytes;
use jaq_core::load::{Arena, File, Loader};
use jaq_core::{Compiler, Ctx, Vars, data, unwrap_valr};
use jaq_json::Val;
use sluice_connectors::Record;

use crate::spec::{JqOutput, JqSpec};
use crate::stage::{Outcome, Stage, StageError};

/// The most records one input record may become; more is an error for that record.
pub const MAX_OUTPUTS: usize = 10_000;

/// The variable holding the record's envelope.
const META: &str = "$meta";

/// Filters of jq's standard library that reach outside the record: the process environment,
/// which holds credentials. (`input`/`inputs` need an input stream, which is not given; `halt`
/// ends only the program, as an error of that record.)
const DENIED: &[&str] = &["env"];

type Filter = jaq_core::Filter<data::JustLut<Val>>;

/// A compile error: the byte offset in the program where it was found, and what is wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct JqError {
    pub offset: usize,
    pub message: String,
}

/// Compiles `program`, or says every error with its byte offset in the program.
pub fn compile(program: &str) -> Result<Filter, Vec<JqError>> {
    let defs = jaq_core::defs()
        .chain(jaq_std::defs())
        .chain(jaq_json::defs());
    let funs = jaq_core::funs()
        .chain(jaq_std::funs())
        .chain(jaq_json::funs())
        .filter(|(name, _, _)| !DENIED.contains(name));
    let loader = Loader::new(defs);
    let arena = Arena::default();
    let at = |part: &str| {
        // Errors point into the program text, or are empty at its end.
        let start = part.as_ptr() as usize;
        let base = program.as_ptr() as usize;
        if start >= base && start <= base + program.len() {
            start - base
        } else {
            program.len()
        }
    };
    let modules = loader
        .load(
            &arena,
            File {
                code: program,
                path: (),
            },
        )
        .map_err(|errs| {
            let mut out = Vec::new();
            for (_, e) in errs {
                match e {
                    jaq_core::load::Error::Io(es) => {
                        out.extend(es.into_iter().map(|(s, m)| JqError {
                            offset: at(s),
                            message: format!("cannot load `{s}`: {m}"),
                        }))
                    }
                    jaq_core::load::Error::Lex(es) => {
                        out.extend(es.into_iter().map(|(expect, found)| JqError {
                            offset: at(found),
                            message: format!("expected {}", expect.as_str()),
                        }))
                    }
                    jaq_core::load::Error::Parse(es) => {
                        out.extend(es.into_iter().map(|(expect, found)| JqError {
                            offset: at(found),
                            message: if found.is_empty() {
                                format!(
                                    "expected {}, found the end of the program",
                                    expect.as_str()
                                )
                            } else {
                                format!("expected {}, found `{found}`", expect.as_str())
                            },
                        }))
                    }
                }
            }
            out
        })?;
    Compiler::default()
        .with_funs(funs)
        .with_global_vars([META])
        .compile(modules)
        .map_err(|errs| {
            errs.into_iter()
                .flat_map(|(_, es)| es)
                .map(|(name, undefined)| JqError {
                    offset: at(name),
                    message: if DENIED.contains(&name) {
                        format!("`{name}` is not available in Sluice's jq")
                    } else {
                        format!("undefined {} `{name}`", undefined.as_str())
                    },
                })
                .collect()
        })
}

/// A `jq:` transform.
pub struct JqStage {
    name: String,
    filter: Filter,
    envelope: bool,
    /// Whether the program mentions `$meta` (else it is not built per record).
    uses_meta: bool,
}

impl JqStage {
    pub fn new(spec: &JqSpec) -> Result<Self, String> {
        let filter = compile(&spec.jq).map_err(|errs| {
            errs.into_iter()
                .map(|e| format!("jq: {} (at byte {})", e.message, e.offset))
                .collect::<Vec<_>>()
                .join("; ")
        })?;
        let short: String = spec.jq.chars().take(40).collect();
        Ok(Self {
            name: format!("transform jq `{short}`"),
            filter,
            envelope: spec.output == JqOutput::Envelope,
            uses_meta: spec.jq.contains(META),
        })
    }

    fn one(&self, record: &Record) -> Outcome {
        let input = match jaq_json::read::parse_single(&record.value) {
            Ok(v) => v,
            Err(e) => return Outcome::Error(format!("jq: the record is not JSON: {e}")),
        };
        let meta = if self.uses_meta {
            meta_of(record)
        } else {
            Val::Null
        };
        let ctx = Ctx::<data::JustLut<Val>>::new(&self.filter.lut, Vars::new([meta]));
        let mut out = Vec::new();
        for v in self.filter.id.run((ctx, input)).map(unwrap_valr) {
            let v = match v {
                Ok(v) => v,
                Err(e) => return Outcome::Error(format!("jq: {e}")),
            };
            if out.len() == MAX_OUTPUTS {
                return Outcome::Error(format!(
                    "jq: the program made more than {MAX_OUTPUTS} records of one record"
                ));
            }
            let made = if self.envelope {
                from_envelope(record, &v)
            } else {
                json_bytes(&v).map(|value| record.derive(value))
            };
            match made {
                Ok(r) => out.push(r),
                Err(e) => return Outcome::Error(format!("jq: {e}")),
            }
        }
        Outcome::Records(out)
    }
}

impl Stage for JqStage {
    fn name(&self) -> &str {
        &self.name
    }

    fn process(&mut self, batch: &[Record]) -> Result<Vec<Outcome>, StageError> {
        Ok(batch.iter().map(|r| self.one(r)).collect())
    }
}

fn text(s: impl Into<String>) -> Val {
    Val::from(s.into())
}

fn bytes_text(b: &[u8]) -> Val {
    text(String::from_utf8_lossy(b).into_owned())
}

/// `$meta`: the record's envelope as a JSON object.
fn meta_of(r: &Record) -> Val {
    let obj = |pairs: Vec<(Val, Val)>| Val::obj(pairs.into_iter().collect());
    obj(vec![
        (text("key"), r.key.as_deref().map_or(Val::Null, bytes_text)),
        (
            text("timestamp"),
            r.timestamp.map_or(Val::Null, |t| Val::from(t as isize)),
        ),
        (
            text("headers"),
            obj(r
                .headers
                .iter()
                .map(|(k, v)| (text(k.clone()), bytes_text(v)))
                .collect()),
        ),
        (
            text("metadata"),
            obj(r
                .meta
                .iter()
                .map(|(k, v)| (text(k.to_string()), text(v.clone())))
                .collect()),
        ),
        (text("partition"), text(r.partition.to_string())),
        (text("offset"), text(r.offset.to_string())),
    ])
}

/// The JSON text of a value (compact).
fn json_bytes(v: &Val) -> Result<Bytes, String> {
    if let Val::BStr(_) = v {
        return Err("a byte string is not JSON; convert it with `tostring` first".into());
    }
    Ok(Bytes::from(v.to_string()))
}

fn field<'a>(obj: &'a jaq_json::Map, name: &str) -> Option<&'a Val> {
    obj.get(&text(name))
}

/// A record from an `output: envelope` value `{value, key?, timestamp?, headers?}`; fields left
/// out keep the input's.
fn from_envelope(input: &Record, v: &Val) -> Result<Record, String> {
    let Val::Obj(obj) = v else {
        return Err(format!(
            "with `output: envelope` every output is an object with `value`, found {v}"
        ));
    };
    let known = ["value", "key", "timestamp", "headers"];
    if let Some((k, _)) = obj
        .iter()
        .find(|(k, _)| !known.iter().any(|n| **k == text(*n)))
    {
        return Err(format!(
            "unknown envelope field {k} (use value, key, timestamp, headers)"
        ));
    }
    let value = field(obj, "value").ok_or("the envelope has no `value`")?;
    let mut out = input.derive(json_bytes(value)?);
    match field(obj, "key") {
        None => {}
        Some(Val::Null) => out.key = None,
        Some(k) => out.key = Some(Bytes::from(string_of(k, "key")?.into_owned())),
    }
    match field(obj, "timestamp") {
        None => {}
        Some(Val::Null) => out.timestamp = None,
        Some(t) => {
            let ms = t
                .to_string()
                .parse::<f64>()
                .ok()
                .filter(|ms| ms.is_finite() && ms.fract() == 0.0 && ms.abs() < 9.0e15)
                .ok_or_else(|| {
                    format!("`timestamp` must be milliseconds since the epoch, found {t}")
                })?;
            out.timestamp = Some(ms as i64);
        }
    }
    match field(obj, "headers") {
        None => {}
        Some(Val::Obj(hs)) => {
            out.headers = hs
                .iter()
                .map(|(k, v)| {
                    let name = string_of(k, "header name")?.into_owned();
                    let value = string_of(v, "header value")?.into_owned();
                    Ok((name, Bytes::from(value)))
                })
                .collect::<Result<_, String>>()?;
        }
        Some(other) => return Err(format!("`headers` must be an object, found {other}")),
    }
    Ok(out)
}

/// A string value's text; numbers and booleans are written as JSON (a key may be a number).
fn string_of<'a>(v: &'a Val, what: &str) -> Result<Cow<'a, str>, String> {
    match v {
        Val::TStr(s) => Ok(String::from_utf8_lossy(s)),
        Val::Num(_) | Val::Bool(_) => Ok(Cow::Owned(v.to_string())),
        other => Err(format!("{what} must be a string, found {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_connectors::{Offset, PartitionId};

    fn stage(program: &str, envelope: bool) -> JqStage {
        JqStage::new(&JqSpec {
            jq: program.into(),
            output: if envelope {
                JqOutput::Envelope
            } else {
                JqOutput::Value
            },
        })
        .unwrap()
    }

    fn rec(value: &str) -> Record {
        let mut r = Record::new(
            PartitionId::from("shard-1"),
            Offset::from("42"),
            value.to_string(),
        );
        r.key = Some(Bytes::from("k1"));
        r.timestamp = Some(1_700_000_000_000);
        r.headers = vec![("h".into(), Bytes::from("v"))];
        r.meta = vec![("shard-id".into(), "shardId-0001".into())];
        r
    }

    fn values(o: &Outcome) -> Vec<String> {
        match o {
            Outcome::Records(rs) => rs
                .iter()
                .map(|r| String::from_utf8(r.value.to_vec()).unwrap())
                .collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn edits_fields_and_keeps_the_envelope() {
        let mut s = stage(r#".email = "***" | del(.tmp)"#, false);
        let out = s
            .process(&[rec(r#"{"id":1,"email":"a@b","tmp":0}"#)])
            .unwrap();
        assert_eq!(values(&out[0]), [r#"{"id":1,"email":"***"}"#]);
        let Outcome::Records(rs) = &out[0] else {
            unreachable!()
        };
        assert_eq!(rs[0].key.as_deref(), Some(&b"k1"[..]));
        assert_eq!(rs[0].offset, Offset::from("42"));
    }

    #[test]
    fn zero_outputs_drop_and_several_make_several() {
        let mut s = stage(r#"select(.keep) | .items[]"#, false);
        let out = s
            .process(&[
                rec(r#"{"keep":false,"items":[1]}"#),
                rec(r#"{"keep":true,"items":[1,{"a":2}]}"#),
            ])
            .unwrap();
        assert!(values(&out[0]).is_empty());
        assert_eq!(values(&out[1]), ["1", r#"{"a":2}"#]);
    }

    #[test]
    fn a_runtime_error_is_a_record_error_with_jqs_message() {
        let mut s = stage(".a + 1", false);
        let out = s
            .process(&[rec(r#"{"a":"x"}"#), rec(r#"{"a":1}"#)])
            .unwrap();
        match &out[0] {
            Outcome::Error(m) => assert!(m.starts_with("jq: ") && m.contains("cannot"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(values(&out[1]), ["2"]);
        let out = s.process(&[rec("not json")]).unwrap();
        assert!(matches!(&out[0], Outcome::Error(m) if m.contains("not JSON")));
    }

    #[test]
    fn meta_shows_the_envelope() {
        let mut s = stage(
            r#"{k: $meta.key, t: $meta.timestamp, h: $meta.headers.h, shard: $meta.metadata["shard-id"], p: $meta.partition, o: $meta.offset}"#,
            false,
        );
        let out = s.process(&[rec("{}")]).unwrap();
        assert_eq!(
            values(&out[0]),
            [
                r#"{"k":"k1","t":1700000000000,"h":"v","shard":"shardId-0001","p":"shard-1","o":"42"}"#
            ]
        );
    }

    #[test]
    fn an_envelope_sets_key_timestamp_and_headers() {
        let mut s = stage(
            r#"{value: ., key: .user, timestamp: 5, headers: {src: "jq"}}, {value: 1}, {value: 2, key: null}"#,
            true,
        );
        let out = s.process(&[rec(r#"{"user":"u7"}"#)]).unwrap();
        let Outcome::Records(rs) = &out[0] else {
            panic!("{:?}", out[0])
        };
        assert_eq!(rs[0].key.as_deref(), Some(&b"u7"[..]));
        assert_eq!(rs[0].timestamp, Some(5));
        assert_eq!(rs[0].headers, vec![("src".to_string(), Bytes::from("jq"))]);
        assert_eq!(rs[1].key.as_deref(), Some(&b"k1"[..]), "left out: kept");
        assert_eq!(rs[1].timestamp, Some(1_700_000_000_000));
        assert_eq!(rs[2].key, None, "null: removed");
        let mut not_an_envelope = stage(".", true);
        let out = not_an_envelope.process(&[rec("1")]).unwrap();
        assert!(matches!(&out[0], Outcome::Error(m) if m.contains("object with `value`")));
        let mut bad = stage(r#"{value: 1, kee: 2}"#, true);
        let out = bad.process(&[rec("1")]).unwrap();
        assert!(matches!(&out[0], Outcome::Error(m) if m.contains("unknown envelope field")));
    }

    #[test]
    fn endless_output_is_cut_off() {
        let mut s = stage("repeat(1)", false);
        let out = s.process(&[rec("0")]).unwrap();
        assert!(matches!(&out[0], Outcome::Error(m) if m.contains("more than")));
    }

    fn errors(program: &str) -> Vec<JqError> {
        compile(program).err().expect("a compile error")
    }

    #[test]
    fn compile_errors_say_where() {
        let errs = errors(".a | | .b");
        assert_eq!(errs[0].offset, 5, "{errs:?}");
        let errs = errors(".a | foo(1)");
        assert!(
            errs[0].message.contains("undefined") && errs[0].message.contains("foo"),
            "{errs:?}"
        );
        assert_eq!(errs[0].offset, 5);
        let errs = errors("env.HOME");
        assert!(errs[0].message.contains("not available"), "{errs:?}");
        assert!(compile("$ENV").is_err());
        assert!(compile("input").is_err());
        assert!(compile(r#"{a: $meta.key} | .a // "none""#).is_ok());
    }
}
