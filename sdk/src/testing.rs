//! Run a plugin's trait impl natively, through the same batch encoding the host uses, so a plain
//! `cargo test` exercises what the wasm build will do.
//!
//! A single output record that only sets a value comes back as [`Outcome::Value`], a dropped record
//! as `Outcome::Records(vec![])`.

use crate::codec::{self, Batch, Outcomes, Reader};
use crate::{__rt, Format, Outcome, Output, Partitioner, Record, Route, Transform};

fn build<C: serde::de::DeserializeOwned>(config: serde_json::Value) -> Result<C, String> {
    __rt::parse_config(&config.to_string())
}

fn encode(records: &[Record<'_>]) -> Vec<u8> {
    let mut buf = Vec::new();
    buf.extend_from_slice(&(records.len() as u32).to_le_bytes());
    for r in records {
        codec::put_record(&mut buf, r);
    }
    buf
}

/// Runs `records` through `plugin` the way the host calls one of its batch functions.
fn run_outcomes<T>(
    plugin: Result<T, String>,
    records: &[Record<'_>],
    call: impl FnOnce(&mut T, Batch<'_>, &mut Outcomes),
) -> Result<Vec<Outcome>, String> {
    let mut t = plugin?;
    let out = __rt::run_records(&encode(records), |b, o| call(&mut t, b, o));
    decode_outcomes(&out)
}

/// What a runner gives: the outcomes, or why the plugin could not be built.
type Run = Result<Vec<Outcome>, String>;

/// Builds a transform from `config` and runs it over `records`.
pub fn transform<T: Transform>(config: serde_json::Value, records: &[Record<'_>]) -> Run {
    run_outcomes(build(config).and_then(T::new), records, T::process_batch)
}

/// Builds a format from `config` and decodes `records` with it.
pub fn decode<T: Format>(config: serde_json::Value, records: &[Record<'_>]) -> Run {
    run_outcomes(build(config).and_then(T::new), records, T::decode_batch)
}

/// Builds a format from `config` and encodes `records` (JSON values) with it.
pub fn encode_records<T: Format>(config: serde_json::Value, records: &[Record<'_>]) -> Run {
    run_outcomes(build(config).and_then(T::new), records, T::encode_batch)
}

/// Builds a partitioner from `config` and routes `records`.
pub fn partition<T: Partitioner>(
    config: serde_json::Value,
    records: &[Record<'_>],
    partition_count: Option<u32>,
) -> Result<Vec<Result<Route, String>>, String> {
    let mut t = T::new(build(config)?)?;
    let out = __rt::run_routes(&encode(records), |b, o| {
        t.partition_batch(b, partition_count, o)
    });
    decode_routes(&out)
}

fn utf8(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Decodes a record output buffer (the `process`/`decode`/`encode` result).
pub fn decode_outcomes(buf: &[u8]) -> Result<Vec<Outcome>, String> {
    let mut r = Reader::new(buf);
    let n = r.u32();
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        out.push(match r.u8() {
            codec::OUTCOME_KEEP => Outcome::Keep,
            codec::OUTCOME_RECORDS => {
                let m = r.u32();
                let mut outs = Vec::with_capacity(m as usize);
                for _ in 0..m {
                    let flags = r.u8();
                    let mut o = Output::default();
                    if flags & codec::HAS_KEY != 0 {
                        o.key = Some((r.u8() == 1).then(|| r.bytes().to_vec()));
                    }
                    if flags & codec::HAS_TIMESTAMP != 0 {
                        o.timestamp = Some((r.u8() == 1).then(|| r.i64()));
                    }
                    if flags & codec::HAS_HEADERS != 0 {
                        let h = r.u32();
                        let mut headers = Vec::new();
                        for _ in 0..h {
                            let name = utf8(r.bytes());
                            headers.push((name, r.bytes().to_vec()));
                        }
                        o.headers = Some(headers);
                    }
                    o.value = r.bytes().to_vec();
                    outs.push(o);
                }
                match outs.as_slice() {
                    [o] if o.key.is_none() && o.timestamp.is_none() && o.headers.is_none() => {
                        Outcome::Value(o.value.clone())
                    }
                    _ => Outcome::Records(outs),
                }
            }
            codec::OUTCOME_ERROR => Outcome::Error(utf8(r.bytes())),
            t => return Err(format!("unknown outcome tag {t}")),
        });
    }
    if !r.at_end() {
        return Err("trailing bytes after the outcomes".into());
    }
    Ok(out)
}

/// Decodes a route output buffer (the `partition` result).
pub fn decode_routes(buf: &[u8]) -> Result<Vec<Result<Route, String>>, String> {
    let mut r = Reader::new(buf);
    let n = r.u32();
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        out.push(match r.u8() {
            codec::ROUTE_OK => {
                let flags = r.u8();
                let key = (flags & codec::ROUTE_KEY != 0).then(|| utf8(r.bytes()));
                let index = (flags & codec::ROUTE_INDEX != 0).then(|| r.u32());
                let explicit_hash_key =
                    (flags & codec::ROUTE_HASH_KEY != 0).then(|| utf8(r.bytes()));
                Ok(Route {
                    key,
                    index,
                    explicit_hash_key,
                })
            }
            codec::ROUTE_ERROR => Err(utf8(r.bytes())),
            t => return Err(format!("unknown route tag {t}")),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NoConfig, Outcomes};

    struct Echo;

    impl Transform for Echo {
        type Config = NoConfig;
        fn new(_: NoConfig) -> Result<Self, String> {
            Ok(Echo)
        }
        fn process(&mut self, r: &Record<'_>) -> Outcome {
            match r.value {
                b"keep" => Outcome::Keep,
                b"drop" => Outcome::drop_record(),
                b"bad" => Outcome::error("bad record"),
                b"two" => Outcome::Records(vec![
                    Output::new("a").with_key(Some(b"k".to_vec())),
                    Output::new("b")
                        .with_timestamp(None)
                        .with_headers(vec![("h".into(), b"v".to_vec())]),
                ]),
                v => Outcome::Value(
                    format!(
                        "{}|{}",
                        String::from_utf8_lossy(v),
                        r.meta("m").unwrap_or("-")
                    )
                    .into_bytes(),
                ),
            }
        }
    }

    /// A value serde_json cannot write leaves no partial record behind: the outcome is an
    /// error, and the next outcome is read whole.
    #[test]
    fn a_failed_json_write_pushes_an_error_and_nothing_else() {
        let mut out = Outcomes::with_capacity(0);
        out.push_json(&std::collections::BTreeMap::from([((1, 2), 3)]));
        out.push_keep();
        assert_eq!(out.len(), 2);
        assert_eq!(
            decode_outcomes(&out.finish()).unwrap(),
            vec![
                Outcome::Error("cannot serialize output as JSON: key must be a string".into()),
                Outcome::Keep,
            ]
        );
    }

    #[test]
    fn outcomes_round_trip() {
        let mut with_meta = Record::new(b"x");
        with_meta.meta = vec![("m", "meta")];
        with_meta.headers = vec![("h", b"1")];
        with_meta.key = Some(b"key");
        with_meta.timestamp = Some(-5);
        let out = transform::<Echo>(
            serde_json::json!({}),
            &[
                Record::new(b"keep"),
                Record::new(b"drop"),
                Record::new(b"bad"),
                Record::new(b"two"),
                with_meta,
            ],
        )
        .unwrap();
        assert_eq!(
            out,
            vec![
                Outcome::Keep,
                Outcome::Records(vec![]),
                Outcome::Error("bad record".into()),
                Outcome::Records(vec![
                    Output::new("a").with_key(Some(b"k".to_vec())),
                    Output::new("b")
                        .with_timestamp(None)
                        .with_headers(vec![("h".into(), b"v".to_vec())]),
                ]),
                Outcome::Value(b"x|meta".to_vec()),
            ]
        );
    }

    #[test]
    fn no_config_takes_an_empty_config_and_refuses_any_key() {
        assert_eq!(transform::<Echo>(serde_json::json!({}), &[]), Ok(vec![]));
        let err = transform::<Echo>(serde_json::json!({"x": 1}), &[]).unwrap_err();
        assert!(err.contains("unknown field `x`"), "{err}");
        let schema: serde_json::Value =
            serde_json::from_str(&__rt::config_schema::<NoConfig>()).unwrap();
        assert_eq!(schema["type"], "object");
        assert_eq!(schema["additionalProperties"], false);
    }

    #[test]
    fn push_json_writes_in_place() {
        let mut out = Outcomes::with_capacity(0);
        out.push_json(&serde_json::json!({"a": 1}));
        out.push_keep();
        assert_eq!(out.len(), 2);
        let got = decode_outcomes(&out.finish()).unwrap();
        assert_eq!(
            got,
            vec![Outcome::Value(br#"{"a":1}"#.to_vec()), Outcome::Keep]
        );
    }

    struct Fixed;
    impl Partitioner for Fixed {
        type Config = NoConfig;
        fn new(_: NoConfig) -> Result<Self, String> {
            Ok(Fixed)
        }
        fn partition(&mut self, r: &Record<'_>, n: Option<u32>) -> Result<Route, String> {
            if r.value.is_empty() {
                return Err("empty".into());
            }
            Ok(Route {
                key: Some("k".into()),
                index: n.map(|n| n - 1),
                explicit_hash_key: Some("42".into()),
            })
        }
    }

    #[test]
    fn routes_round_trip() {
        let out = partition::<Fixed>(
            serde_json::json!({}),
            &[Record::new(b"x"), Record::new(b"")],
            Some(4),
        )
        .unwrap();
        assert_eq!(
            out,
            vec![
                Ok(Route {
                    key: Some("k".into()),
                    index: Some(3),
                    explicit_hash_key: Some("42".into())
                }),
                Err("empty".into())
            ]
        );
    }

    #[test]
    fn bad_config_is_reported() {
        let err = transform::<Echo>(serde_json::json!([1]), &[]).unwrap_err();
        assert!(err.starts_with("invalid config"), "{err}");
    }
}
