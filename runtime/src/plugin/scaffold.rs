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
/// `test_app.py`, and `build.sh`, which builds `<name>.wasm` (`-` becomes `_`) against the WIT of this binary
/// (written under `sdk_cache`). Python plugins are transforms or partitioners.
pub fn new_python_plugin(
    name: &str,
    kind: PluginKind,
    dir: &Path,
    sdk_cache: &Path,
) -> Result<PathBuf, ScaffoldError> {
    // Templates from `templates/`, with `{{name}}` replaced by the plugin's name and `{{file}}`
    // by its file name (`-` becomes `_`, as in the `.wasm` that build.sh writes); a name holds
    // no braces, so nothing replaced is replaced again.
    let (template, test, world) = match kind {
        PluginKind::Partitioner => (
            include_str!("templates/partitioner.py.tmpl"),
            include_str!("templates/test_partitioner.py.tmpl"),
            "partitioner",
        ),
        PluginKind::Transform => (
            include_str!("templates/transform.py.tmpl"),
            include_str!("templates/test_transform.py.tmpl"),
            "transform",
        ),
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
        (
            "app.py",
            template
                .replace("{{file}}", &file)
                .replace("{{name}}", name),
        ),
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

/// The crate's `src/lib.rs`: a header, then the kind's template from `templates/` (data the
/// scaffold writes, not code of ours) with `PluginType` replaced by the plugin's type name.
fn lib_rs(name: &str, kind: PluginKind) -> String {
    let ty = type_name(name);
    let header = format!(
        "//! {name}: a Sluice {kind} plugin.\n//!\n//! Build: `cargo build --release --target wasm32-wasip2` \
         (the plugin is\n//! `target/wasm32-wasip2/release/{file}.wasm`). Test: `cargo test`. Try it:\n//! \
         `sluice plugin test target/wasm32-wasip2/release/{file}.wasm --kind {kind} --config '{{}}' --input records.jsonl`\n\n",
        file = name.replace('-', "_")
    );
    let body = match kind {
        PluginKind::Transform => include_str!("templates/transform.rs.tmpl"),
        PluginKind::Format => include_str!("templates/format.rs.tmpl"),
        PluginKind::Partitioner => include_str!("templates/partitioner.rs.tmpl"),
    };
    header + &body.replace("PluginType", &ty)
}

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

    #[test]
    fn a_python_plugin_names_the_wasm_its_build_writes() {
        let dir = tempfile::tempdir().unwrap();
        for kind in [PluginKind::Transform, PluginKind::Partitioner] {
            // Words a template once used as placeholders stay as they are.
            let name = format!("my-NAME-FILE-{kind}");
            let root = new_python_plugin(&name, kind, dir.path(), dir.path()).unwrap();
            let read = |f: &str| std::fs::read_to_string(root.join(f)).unwrap();
            let wasm = format!("my_NAME_FILE_{kind}.wasm");
            assert!(read("build.sh").contains(&format!("-o {wasm}")));
            let app = read("app.py");
            assert!(app.starts_with(&format!("\"\"\"{name}: ")), "{app}");
            assert!(
                app.contains(&format!("sluice plugin test {wasm} ")),
                "{app}"
            );
        }
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
