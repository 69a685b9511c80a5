//! Keeps or drops JSON records by conditions on their fields, e.g.
//! `{conditions: [{field: status, op: eq, value: active}]}` keeps active records only.

use std::cmp::Ordering;

use sluice_sdk::json::{self, Value};
use sluice_sdk::{Batch, Outcome, Outcomes, Record, Transform};

/// Keep or drop records whose JSON value matches conditions.
#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Conditions on fields of the record's JSON value.
    #[schemars(length(min = 1))]
    pub conditions: Vec<Condition>,
    /// Whether `all` (default) or `any` of the conditions must hold for a record to match.
    #[serde(default, rename = "match")]
    pub match_: Match,
    /// What happens to matching records: `keep` (default; others are dropped) or `drop`.
    #[serde(default)]
    pub action: Action,
}

/// One condition: `field` `op` `value`.
#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// A field of the JSON value; a dotted path reaches into nested objects (`user.country`).
    pub field: String,
    /// The comparison.
    pub op: Op,
    /// What the field is compared with (not used by `exists` and `missing`).
    #[serde(default)]
    pub value: Option<Value>,
}

#[derive(Clone, Copy, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Equal to `value`.
    Eq,
    /// Not equal to `value` (a missing field is not equal).
    Ne,
    /// Greater than `value` (numbers or strings).
    Gt,
    /// Greater than or equal to `value`.
    Ge,
    /// Less than `value`.
    Lt,
    /// Less than or equal to `value`.
    Le,
    /// A string field containing the string `value`, or an array field containing `value`.
    Contains,
    /// Equal to one of the values in the array `value`.
    In,
    /// The field is present.
    Exists,
    /// The field is absent.
    Missing,
}

#[derive(Default, Clone, Copy, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Match {
    #[default]
    All,
    Any,
}

#[derive(Default, Clone, Copy, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    #[default]
    Keep,
    Drop,
}

pub struct Filter {
    config: Config,
}

fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

impl Condition {
    fn holds(&self, doc: &Value) -> bool {
        let field = json::get_path(doc, &self.field);
        let null = Value::Null;
        let want = self.value.as_ref().unwrap_or(&null);
        match (self.op, field) {
            (Op::Exists, f) => f.is_some(),
            (Op::Missing, f) => f.is_none(),
            (_, None) => self.op == Op::Ne,
            (Op::Eq, Some(f)) => f == want,
            (Op::Ne, Some(f)) => f != want,
            (Op::Gt, Some(f)) => compare(f, want) == Some(Ordering::Greater),
            (Op::Ge, Some(f)) => {
                matches!(compare(f, want), Some(Ordering::Greater | Ordering::Equal))
            }
            (Op::Lt, Some(f)) => compare(f, want) == Some(Ordering::Less),
            (Op::Le, Some(f)) => matches!(compare(f, want), Some(Ordering::Less | Ordering::Equal)),
            (Op::Contains, Some(Value::String(s))) => want.as_str().is_some_and(|w| s.contains(w)),
            (Op::Contains, Some(Value::Array(a))) => a.contains(want),
            (Op::Contains, Some(_)) => false,
            (Op::In, Some(f)) => want.as_array().is_some_and(|a| a.contains(f)),
        }
    }
}

impl Filter {
    /// Whether the record passes, or why it cannot be judged.
    fn passes(&self, value: &[u8]) -> Result<bool, String> {
        let doc = json::parse(value)?;
        let mut conds = self.config.conditions.iter();
        let matched = match self.config.match_ {
            Match::All => conds.all(|c| c.holds(&doc)),
            Match::Any => conds.any(|c| c.holds(&doc)),
        };
        Ok(matched == (self.config.action == Action::Keep))
    }
}

impl Transform for Filter {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        for (i, c) in config.conditions.iter().enumerate() {
            let needs_value = !matches!(c.op, Op::Exists | Op::Missing);
            if needs_value && c.value.is_none() {
                return Err(format!("conditions[{i}] (`{}`) needs a `value`", c.field));
            }
            if c.op == Op::In && !c.value.as_ref().is_some_and(Value::is_array) {
                return Err(format!("conditions[{i}]: `in` needs an array `value`"));
            }
        }
        Ok(Filter { config })
    }

    fn process(&mut self, record: &Record<'_>) -> Outcome {
        match self.passes(record.value) {
            Ok(true) => Outcome::Keep,
            Ok(false) => Outcome::drop_record(),
            Err(e) => Outcome::Error(e),
        }
    }

    fn process_batch(&mut self, batch: Batch<'_>, out: &mut Outcomes) {
        batch.for_each(|r| match self.passes(r.value) {
            Ok(true) => out.push_keep(),
            Ok(false) => out.push_drop(),
            Err(e) => out.push_error(&e),
        });
    }
}

sluice_sdk::export_transform!(Filter);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use sluice_sdk::testing;

    fn run(config: Value, values: &[&str]) -> Vec<Outcome> {
        let records: Vec<_> = values.iter().map(|v| Record::new(v.as_bytes())).collect();
        testing::transform::<Filter>(config, &records).unwrap()
    }

    #[test]
    fn keeps_matching_records() {
        let out = run(
            json!({"conditions": [{"field": "status", "op": "eq", "value": "active"},
                                  {"field": "age", "op": "ge", "value": 18}]}),
            &[
                r#"{"status":"active","age":30}"#,
                r#"{"status":"active","age":10}"#,
                r#"{"status":"gone","age":30}"#,
                "nope",
            ],
        );
        assert_eq!(out[0], Outcome::Keep);
        assert_eq!(out[1], Outcome::Records(vec![]));
        assert_eq!(out[2], Outcome::Records(vec![]));
        assert!(matches!(out[3], Outcome::Error(_)));
    }

    #[test]
    fn drops_matching_records_with_any() {
        let out = run(
            json!({"action": "drop", "match": "any", "conditions": [
                {"field": "user.test", "op": "exists"},
                {"field": "tags", "op": "contains", "value": "spam"},
                {"field": "country", "op": "in", "value": ["XX", "YY"]}]}),
            &[
                r#"{"user":{"test":true}}"#,
                r#"{"tags":["a","spam"]}"#,
                r#"{"country":"YY"}"#,
                r#"{"country":"DE","tags":[]}"#,
            ],
        );
        let drop = Outcome::Records(vec![]);
        assert_eq!(out, vec![drop.clone(), drop.clone(), drop, Outcome::Keep]);
    }

    #[test]
    fn comparison_needs_a_value() {
        let err =
            testing::transform::<Filter>(json!({"conditions": [{"field": "a", "op": "gt"}]}), &[])
                .unwrap_err();
        assert!(err.contains("needs a `value`"), "{err}");
    }
}
