//! Replaces listed fields of JSON records, e.g. `{fields: [email, user.phone], replacement: "***"}`.

use sluice_sdk::json::{self, Value};
use sluice_sdk::{Batch, Outcome, Outcomes, Record, Transform};

/// Replace fields of JSON object values.
#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Fields to replace. A dotted path reaches into nested objects (`user.email`) and arrays
    /// (`items.0.card`). Missing fields are left alone.
    #[schemars(length(min = 1))]
    pub fields: Vec<String>,
    /// What each field is replaced with (any JSON value).
    #[serde(default = "default_replacement")]
    pub replacement: Value,
}

fn default_replacement() -> Value {
    Value::from("***")
}

pub struct MaskFields {
    config: Config,
}

enum Masked {
    Unchanged,
    Changed(Value),
    Invalid(String),
}

impl MaskFields {
    fn mask(&self, value: &[u8]) -> Masked {
        let mut doc = match json::parse(value) {
            Ok(doc) => doc,
            Err(e) => return Masked::Invalid(e),
        };
        let mut changed = false;
        for field in &self.config.fields {
            if let Some(v) = json::get_path_mut(&mut doc, field) {
                *v = self.config.replacement.clone();
                changed = true;
            }
        }
        if changed {
            Masked::Changed(doc)
        } else {
            Masked::Unchanged
        }
    }
}

impl Transform for MaskFields {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        if config.fields.iter().any(|f| f.is_empty()) {
            return Err("`fields` must not contain an empty name".into());
        }
        Ok(MaskFields { config })
    }

    fn process(&mut self, record: &Record<'_>) -> Outcome {
        match self.mask(record.value) {
            Masked::Unchanged => Outcome::Keep,
            Masked::Changed(doc) => Outcome::json_value(&doc),
            Masked::Invalid(e) => Outcome::Error(e),
        }
    }

    // Same as the default, but serializes straight into the output buffer.
    fn process_batch(&mut self, batch: Batch<'_>, out: &mut Outcomes) {
        batch.for_each(|r| match self.mask(r.value) {
            Masked::Unchanged => out.push_keep(),
            Masked::Changed(doc) => out.push_json_value(&doc),
            Masked::Invalid(e) => out.push_error(&e),
        });
    }
}

sluice_sdk::export_transform!(MaskFields);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use sluice_sdk::testing;

    #[test]
    fn masks_listed_fields_only() {
        let out = testing::transform::<MaskFields>(
            json!({"fields": ["email", "user.phone"]}),
            &[
                Record::new(br#"{"email":"a@b.c","user":{"phone":"123","id":7},"n":1}"#),
                Record::new(br#"{"n":2}"#),
                Record::new(b"not json"),
            ],
        )
        .unwrap();
        assert_eq!(
            out[0],
            Outcome::Value(br#"{"email":"***","user":{"phone":"***","id":7},"n":1}"#.to_vec())
        );
        assert_eq!(out[1], Outcome::Keep);
        assert!(matches!(&out[2], Outcome::Error(e) if e.contains("not valid JSON")));
    }

    #[test]
    fn custom_replacement() {
        let out = testing::transform::<MaskFields>(
            json!({"fields": ["card"], "replacement": null}),
            &[Record::new(br#"{"card":"4111"}"#)],
        )
        .unwrap();
        assert_eq!(out, vec![Outcome::Value(br#"{"card":null}"#.to_vec())]);
    }

    #[test]
    fn config_needs_fields() {
        assert!(testing::transform::<MaskFields>(json!({}), &[]).is_err());
    }
}
