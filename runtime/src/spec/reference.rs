//! The Markdown spec reference, generated from the JSON Schema (`sluice schema --markdown`), so
//! the docs cannot drift from the code.

use std::collections::{BTreeSet, VecDeque};
use std::fmt::Write;

use serde_json::{Map, Value};

/// The whole reference page.
pub fn markdown() -> String {
    let schema = super::json_schema();
    let empty = Map::new();
    let defs = schema
        .get("$defs")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let mut out = String::new();
    out.push_str("# Spec reference\n\n");
    out.push_str(
        "Generated from the spec's JSON Schema by `sluice schema --markdown`; a test fails when this\n\
         file is stale. Durations are written `200ms`, `5s`, `1m` (at most 100 years; commit and\n\
         discovery intervals longer than 0s); sizes `512KiB`, `5MiB`. Any string value may use\n\
         `${VAR}` or `${VAR:-default}`. Every relative path (files, globs, the offset folder, the\n\
         dead-letter file, plugins, AWS credential files, librdkafka `ssl.*.location` and\n\
         `sasl.kerberos.keytab`) is relative to the folder of the spec file, whatever the\n\
         working directory.\n\n",
    );
    let mut queue: VecDeque<String> = VecDeque::new();
    let mut seen = BTreeSet::new();
    out.push_str("## Top level\n\n");
    table(&schema, &mut out, &mut queue);
    while let Some(name) = queue.pop_front() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let Some(def) = defs.get(&name) else { continue };
        section(&name, def, &mut out, &mut queue);
    }
    out
}

fn anchor(name: &str) -> String {
    name.to_lowercase()
}

/// Writes a definition's description and, when it is an object, the table of its properties
/// (true then).
fn described(def: &Value, out: &mut String, q: &mut VecDeque<String>) -> bool {
    if let Some(d) = def.get("description").and_then(Value::as_str) {
        let _ = writeln!(out, "{}\n", one_para(d));
    }
    let object = def.get("properties").is_some();
    if object {
        table(def, out, q);
    }
    object
}

fn section(name: &str, def: &Value, out: &mut String, q: &mut VecDeque<String>) {
    let _ = writeln!(out, "## {name}\n");
    if described(def, out, q) {
        return;
    }
    let alts = def
        .get("oneOf")
        .or_else(|| def.get("anyOf"))
        .and_then(Value::as_array);
    if let Some(alts) = alts {
        for alt in alts {
            let tag = alt.get("properties").and_then(|p| {
                p.as_object()?.iter().find_map(|(k, v)| {
                    v.get("const")
                        .and_then(Value::as_str)
                        .map(|c| format!("{k}: {c}"))
                })
            });
            let title = match (&tag, alt.get("const"), alt.get("enum")) {
                (Some(t), _, _) => format!("`{t}`"),
                (_, Some(c), _) => format!("`{}`", plain(c)),
                (_, _, Some(e)) => e
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|v| format!("`{}`", plain(v)))
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default(),
                _ => type_of(alt, q),
            };
            let _ = writeln!(out, "### {name}: {title}\n");
            described(alt, out, q);
        }
        return;
    }
    if let Some(values) = def.get("enum").and_then(Value::as_array) {
        let list: Vec<String> = values.iter().map(|v| format!("`{}`", plain(v))).collect();
        let _ = writeln!(out, "One of: {}.\n", list.join(", "));
    } else {
        let _ = writeln!(out, "Type: {}.\n", type_of(def, q));
    }
}

fn table(obj: &Value, out: &mut String, q: &mut VecDeque<String>) {
    let Some(props) = obj.get("properties").and_then(Value::as_object) else {
        return;
    };
    let required: BTreeSet<&str> = obj
        .get("required")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    out.push_str("| key | type | required / default | description |\n|---|---|---|---|\n");
    for (key, p) in props {
        if p.get("const").is_some() && (key == "type" || key == "store") {
            continue;
        }
        let req = if required.contains(key.as_str()) {
            "required".to_string()
        } else {
            match p.get("default") {
                Some(Value::Null) | None => "optional".into(),
                // A long object default is better read from its own table, key by key.
                Some(d) if d.is_object() && compact(d).len() > 100 => "each key's default".into(),
                Some(d) => format!("`{}`", compact(d)),
            }
        };
        let desc = p
            .get("description")
            .and_then(Value::as_str)
            .map(one_para)
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "| `{key}` | {} | {req} | {} |",
            type_of(p, q),
            desc.replace('|', "\\|")
        );
    }
    out.push('\n');
}

fn one_para(s: &str) -> String {
    s.split('\n').map(str::trim).collect::<Vec<_>>().join(" ")
}

/// A default as a spec would write it: `{max_retries: 10, backoff: {base: 300ms}}`.
fn compact(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let fields: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{k}: {}", compact(v)))
                .collect();
            format!("{{{}}}", fields.join(", "))
        }
        Value::Array(a) => {
            let items: Vec<String> = a.iter().map(compact).collect();
            format!("[{}]", items.join(", "))
        }
        other => plain(other),
    }
}

fn plain(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_string)
}

fn type_of(p: &Value, q: &mut VecDeque<String>) -> String {
    if let Some(r) = p.get("$ref").and_then(Value::as_str) {
        let name = r.rsplit('/').next().unwrap_or(r).to_string();
        q.push_back(name.clone());
        return match name.as_str() {
            "Duration" => "duration".into(),
            "Size" => "size".into(),
            _ => format!("[{name}](#{})", anchor(&name)),
        };
    }
    if let Some(alts) = p
        .get("anyOf")
        .or_else(|| p.get("oneOf"))
        .and_then(Value::as_array)
    {
        let parts: Vec<String> = alts
            .iter()
            .filter(|a| a.get("type") != Some(&Value::String("null".into())))
            .map(|a| type_of(a, q))
            .collect();
        return parts.join(" or ");
    }
    if let Some(c) = p.get("const") {
        return format!("`{}`", plain(c));
    }
    if let Some(e) = p.get("enum").and_then(Value::as_array) {
        return e
            .iter()
            .map(|v| format!("`{}`", plain(v)))
            .collect::<Vec<_>>()
            .join(" \\| ");
    }
    let t = match p.get("type") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .filter(|t| *t != "null")
            .collect::<Vec<_>>()
            .join(" or "),
        _ => "any".into(),
    };
    if t == "array"
        && let Some(items) = p.get("items")
    {
        return format!("list of {}", type_of(items, q));
    }
    t
}

#[cfg(test)]
mod tests {
    use sluice_connectors::{SinkConfig, SourceConfig};

    #[test]
    fn documents_every_connector_and_store() {
        let md = super::markdown();
        let kinds = SourceConfig::KINDS.iter().chain(SinkConfig::KINDS);
        for needle in kinds.map(|k| format!("`type: {k}`")) {
            assert!(md.contains(&needle), "missing {needle}");
        }
        for store in ["memory", "file", "kafka", "dynamodb"] {
            assert!(md.contains(&format!("`store: {store}`")), "missing {store}");
        }
        assert!(md.contains("`commit_interval`"));
    }

    /// Fields whose defaults are enums or objects: they show only when their type is `Serialize`.
    #[test]
    fn shows_enum_and_object_defaults() {
        let md = super::markdown();
        for row in [
            "| `partitioner` | [PartitionerSpec](#partitionerspec) | `random` |",
            "| `transforms` | list of [TransformSpec](#transformspec) | `[]` |",
            "| `errors` | [ErrorsSpec](#errorsspec) | `{tolerance: none, dead_letter: null}` |",
            "| `credentials` | [CredentialsConfig](#credentialsconfig) | `{provider: auto}` |",
            "| `aws` | [AwsConfig](#awsconfig) | each key's default |",
        ] {
            assert!(md.contains(row), "missing {row}");
        }
    }
}
