//! Connector specs: types, the JSON Schema generated from them, loading and validation.
//!
//! Loading is pure and offline until the plugin check: read the YAML (`serde_yaml`) → replace
//! `${VAR}`s → check against the JSON Schema (all errors at once, each located by line, column
//! and key path) → deserialize into [`Spec`] → semantic checks → check each wasm plugin's kind and
//! config against the schema the plugin exports.

mod env;
pub mod plugin;
pub mod reference;
pub mod source_map;
mod types;
pub mod units;
pub mod validate;

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

pub use types::*;
pub use validate::Diagnostic;

use crate::plugin::{PluginCheckError, PluginHost, PluginKind};
use source_map::SourceMap;
use validate::{Issue, SchemaCheck};

/// The JSON Schema of a spec, as `sluice schema` prints it.
pub fn json_schema() -> Value {
    let schema = schemars::schema_for!(Spec);
    serde_json::to_value(&schema).unwrap_or(Value::Bool(true))
}

/// A spec that passed validation.
#[derive(Debug, Clone)]
pub struct LoadedSpec {
    /// The spec file as given.
    pub file: PathBuf,
    /// The folder plugin paths are relative to.
    pub base_dir: PathBuf,
    pub spec: Spec,
    /// The document after `${VAR}` replacement.
    pub doc: Value,
}

impl LoadedSpec {
    /// The resolved document with the values of secret keys replaced, for printing.
    pub fn redacted(&self) -> Value {
        redact(&self.doc, SchemaCheck::global().secret_keys())
    }
}

fn redact(v: &Value, secret: &std::collections::BTreeSet<String>) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let v = if secret.contains(k) && !v.is_null() {
                        Value::String("<redacted>".into())
                    } else {
                        redact(v, secret)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(|v| redact(v, secret)).collect()),
        other => other.clone(),
    }
}

/// Everything wrong with a spec.
#[derive(Debug, Clone)]
pub struct SpecErrors(pub Vec<Diagnostic>);

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecErrors {}

/// Loads and fully validates the spec at `path`, plugins included.
pub fn load(path: &Path, host: Option<&PluginHost>) -> Result<LoadedSpec, SpecErrors> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        SpecErrors(vec![Diagnostic {
            file: file.clone(),
            pos: Default::default(),
            path: String::new(),
            message: format!("cannot read the spec: {e}"),
        }])
    })?;
    let env = |name: &str| std::env::var(name).ok();
    let (spec, doc, map) = parse(&file, &text, &env).map_err(SpecErrors)?;
    let base_dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    if let Some(host) = host {
        let issues = check_plugins(&spec, &base_dir, host);
        if !issues.is_empty() {
            return Err(SpecErrors(
                issues.into_iter().map(|i| i.locate(&file, &map)).collect(),
            ));
        }
    }
    Ok(LoadedSpec {
        file: path.to_path_buf(),
        base_dir,
        spec,
        doc,
    })
}

/// Parses and validates spec text (no plugin checks). `file` names the text in diagnostics.
pub fn parse(
    file: &str,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Spec, Value, SourceMap), Vec<Diagnostic>> {
    let mut doc: Value = serde_yaml::from_str(text).map_err(|e| {
        let pos = e
            .location()
            .map(|l| source_map::Pos {
                line: l.line(),
                column: l.column(),
            })
            .unwrap_or_default();
        vec![Diagnostic {
            file: file.to_string(),
            pos,
            path: String::new(),
            message: format!("YAML syntax error: {}", yaml_message(&e)),
        }]
    })?;
    let map = SourceMap::build(text);
    let locate = |issues: Vec<Issue>| -> Vec<Diagnostic> {
        let mut d: Vec<Diagnostic> = issues.into_iter().map(|i| i.locate(file, &map)).collect();
        d.sort_by_key(|d| (d.pos.line, d.pos.column));
        d
    };

    let mut issues = Vec::new();
    interpolate(&mut doc, String::new(), &map, env, &mut issues);
    if !issues.is_empty() {
        return Err(locate(issues));
    }
    let issues = SchemaCheck::global().check(&doc);
    if !issues.is_empty() {
        return Err(locate(issues));
    }
    let spec: Spec = serde_path_to_error::deserialize(&doc).map_err(|e| {
        let pointer = path_to_pointer(&e.path().to_string());
        locate(vec![Issue {
            pointer,
            at_key: false,
            message: e.inner().to_string(),
        }])
    })?;
    let issues = semantic_checks(&spec);
    if !issues.is_empty() {
        return Err(locate(issues));
    }
    Ok((spec, doc, map))
}

/// serde_yaml's message without its own location suffix (we print ours).
fn yaml_message(e: &serde_yaml::Error) -> String {
    let m = e.to_string();
    match m.find(" at line ") {
        Some(i) => m[..i].to_string(),
        None => m,
    }
}

fn path_to_pointer(path: &str) -> String {
    if path == "." {
        return String::new();
    }
    let mut out = String::new();
    for seg in path.split('.') {
        let (name, idx) = match seg.find('[') {
            Some(i) => (&seg[..i], Some(seg[i + 1..].trim_end_matches(']'))),
            None => (seg, None),
        };
        if !name.is_empty() {
            out.push('/');
            out.push_str(&source_map::escape(name));
        }
        if let Some(i) = idx {
            out.push('/');
            out.push_str(i);
        }
    }
    out
}

/// Replaces `${VAR}` in every string value. A plain (unquoted) scalar that is exactly one
/// placeholder takes the YAML type of its replacement, so `count: ${N}` can be a number.
fn interpolate(
    v: &mut Value,
    pointer: String,
    map: &SourceMap,
    env: &dyn Fn(&str) -> Option<String>,
    issues: &mut Vec<Issue>,
) {
    match v {
        Value::String(s) => match env::interpolate(s, env) {
            Ok(None) => {}
            Ok(Some(new)) => {
                let plain = map.get(&pointer).is_some_and(|n| n.plain);
                *v = if plain && env::is_single_placeholder(s) {
                    match serde_yaml::from_str::<Value>(&new) {
                        Ok(scalar @ (Value::Number(_) | Value::Bool(_) | Value::Null))
                            if !new.trim().is_empty() =>
                        {
                            scalar
                        }
                        _ => Value::String(new),
                    }
                } else {
                    Value::String(new)
                };
            }
            Err(message) => issues.push(Issue {
                pointer,
                at_key: false,
                message,
            }),
        },
        Value::Array(a) => {
            for (i, item) in a.iter_mut().enumerate() {
                interpolate(item, format!("{pointer}/{i}"), map, env, issues);
            }
        }
        Value::Object(m) => {
            for (k, item) in m.iter_mut() {
                let p = format!("{pointer}/{}", source_map::escape(k));
                interpolate(item, p, map, env, issues);
            }
        }
        _ => {}
    }
}

/// Checks the schema cannot express.
fn semantic_checks(spec: &Spec) -> Vec<Issue> {
    let mut issues = Vec::new();
    let issue = |pointer: &str, message: String| Issue {
        pointer: pointer.to_string(),
        at_key: false,
        message,
    };
    for i in spec.source.check() {
        issues.push(issue(&format!("/source/{}", i.path), i.message));
    }
    for i in spec.sink.check() {
        issues.push(issue(&format!("/sink/{}", i.path), i.message));
    }
    for i in sluice_connectors::registry::check_pair(&spec.source, &spec.sink) {
        issues.push(issue(&format!("/{}", i.path), i.message));
    }
    if let Some(format) = &spec.format {
        let is_csv =
            |c: &Option<FormatChoice>| matches!(c, Some(FormatChoice::Builtin(BuiltinFormat::Csv)));
        for (key, choice) in [("decode", &format.decode), ("encode", &format.encode)] {
            if is_csv(choice) && format.csv.is_none() {
                issues.push(issue(
                    &format!("/format/{key}"),
                    "the csv format needs its columns: add `format.csv.columns: [...]`".into(),
                ));
            }
        }
        if let Some(csv) = &format.csv
            && !(csv.delimiter.len() == 1 && csv.delimiter.is_ascii())
        {
            issues.push(issue(
                "/format/csv/delimiter",
                format!(
                    "the delimiter must be one ASCII character, found `{}`",
                    csv.delimiter
                ),
            ));
        }
    }
    issues
}

/// Loads each wasm plugin the spec names, checks its kind, and checks its config against the
/// schema the plugin exports.
fn check_plugins(spec: &Spec, base_dir: &Path, host: &PluginHost) -> Vec<Issue> {
    let mut refs = Vec::new();
    for (i, t) in spec.transforms.iter().enumerate() {
        refs.push((format!("/transforms/{i}"), t, PluginKind::Transform));
    }
    if let PartitionerSpec::Wasm(p) = &spec.partitioner {
        refs.push(("/partitioner".into(), p, PluginKind::Partitioner));
    }
    if let Some(f) = &spec.format {
        for (key, c) in [("decode", &f.decode), ("encode", &f.encode)] {
            if let Some(FormatChoice::Wasm(p)) = c {
                refs.push((format!("/format/{key}"), p, PluginKind::Format));
            }
        }
    }
    let mut issues = Vec::new();
    for (pointer, p, kind) in refs {
        let at = |sub: &str, message: String| Issue {
            pointer: format!("{pointer}{sub}"),
            at_key: false,
            message,
        };
        match host.check(p, base_dir, kind) {
            Ok(()) => {}
            Err(PluginCheckError::Config(errors)) => {
                for (ptr, message) in errors {
                    issues.push(at(
                        &format!("/config{ptr}"),
                        format!("plugin config: {message}"),
                    ));
                }
            }
            Err(e @ PluginCheckError::Init(_)) => issues.push(at("/config", e.to_string())),
            Err(e) => issues.push(at("/wasm", format!("{}: {e}", p.wasm.display()))),
        }
    }
    issues
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "COUNT").then(|| "25".to_string())
    }

    #[test]
    fn the_schema_compiles_and_accepts_a_minimal_spec() {
        let text = "version: 1\nname: t\nsource:\n  type: generator\n  count: ${COUNT}\nsink: {type: stdout}\n";
        let (spec, _, _) = parse("t.yaml", text, &env).expect("valid");
        match spec.source {
            sluice_connectors::SourceConfig::Generator(g) => assert_eq!(g.count, Some(25)),
            other => panic!("unexpected source {other:?}"),
        }
    }

    #[test]
    fn quoted_placeholders_stay_strings() {
        let text =
            "version: 1\nname: \"${COUNT}\"\nsource: {type: generator}\nsink: {type: stdout}\n";
        let (spec, _, _) = parse("t.yaml", text, &env).expect("valid");
        assert_eq!(spec.name, "25");
    }

    #[test]
    fn csv_without_columns_is_rejected() {
        let text = "version: 1\nname: t\nsource: {type: generator}\nformat: {decode: csv}\nsink: {type: stdout}\n";
        let errs = parse("t.yaml", text, &env).expect_err("invalid");
        assert_eq!(errs[0].path, "format.decode");
        assert!(errs[0].message.contains("csv.columns"), "{}", errs[0]);
    }
}
