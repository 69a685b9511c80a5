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
    #[error("{0}")]
    Unsupported(String),
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The SDK's source, embedded so that `sluice plugin new` works in any folder: the scaffolded
/// crate depends on exactly the SDK (and WIT) this binary runs, written once under the cache.
/// A test checks that this list is every file of `sdk/`.
const SDK_FILES: &[(&str, &str)] = &[
    ("Cargo.toml", include_str!("../../../sdk/Cargo.toml")),
    (
        "wit/plugin.wit",
        include_str!("../../../sdk/wit/plugin.wit"),
    ),
    ("src/lib.rs", include_str!("../../../sdk/src/lib.rs")),
    ("src/__rt.rs", include_str!("../../../sdk/src/__rt.rs")),
    ("src/alloc.rs", include_str!("../../../sdk/src/alloc.rs")),
    (
        "src/bindings.rs",
        include_str!("../../../sdk/src/bindings.rs"),
    ),
    ("src/codec.rs", include_str!("../../../sdk/src/codec.rs")),
    ("src/hash.rs", include_str!("../../../sdk/src/hash.rs")),
    ("src/json.rs", include_str!("../../../sdk/src/json.rs")),
    (
        "src/testing.rs",
        include_str!("../../../sdk/src/testing.rs"),
    ),
    (
        "python/sluice_plugin.py",
        include_str!("../../../sdk/python/sluice_plugin.py"),
    ),
    (
        "wire/Cargo.toml",
        include_str!("../../../sdk/wire/Cargo.toml"),
    ),
    (
        "wire/src/lib.rs",
        include_str!("../../../sdk/wire/src/lib.rs"),
    ),
];

/// The version of componentize-py the Python scaffold and the tests build with.
pub const COMPONENTIZE_PY: &str = "componentize-py==0.25.1";

/// Creates the crate `dir/name` for a plugin of `kind` and returns its path. Inside a checkout of
/// the Sluice repository whose WIT is this binary's, the crate depends on that checkout's `sdk/`
/// by path; anywhere else on the SDK embedded in this binary, written once under `sdk_cache`
/// (see [`sdk_dir`]). Build it with `cargo build --release --target wasm32-wasip2`; test it with
/// `cargo test`.
pub fn new_plugin(
    name: &str,
    kind: PluginKind,
    dir: &Path,
    sdk_cache: &Path,
) -> Result<PathBuf, ScaffoldError> {
    let root = prepare_root(name, dir)?;
    std::fs::create_dir_all(root.join("src")).map_err(io(&root))?;
    let sdk = match checkout_sdk(&root) {
        Some(rel) => rel,
        None => {
            let abs = std::path::absolute(sdk_cache).map_err(io(sdk_cache))?;
            write_sdk(&abs)?.display().to_string()
        }
    };
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

/// Creates the Python plugin project `dir/name` (componentize-py): `app.py` with a working
/// example, `sluice_plugin.py` (the guest library that hides the batch encoding), a native
/// `test_app.py`, and `build.sh`, which builds `<name>.wasm` against the WIT of this binary
/// (written under `sdk_cache`). Python plugins are transforms or partitioners.
pub fn new_python_plugin(
    name: &str,
    kind: PluginKind,
    dir: &Path,
    sdk_cache: &Path,
) -> Result<PathBuf, ScaffoldError> {
    let (template, test, world) = match kind {
        PluginKind::Partitioner => (PY_PARTITIONER, PY_PARTITIONER_TEST, "partitioner"),
        PluginKind::Transform => (PY_TRANSFORM, PY_TRANSFORM_TEST, "transform"),
        PluginKind::Format => {
            return Err(ScaffoldError::Unsupported(
                "Python plugins are transforms or partitioners; write a format in Rust".into(),
            ));
        }
    };
    let root = prepare_root(name, dir)?;
    let abs = std::path::absolute(sdk_cache).map_err(io(sdk_cache))?;
    let sdk = write_sdk(&abs)?;
    let library = SDK_FILES
        .iter()
        .find(|(f, _)| *f == "python/sluice_plugin.py")
        .map_or("", |(_, text)| text);
    let file = name.replace('-', "_");
    let build = format!(
        "#!/bin/sh\n# Builds {file}.wasm with componentize-py ({COMPONENTIZE_PY} from PyPI; set\n\
         # COMPONENTIZE_PY to its path if it is not on PATH), against the plugin contract (WIT) of\n\
         # the sluice that made this project.\nset -e\ncd \"$(dirname \"$0\")\"\n\
         \"${{COMPONENTIZE_PY:-componentize-py}}\" -d '{wit}' -w {world} componentize app -p . -o {file}.wasm\n\
         echo \"built $(pwd)/{file}.wasm\"\n",
        wit = sdk.join("wit").display(),
    );
    let files = [
        ("app.py", template.replace("NAME", name)),
        ("test_app.py", test.to_string()),
        ("sluice_plugin.py", library.to_string()),
        ("build.sh", build),
        (".gitignore", "*.wasm\n__pycache__/\n".to_string()),
    ];
    for (file, text) in files {
        let path = root.join(file);
        std::fs::write(&path, text).map_err(io(&path))?;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let path = root.join("build.sh");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .map_err(io(&path))?;
    }
    Ok(root)
}

/// Checks `name` and creates the empty folder `dir/name`.
fn prepare_root(name: &str, dir: &Path) -> Result<PathBuf, ScaffoldError> {
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
    std::fs::create_dir_all(&root).map_err(io(&root))?;
    Ok(root)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ScaffoldError + use<> {
    let path = path.to_path_buf();
    move |source| ScaffoldError::Io { path, source }
}

/// Where `sluice plugin new` keeps the embedded SDK: `sdk/` in Sluice's cache folder (see
/// [`super::engine::cache_root`]).
pub fn sdk_dir() -> Option<PathBuf> {
    super::engine::cache_root().map(|root| root.join("sdk"))
}

/// Writes the embedded SDK to `cache/sluice-sdk-<version>-<content hash>` unless it is there
/// already, and returns that folder. The name changes with the content, so a folder once complete
/// is never rewritten; it is made complete in a temporary folder and renamed into place, so two
/// scaffolds at once, or one killed midway, never leave a half-written SDK behind.
fn write_sdk(cache: &Path) -> Result<PathBuf, ScaffoldError> {
    // The pipeline's stable hash (FNV-1a) over names and contents: the same in every Rust
    // version, unlike `DefaultHasher` or the `Hash` impls of `str`.
    let mut content = Vec::new();
    for (file, text) in SDK_FILES {
        for part in [file.as_bytes(), text.as_bytes()] {
            content.extend_from_slice(part);
            content.push(0);
        }
    }
    let dest = cache.join(format!(
        "sluice-sdk-{}-{:016x}",
        env!("CARGO_PKG_VERSION"),
        crate::pipeline::partition::stable_hash(&content)
    ));
    if dest.join("Cargo.toml").is_file() {
        return Ok(dest);
    }
    std::fs::create_dir_all(cache).map_err(io(cache))?;
    let tmp = tempfile::Builder::new()
        .prefix(".sluice-sdk-")
        .tempdir_in(cache)
        .map_err(io(cache))?;
    for (file, text) in SDK_FILES {
        let path = tmp.path().join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::write(&path, text).map_err(io(&path))?;
    }
    match std::fs::rename(tmp.path(), &dest) {
        Ok(()) => {
            // Renamed away: nothing left for the guard to delete.
            let _ = tmp.keep();
            Ok(dest)
        }
        // Another scaffold finished first: its copy is the same content.
        Err(_) if dest.join("Cargo.toml").is_file() => Ok(dest),
        Err(e) => Err(io(&dest)(e)),
    }
}

/// The relative path to `sdk/` when `crate_dir` is inside a Sluice checkout whose WIT is the one
/// this binary runs (so plugins in the repository build against the SDK being worked on).
fn checkout_sdk(crate_dir: &Path) -> Option<String> {
    let abs = std::path::absolute(crate_dir).ok()?;
    let embedded_wit = SDK_FILES.iter().find(|(f, _)| *f == "wit/plugin.wit")?.1;
    for ancestor in abs.ancestors().skip(1) {
        let sdk = ancestor.join("sdk");
        let is_sdk = std::fs::read_to_string(sdk.join("Cargo.toml"))
            .is_ok_and(|t| t.contains("name = \"sluice-sdk\""));
        if is_sdk {
            let same_wit = std::fs::read_to_string(sdk.join("wit").join("plugin.wit"))
                .is_ok_and(|wit| wit == embedded_wit);
            if !same_wit {
                return None;
            }
            let depth = abs
                .strip_prefix(ancestor)
                .map_or(0, |p| p.components().count());
            return Some("../".repeat(depth) + "sdk");
        }
    }
    None
}

/// The crate's manifest; `sdk` is the path of the SDK it builds against.
fn cargo_toml(name: &str, kind: PluginKind, sdk: &str) -> String {
    // A TOML basic string: escape what a path could hold.
    let sdk = sdk.replace('\\', "\\\\").replace('"', "\\\"");
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
sluice-sdk = {{ path = "{sdk}" }}
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

const PY_PARTITIONER: &str = r#""""NAME: a Sluice partitioner plugin in Python.

Build: `./build.sh` (componentize-py). Test: `python3 -m unittest`. Try it:
`sluice plugin test NAME.wasm --kind partitioner --config '{"field": "user"}' --partitions 8 --input records.jsonl`
"""

import sluice_plugin as sp


class Plugin(sp.Partitioner):
    # The JSON Schema of the spec's `config:` (checked by `sluice validate`).
    CONFIG_SCHEMA = {
        "type": "object",
        "additionalProperties": False,
        "required": ["field"],
        "properties": {
            "field": {"type": "string", "description": "The JSON field whose value picks the partition."},
        },
    }

    def __init__(self, config):
        self.field = config["field"]

    def partition(self, record, partitions):
        """The field's value is the partition key; its stable hash picks the partition index."""
        doc = record.json()
        if not isinstance(doc, dict) or self.field not in doc:
            raise sp.PluginError(f"field `{self.field}` is missing")
        key = sp.key_text(doc[self.field])
        return sp.Route(key=key, index=sp.bucket(sp.fnv1a64(key.encode("utf-8")), partitions))


PartitionerPlugin = sp.export_partitioner(Plugin)
"#;

const PY_PARTITIONER_TEST: &str = r#"import unittest

import app
import sluice_plugin as sp


class PluginTest(unittest.TestCase):
    def test_same_value_same_partition(self):
        routes = sp.partition_values(
            app.Plugin, {"field": "user"}, [{"user": "a"}, {"user": "a", "x": 1}, {}], 4
        )
        self.assertEqual(routes[0], routes[1])
        self.assertEqual(routes[0].key, "a")
        self.assertIsInstance(routes[2], sp.PluginError)


if __name__ == "__main__":
    unittest.main()
"#;

const PY_TRANSFORM: &str = r#""""NAME: a Sluice transform plugin in Python.

Build: `./build.sh` (componentize-py). Test: `python3 -m unittest`. Try it:
`sluice plugin test NAME.wasm --kind transform --config '{"field": "env", "value": "prod"}' --input records.jsonl`
"""

import sluice_plugin as sp


class Plugin(sp.Transform):
    # The JSON Schema of the spec's `config:` (checked by `sluice validate`).
    CONFIG_SCHEMA = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "field": {"type": "string", "default": "tagged", "description": "The field to add."},
            "value": {"description": "Its value."},
        },
    }

    def __init__(self, config):
        self.field = config.get("field", "tagged")
        self.value = config.get("value")

    def process(self, record):
        """Adds `field: value` to each JSON object; other values go to the error policy.
        Return sp.KEEP, None (drop), a value, an sp.Output, or a list of them."""
        doc = record.json()
        if not isinstance(doc, dict):
            raise sp.PluginError("value is not a JSON object")
        doc[self.field] = self.value
        return doc


TransformPlugin = sp.export_transform(Plugin)
"#;

const PY_TRANSFORM_TEST: &str = r#"import unittest

import app
import sluice_plugin as sp


class PluginTest(unittest.TestCase):
    def test_adds_the_field(self):
        out = sp.transform_values(app.Plugin, {"field": "env", "value": "prod"}, [{"id": 1}, []])
        self.assertEqual(out[0], [b'{"id":1,"env":"prod"}'])
        self.assertIsInstance(out[1], sp.PluginError)


if __name__ == "__main__":
    unittest.main()
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(type_name("my-cool_plugin"), "MyCoolPlugin");
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            new_plugin("1bad", PluginKind::Transform, dir.path(), dir.path()),
            Err(ScaffoldError::BadName(_))
        ));
    }

    fn repo() -> &'static Path {
        Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
    }

    #[test]
    fn uses_the_repo_sdk_by_path_inside_a_checkout() {
        let dep = checkout_sdk(&repo().join("plugins").join("x"));
        assert_eq!(dep.as_deref(), Some("../../sdk"));
        let elsewhere = tempfile::tempdir().unwrap();
        assert_eq!(checkout_sdk(&elsewhere.path().join("x")), None);
    }

    #[test]
    fn embeds_every_file_of_the_sdk() {
        let sdk = repo().join("sdk");
        let mut on_disk = Vec::new();
        for sub in ["src", "wit", "python", "wire/src"] {
            for entry in std::fs::read_dir(sdk.join(sub)).unwrap() {
                let entry = entry.unwrap();
                // Files only: Python leaves `__pycache__/` beside the guest library.
                if entry.file_type().unwrap().is_file() {
                    let name = entry.file_name().into_string().unwrap();
                    on_disk.push(format!("{sub}/{name}"));
                }
            }
        }
        on_disk.push("Cargo.toml".into());
        on_disk.push("wire/Cargo.toml".into());
        on_disk.sort();
        let mut embedded: Vec<_> = SDK_FILES.iter().map(|(f, _)| f.to_string()).collect();
        embedded.sort();
        assert_eq!(
            embedded, on_disk,
            "update SDK_FILES when sdk/ gains or loses a file"
        );
    }

    #[test]
    fn sdk_version_is_the_workspace_version_and_wit_version_is_the_hosts() {
        let manifest = SDK_FILES[0].1;
        let version = format!("version = \"{}\"", env!("CARGO_PKG_VERSION"));
        assert!(
            manifest.contains(&version),
            "sdk/Cargo.toml must say {version}"
        );
        let wit = SDK_FILES[1].1;
        assert_eq!(super::super::WIT_VERSION, sluice_wire::WIT_VERSION);
        let package = format!("package sluice:plugin@{};", super::super::WIT_VERSION);
        assert!(
            wit.contains(&package),
            "sdk/wit/plugin.wit must say {package}"
        );
    }

    #[test]
    fn the_sdk_is_written_once_and_reused() {
        let cache = tempfile::tempdir().unwrap();
        let first = write_sdk(cache.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(first.join("wit/plugin.wit")).unwrap(),
            SDK_FILES[1].1
        );
        let modified = std::fs::metadata(first.join("src/lib.rs"))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(write_sdk(cache.path()).unwrap(), first);
        let again = std::fs::metadata(first.join("src/lib.rs"))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(modified, again);
        // Only the SDK folder is left: no temporary folder.
        assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 1);
    }
}
