//! Built-in formats: `json`, `csv` and `raw`, as decode and encode stages.

use bytes::Bytes;
use serde_json::{Map, Value};
use sluice_connectors::Record;

use crate::spec::{BuiltinFormat, CsvOptions};
use crate::stage::{Outcome, Stage, StageError};

/// A built-in format in one direction.
pub fn stage(format: BuiltinFormat, decode: bool, csv: Option<&CsvOptions>) -> Box<dyn Stage> {
    let dir = if decode { "decode" } else { "encode" };
    match (format, csv) {
        (BuiltinFormat::Json, _) => each(format!("{dir} json"), json),
        (BuiltinFormat::Raw, _) => each(format!("{dir} raw"), |_| Outcome::Keep),
        (BuiltinFormat::Csv, Some(opts)) if decode => {
            let csv = Csv::new(opts);
            each("decode csv".into(), move |r| csv.decode_record(r))
        }
        (BuiltinFormat::Csv, Some(opts)) => {
            let csv = Csv::new(opts);
            each("encode csv".into(), move |r| match csv.encode(&r.value) {
                Ok(b) => Outcome::Records(vec![r.derive(b)]),
                Err(e) => Outcome::Error(e),
            })
        }
        // Validation requires `csv` options for the csv format; without them every record fails.
        (BuiltinFormat::Csv, None) => each(format!("{dir} csv"), |_| {
            Outcome::Error("the csv format needs `format.csv.columns`".into())
        }),
    }
}

/// A built-in format stage: each record's outcome on its own.
struct Each<F> {
    name: String,
    outcome: F,
}

fn each(name: String, outcome: impl FnMut(&Record) -> Outcome + Send + 'static) -> Box<dyn Stage> {
    Box::new(Each { name, outcome })
}

impl<F: FnMut(&Record) -> Outcome + Send> Stage for Each<F> {
    fn name(&self) -> &str {
        &self.name
    }

    fn process(&mut self, batch: &[Record]) -> Result<Vec<Outcome>, StageError> {
        Ok(batch.iter().map(&mut self.outcome).collect())
    }
}

/// Valid JSON passes; one record per line downstream, so a value spanning lines is re-rendered.
fn json(r: &Record) -> Outcome {
    match serde_json::from_slice::<serde::de::IgnoredAny>(&r.value) {
        Ok(_) if r.value.contains(&b'\n') => match serde_json::from_slice::<Value>(&r.value) {
            Ok(v) => Outcome::Records(vec![r.derive(Bytes::from(v.to_string()))]),
            Err(e) => Outcome::Error(format!("invalid JSON: {e}")),
        },
        Ok(_) => Outcome::Keep,
        Err(e) => Outcome::Error(format!("invalid JSON: {e}")),
    }
}

/// The csv format: a delimited line ↔ a JSON object keyed by the columns (decoded values stay
/// strings).
struct Csv {
    columns: Vec<String>,
    delimiter: u8,
    header: bool,
}

impl Csv {
    fn new(o: &CsvOptions) -> Self {
        Self {
            columns: o.columns.clone(),
            delimiter: o.delimiter.as_bytes().first().copied().unwrap_or(b','),
            header: o.header,
        }
    }

    fn decode(&self, line: &[u8]) -> Result<Value, String> {
        let mut rdr = csv::ReaderBuilder::new()
            .has_headers(false)
            .delimiter(self.delimiter)
            .from_reader(line);
        let mut rec = csv::ByteRecord::new();
        match rdr.read_byte_record(&mut rec) {
            Ok(true) => {}
            Ok(false) => return Err("empty line".into()),
            Err(e) => return Err(format!("invalid CSV: {e}")),
        }
        if rec.len() != self.columns.len() {
            return Err(format!(
                "expected {} fields ({}), found {}",
                self.columns.len(),
                self.columns.join(", "),
                rec.len()
            ));
        }
        let mut obj = Map::with_capacity(self.columns.len());
        for (field, col) in rec.iter().zip(&self.columns) {
            let s =
                std::str::from_utf8(field).map_err(|_| format!("field `{col}` is not UTF-8"))?;
            obj.insert(col.clone(), Value::String(s.to_string()));
        }
        Ok(Value::Object(obj))
    }

    fn decode_record(&self, r: &Record) -> Outcome {
        // Line-based sources (file, stdin; validation allows no other with `header`) number
        // lines from 1: the header is line 1, whatever it says.
        if self.header && r.offset.as_str() == "1" {
            return Outcome::Records(Vec::new());
        }
        match self.decode(&r.value) {
            Ok(v) => Outcome::Records(vec![r.derive(Bytes::from(v.to_string()))]),
            Err(e) => Outcome::Error(e),
        }
    }

    /// A JSON object → a delimited line of the columns' values.
    fn encode(&self, value: &[u8]) -> Result<Bytes, String> {
        let v: Value = serde_json::from_slice(value).map_err(|e| format!("invalid JSON: {e}"))?;
        let obj = v
            .as_object()
            .ok_or_else(|| "the csv format encodes JSON objects only".to_string())?;
        let mut w = csv::WriterBuilder::new()
            .delimiter(self.delimiter)
            .terminator(csv::Terminator::Any(b'\n'))
            .from_writer(Vec::new());
        let fields = self.columns.iter().map(|c| match obj.get(c) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        });
        w.write_record(fields)
            .map_err(|e| format!("cannot write CSV: {e}"))?;
        let mut out = w
            .into_inner()
            .map_err(|e| format!("cannot write CSV: {e}"))?;
        if out.last() == Some(&b'\n') {
            out.pop();
        }
        Ok(Bytes::from(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(v: &str) -> Record {
        Record::new("p".into(), 2.into(), Bytes::from(v.to_string()))
    }

    fn line(n: u64, v: &str) -> Record {
        Record::new("p".into(), n.into(), Bytes::from(v.to_string()))
    }

    fn csv_opts(header: bool) -> CsvOptions {
        CsvOptions {
            columns: vec!["id".into(), "name".into()],
            delimiter: ",".into(),
            header,
        }
    }

    #[test]
    fn json_keeps_valid_and_flags_invalid() {
        let out = stage(BuiltinFormat::Json, true, None)
            .process(&[rec(r#"{"a":1}"#), rec("{nope"), rec("{\n\"a\": 2\n}")])
            .expect("process");
        assert_eq!(out[0], Outcome::Keep);
        assert!(matches!(&out[1], Outcome::Error(m) if m.starts_with("invalid JSON")));
        match &out[2] {
            Outcome::Records(r) => assert_eq!(&r[0].value[..], br#"{"a":2}"#),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn csv_round_trip() {
        let mut dec = stage(BuiltinFormat::Csv, true, Some(&csv_opts(true)));
        let out = dec
            .process(&[line(1, "id,name"), rec("7,\"Doe, J\""), rec("1,2,3")])
            .expect("process");
        assert_eq!(out[0], Outcome::Records(vec![]), "header row dropped");
        let Outcome::Records(r) = &out[1] else {
            panic!("{:?}", out[1])
        };
        assert_eq!(&r[0].value[..], br#"{"id":"7","name":"Doe, J"}"#);
        assert!(matches!(&out[2], Outcome::Error(m) if m.contains("expected 2 fields")));
        let mut enc = stage(BuiltinFormat::Csv, false, Some(&csv_opts(false)));
        let out = enc.process(&r[..1]).expect("process");
        let Outcome::Records(e) = &out[0] else {
            panic!("{:?}", out[0])
        };
        assert_eq!(&e[0].value[..], b"7,\"Doe, J\"");
    }

    #[test]
    fn csv_header_drops_only_the_first_line() {
        let mut dec = stage(BuiltinFormat::Csv, true, Some(&csv_opts(true)));
        let out = dec
            // Line 1 is the header even when it differs from `columns`; a later row that
            // happens to equal the column names is data.
            .process(&[line(1, "ID,Name"), line(2, "id,name"), line(3, "7,x")])
            .expect("process");
        assert_eq!(out[0], Outcome::Records(vec![]), "line 1 is the header");
        let Outcome::Records(r) = &out[1] else {
            panic!("{:?}", out[1])
        };
        assert_eq!(&r[0].value[..], br#"{"id":"id","name":"name"}"#);
        assert!(matches!(&out[2], Outcome::Records(r) if r.len() == 1));
        // Without `header`, line 1 is data.
        let mut dec = stage(BuiltinFormat::Csv, true, Some(&csv_opts(false)));
        let out = dec.process(&[line(1, "id,name")]).expect("process");
        assert!(matches!(&out[0], Outcome::Records(r) if r.len() == 1));
    }
}
