//! A format for CSV with typed columns: `decode` turns each line of a record into a JSON object
//! (`"7,ann,true"` -> `{"id":7,"name":"ann","active":true}`), `encode` turns JSON objects back
//! into CSV lines.

use sluice_sdk::json::{Map, Value};
use sluice_sdk::{Format, Outcome, Output, Record};

/// CSV lines with named, typed columns.
#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The columns, in order.
    #[schemars(length(min = 1))]
    pub columns: Vec<Column>,
    /// The field delimiter, one ASCII character.
    #[serde(default = "default_delimiter")]
    #[schemars(length(min = 1, max = 1))]
    pub delimiter: String,
    /// Skip lines equal to the header (the column names joined by the delimiter) when decoding.
    #[serde(default)]
    pub skip_header: bool,
}

fn default_delimiter() -> String {
    ",".into()
}

/// One column.
#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Column {
    /// The JSON field name.
    pub name: String,
    /// The column's type; an empty cell is `null` for every type but `string`.
    #[serde(default, rename = "type")]
    pub ty: ColumnType,
}

#[derive(Default, Clone, Copy, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    #[default]
    String,
    Integer,
    Number,
    Boolean,
}

pub struct TypedCsv {
    config: Config,
    delimiter: u8,
    header: String,
}

/// Splits one CSV line (RFC 4180 quoting) into cells.
fn split(line: &str, delimiter: u8) -> Result<Vec<String>, String> {
    let mut cells = Vec::new();
    let mut cell = String::new();
    let mut chars = line.chars().peekable();
    let delimiter = char::from(delimiter);
    let mut quoted = false;
    let mut at_start = true;
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    cell.push('"');
                }
                '"' => quoted = false,
                c => cell.push(c),
            }
        } else if c == '"' && at_start {
            quoted = true;
            at_start = false;
        } else if c == delimiter {
            cells.push(std::mem::take(&mut cell));
            at_start = true;
        } else {
            cell.push(c);
            at_start = false;
        }
    }
    if quoted {
        return Err("unterminated quoted cell".into());
    }
    cells.push(cell);
    Ok(cells)
}

impl ColumnType {
    fn parse(self, name: &str, cell: String) -> Result<Value, String> {
        if cell.is_empty() && self != ColumnType::String {
            return Ok(Value::Null);
        }
        let bad = |what| format!("column `{name}`: `{cell}` is not {what}");
        Ok(match self {
            ColumnType::String => Value::String(cell),
            ColumnType::Integer => cell
                .trim()
                .parse::<i64>()
                .map_err(|_| bad("an integer"))?
                .into(),
            ColumnType::Number => {
                let n: f64 = cell.trim().parse().map_err(|_| bad("a number"))?;
                serde_json::Number::from_f64(n)
                    .map(Value::Number)
                    .ok_or_else(|| bad("a finite number"))?
            }
            ColumnType::Boolean => match cell.trim() {
                "true" | "TRUE" | "True" | "1" => true.into(),
                "false" | "FALSE" | "False" | "0" => false.into(),
                _ => return Err(bad("a boolean")),
            },
        })
    }
}

impl TypedCsv {
    fn decode_line(&self, line: &str) -> Result<Value, String> {
        let cells = split(line, self.delimiter)?;
        if cells.len() != self.config.columns.len() {
            return Err(format!(
                "expected {} columns, found {}",
                self.config.columns.len(),
                cells.len()
            ));
        }
        let mut obj = Map::with_capacity(cells.len());
        for (col, cell) in self.config.columns.iter().zip(cells) {
            obj.insert(col.name.clone(), col.ty.parse(&col.name, cell)?);
        }
        Ok(Value::Object(obj))
    }

    fn push_cell(&self, out: &mut String, v: Option<&Value>) {
        let text = match v {
            None | Some(Value::Null) => return,
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        };
        let d = char::from(self.delimiter);
        if text.contains([d, '"', '\n', '\r']) {
            out.push('"');
            out.push_str(&text.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(&text);
        }
    }
}

impl Format for TypedCsv {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        let delimiter = match config.delimiter.as_bytes() {
            [d] if d.is_ascii() && *d != b'"' => *d,
            _ => return Err("`delimiter` must be one ASCII character other than `\"`".into()),
        };
        let header = config
            .columns
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(&config.delimiter);
        Ok(TypedCsv {
            config,
            delimiter,
            header,
        })
    }

    /// Each non-empty line of the record becomes one JSON object.
    fn decode(&mut self, record: &Record<'_>) -> Outcome {
        let Ok(text) = std::str::from_utf8(record.value) else {
            return Outcome::error("value is not UTF-8");
        };
        let mut outs = Vec::new();
        for line in text.lines() {
            if line.trim().is_empty() || (self.config.skip_header && line == self.header) {
                continue;
            }
            match self.decode_line(line) {
                Ok(v) => outs.push(Output::new(sluice_sdk::json::to_vec(&v))),
                Err(e) => return Outcome::Error(e),
            }
        }
        Outcome::Records(outs)
    }

    /// A JSON object becomes one CSV line (no line terminator); fields not in `columns` are
    /// ignored, missing ones are empty cells.
    fn encode(&mut self, record: &Record<'_>) -> Outcome {
        let doc: Value = match record.json() {
            Ok(v) => v,
            Err(e) => return Outcome::Error(e),
        };
        let Value::Object(obj) = doc else {
            return Outcome::error("value is not a JSON object");
        };
        let mut line = String::new();
        for (i, col) in self.config.columns.iter().enumerate() {
            if i > 0 {
                line.push(char::from(self.delimiter));
            }
            self.push_cell(&mut line, obj.get(&col.name));
        }
        Outcome::Value(line.into_bytes())
    }
}

sluice_sdk::export_format!(TypedCsv);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use sluice_sdk::testing;

    fn config() -> Value {
        json!({"columns": [
            {"name": "id", "type": "integer"},
            {"name": "name"},
            {"name": "score", "type": "number"},
            {"name": "active", "type": "boolean"}],
            "skip_header": true})
    }

    #[test]
    fn decodes_typed_lines() {
        let out = testing::decode::<TypedCsv>(
            config(),
            &[
                Record::new(b"7,\"Ann, \"\"A\"\"\",1.5,true"),
                Record::new(b"id,name,score,active\n1,a,,false\n2,b,3,1\n"),
                Record::new(b"x,a,1,true"),
                Record::new(b"1,a"),
            ],
        )
        .unwrap();
        assert_eq!(
            out[0],
            Outcome::Value(br#"{"id":7,"name":"Ann, \"A\"","score":1.5,"active":true}"#.to_vec())
        );
        assert_eq!(
            out[1],
            Outcome::Records(vec![
                Output::new(br#"{"id":1,"name":"a","score":null,"active":false}"#.to_vec()),
                Output::new(br#"{"id":2,"name":"b","score":3.0,"active":true}"#.to_vec()),
            ])
        );
        assert_eq!(
            out[2],
            Outcome::Error("column `id`: `x` is not an integer".into())
        );
        assert_eq!(out[3], Outcome::Error("expected 4 columns, found 2".into()));
    }

    #[test]
    fn encodes_objects() {
        let out = testing::encode_records::<TypedCsv>(
            config(),
            &[
                Record::new(br#"{"name":"Ann, \"A\"","id":7,"active":true,"extra":1}"#),
                Record::new(b"[1]"),
            ],
        )
        .unwrap();
        assert_eq!(
            out[0],
            Outcome::Value(b"7,\"Ann, \"\"A\"\"\",,true".to_vec())
        );
        assert!(matches!(out[1], Outcome::Error(_)));
    }
}
