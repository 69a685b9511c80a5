//! `sluice plugin new`: scaffolds a plugin crate that builds to `wasm32-wasip2` with one command
//! and has a passing native test.

use std::path::{Path, PathBuf};

use super::PluginKind;

/// Why a plugin crate could not be created.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error(
        "`{0}` is not a valid plugin name (use letters, digits, `-` and `_`, starting with a letter)"
    )]
    BadName(String),
    #[error("{0} already exists and is not empty")]
    Exists(PathBuf),
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Creates the crate `dir/name` for a plugin of `kind` and returns its path. Inside a checkout of
/// the Sluice repository the crate depends on `sdk/` by path, elsewhere on the published
/// `sluice-sdk` version. Build it with `cargo build --release --target wasm32-wasip2`; test it
/// with `cargo test`.
pub fn new_plugin(name: &str, kind: PluginKind, dir: &Path) -> Result<PathBuf, ScaffoldError> {
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        return Err(ScaffoldError::BadName(name.to_string()));
    }
    let root = dir.join(name);
    if root.read_dir().is_ok_and(|mut d| d.next().is_some()) {
        return Err(ScaffoldError::Exists(root));
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ScaffoldError::Io { path, source }
    };
    std::fs::create_dir_all(root.join("src")).map_err(io(&root))?;
    let sdk = sdk_dependency(&root);
    let files = [
        ("Cargo.toml", cargo_toml(name, kind, &sdk)),
        ("src/lib.rs", lib_rs(name, kind)),
        (".gitignore", "/target\n".to_string()),
    ];
    for (file, text) in files {
        let path = root.join(file);
        std::fs::write(&path, text).map_err(io(&path))?;
    }
    Ok(root)
}

/// The `sluice-sdk = …` dependency line: by path inside a Sluice checkout, else by version.
fn sdk_dependency(crate_dir: &Path) -> String {
    let abs = std::path::absolute(crate_dir).unwrap_or_else(|_| crate_dir.to_path_buf());
    for ancestor in abs.ancestors().skip(1) {
        let sdk = ancestor.join("sdk");
        let is_sdk = std::fs::read_to_string(sdk.join("Cargo.toml"))
            .is_ok_and(|t| t.contains("name = \"sluice-sdk\""))
            && sdk.join("wit").join("plugin.wit").is_file();
        if is_sdk {
            let depth = abs
                .strip_prefix(ancestor)
                .map_or(0, |p| p.components().count());
            let rel = "../".repeat(depth) + "sdk";
            return format!("sluice-sdk = {{ path = \"{rel}\" }}");
        }
    }
    format!("sluice-sdk = \"{}\"", env!("CARGO_PKG_VERSION"))
}

fn cargo_toml(name: &str, kind: PluginKind, sdk: &str) -> String {
    format!(
        r#"[package]
name = "{name}"
description = "A Sluice {kind} plugin."
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
{sdk}
serde = {{ version = "1", features = ["derive"] }}
serde_json = "1"
schemars = "1"

[profile.release]
lto = true
codegen-units = 1
strip = "debuginfo"

# A workspace of its own, so the crate also builds inside another workspace's folder.
[workspace]
"#
    )
}

fn type_name(name: &str) -> String {
    name.split(['-', '_'])
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut c = p.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

fn lib_rs(name: &str, kind: PluginKind) -> String {
    let ty = type_name(name);
    let header = format!(
        "//! {name}: a Sluice {kind} plugin.\n//!\n//! Build: `cargo build --release --target wasm32-wasip2` \
         (the plugin is\n//! `target/wasm32-wasip2/release/{file}.wasm`). Test: `cargo test`. Try it:\n//! \
         `sluice plugin test target/wasm32-wasip2/release/{file}.wasm --kind {kind} --config '{{}}' --input records.jsonl`\n",
        file = name.replace('-', "_")
    );
    let body = match kind {
        PluginKind::Transform => TRANSFORM,
        PluginKind::Format => FORMAT,
        PluginKind::Partitioner => PARTITIONER,
    };
    header + &body.replace("PluginType", &ty)
}

const TRANSFORM: &str = r##"
use sluice_sdk::json::{self, Value};
use sluice_sdk::{Outcome, Record, Transform};

/// The plugin's config: the spec's `config:` (its JSON Schema is exported for `sluice validate`).
#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The field to add to every JSON record.
    #[serde(default = "default_field")]
    pub field: String,
    /// Its value.
    #[serde(default)]
    pub value: Value,
}

fn default_field() -> String {
    "tagged".into()
}

pub struct PluginType {
    config: Config,
}

impl Transform for PluginType {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        Ok(PluginType { config })
    }

    /// Adds `field: value` to each JSON object; other values go to the error policy.
    fn process(&mut self, record: &Record<'_>) -> Outcome {
        match json::parse(record.value) {
            Ok(Value::Object(mut obj)) => {
                obj.insert(self.config.field.clone(), self.config.value.clone());
                Outcome::json(&obj)
            }
            Ok(_) => Outcome::error("value is not a JSON object"),
            Err(e) => Outcome::Error(e),
        }
    }
}

sluice_sdk::export_transform!(PluginType);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_the_field() {
        let out = sluice_sdk::testing::transform::<PluginType>(
            serde_json::json!({"field": "env", "value": "prod"}),
            &[Record::new(br#"{"id":1}"#), Record::new(b"[]")],
        )
        .unwrap();
        assert_eq!(out[0], Outcome::Value(br#"{"id":1,"env":"prod"}"#.to_vec()));
        assert!(matches!(out[1], Outcome::Error(_)));
    }
}
"##;

const FORMAT: &str = r##"
use sluice_sdk::json::{self, Value};
use sluice_sdk::{Format, Outcome, Record};

/// The plugin's config: the spec's `config:` (its JSON Schema is exported for `sluice validate`).
#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The JSON field that holds a record's text.
    #[serde(default = "default_field")]
    pub field: String,
}

fn default_field() -> String {
    "line".into()
}

pub struct PluginType {
    config: Config,
}

impl Format for PluginType {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        Ok(PluginType { config })
    }

    /// A text record becomes `{"<field>": "<text>"}`.
    fn decode(&mut self, record: &Record<'_>) -> Outcome {
        match std::str::from_utf8(record.value) {
            Ok(text) => Outcome::json(&serde_json::json!({ self.config.field.as_str(): text })),
            Err(_) => Outcome::error("value is not UTF-8"),
        }
    }

    /// `{"<field>": "<text>"}` becomes the text again.
    fn encode(&mut self, record: &Record<'_>) -> Outcome {
        match json::parse(record.value) {
            Ok(doc) => match doc.get(&self.config.field).and_then(Value::as_str) {
                Some(text) => Outcome::Value(text.as_bytes().to_vec()),
                None => Outcome::error(format!("no string field `{}`", self.config.field)),
            },
            Err(e) => Outcome::Error(e),
        }
    }
}

sluice_sdk::export_format!(PluginType);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let config = serde_json::json!({});
        let decoded =
            sluice_sdk::testing::decode::<PluginType>(config.clone(), &[Record::new(b"hi")]).unwrap();
        assert_eq!(decoded, vec![Outcome::Value(br#"{"line":"hi"}"#.to_vec())]);
        let encoded = sluice_sdk::testing::encode_records::<PluginType>(
            config,
            &[Record::new(br#"{"line":"hi"}"#)],
        )
        .unwrap();
        assert_eq!(encoded, vec![Outcome::Value(b"hi".to_vec())]);
    }
}
"##;

const PARTITIONER: &str = r##"
use sluice_sdk::{Partitioner, Record, Route, hash, json};

/// The plugin's config: the spec's `config:` (its JSON Schema is exported for `sluice validate`).
#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The top-level JSON field whose value picks the partition.
    pub field: String,
}

pub struct PluginType {
    config: Config,
}

impl Partitioner for PluginType {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        Ok(PluginType { config })
    }

    /// The field's value is the partition key; its stable hash picks the partition index.
    fn partition(&mut self, record: &Record<'_>, partitions: Option<u32>) -> Result<Route, String> {
        let found = json::top_level_fields(record.value, &[&self.config.field])?;
        let raw = found[0].ok_or_else(|| format!("field `{}` is missing", self.config.field))?;
        let key = json::key_text(raw).into_owned();
        let index = partitions.map(|n| hash::bucket(hash::fnv1a64(key.as_bytes()), n));
        Ok(Route { key: Some(key), index, explicit_hash_key: None })
    }
}

sluice_sdk::export_partitioner!(PluginType);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_value_same_partition() {
        let routes = sluice_sdk::testing::partition::<PluginType>(
            serde_json::json!({"field": "user"}),
            &[Record::new(br#"{"user":"a"}"#), Record::new(br#"{"user":"a","x":1}"#)],
            Some(4),
        )
        .unwrap();
        assert_eq!(routes[0], routes[1]);
        assert_eq!(routes[0].as_ref().unwrap().key.as_deref(), Some("a"));
    }
}
"##;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(type_name("my-cool_plugin"), "MyCoolPlugin");
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            new_plugin("1bad", PluginKind::Transform, dir.path()),
            Err(ScaffoldError::BadName(_))
        ));
    }

    #[test]
    fn uses_the_repo_sdk_by_path() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let dep = sdk_dependency(&repo.join("plugins").join("x"));
        assert_eq!(dep, "sluice-sdk = { path = \"../../sdk\" }");
        let elsewhere = tempfile::tempdir().unwrap();
        assert!(sdk_dependency(&elsewhere.path().join("x")).contains("\"0.1"));
    }
}
