//! Builds the plugins in `plugins/` to `wasm32-wasip2`, once per test process, and says where the
//! `.wasm` files are. Parallel test binaries share the build: cargo's own lock on the target
//! directory serialises them, and the second build finds everything fresh.

use std::path::{Path, PathBuf};

use std::process::Command;
use std::sync::OnceLock;

use crate::repo_root;

/// The target directory of the plugin build: `$CARGO_TARGET_DIR/wasm-plugins` or
/// `<repo>/target/wasm-plugins`. A separate directory, because the outer `cargo test` holds the
/// lock on the main one.
pub fn plugin_target_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|t| {
            if t.is_absolute() {
                t
            } else {
                repo_root().join(t)
            }
        })
        .unwrap_or_else(|| repo_root().join("target"));
    target.join("wasm-plugins")
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

fn ensure_wasm_target() {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    match installed {
        Ok(out) if String::from_utf8_lossy(&out.stdout).contains("wasm32-wasip2") => {}
        Ok(_) => {
            let status = Command::new("rustup")
                .args(["target", "add", "wasm32-wasip2"])
                .status()
                .expect("run rustup target add wasm32-wasip2");
            assert!(status.success(), "rustup target add wasm32-wasip2 failed");
        }
        // No rustup: the toolchain must already have the target; cargo will say if not.
        Err(_) => {}
    }
}

/// Builds a cargo project of plugins (a workspace or a single crate) to wasm32-wasip2 in
/// release mode into `target_dir`; returns the folder with the `.wasm` files.
pub fn build_plugins(manifest: &Path, target_dir: &Path) -> PathBuf {
    ensure_wasm_target();
    let out = Command::new(cargo())
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(manifest)
        .arg("--target-dir")
        .arg(target_dir)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .expect("run cargo to build the wasm plugins");
    assert!(
        out.status.success(),
        "building {} for wasm32-wasip2 failed:\n{}",
        manifest.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    target_dir.join("wasm32-wasip2").join("release")
}

/// The folder holding `mask_fields.wasm`, `filter.wasm`, ... built from the current sources.
pub fn plugins_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        build_plugins(
            &repo_root().join("plugins").join("Cargo.toml"),
            &plugin_target_dir(),
        )
    })
}

/// The path of one built plugin, e.g. `plugin("mask-fields")`.
pub fn plugin(name: &str) -> PathBuf {
    let path = plugins_dir().join(format!("{}.wasm", name.replace('-', "_")));
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

/// componentize-py, as `scripts/test.sh` installs it (`$SLUICE_COMPONENTIZE_PY`, else the cache).
pub fn componentize_py() -> PathBuf {
    let path = std::env::var_os("SLUICE_COMPONENTIZE_PY")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("SLUICE_CACHE")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                        .join(".cache/sluice")
                });
            cache.join("componentize-py-venv/bin/componentize-py")
        });
    assert!(
        path.is_file(),
        "componentize-py not found at {} (scripts/test.sh installs it)",
        path.display()
    );
    path
}

/// Builds the Python plugin project in `dir` (module `app`) to `out` for `world`, with the
/// guest library `sdk/python` on the path, unless `out` is newer than every source.
pub fn build_python_plugin(dir: &Path, world: &str, out: &Path) -> PathBuf {
    let sources = [
        dir.join("app.py"),
        repo_root().join("sdk/python/sluice_plugin.py"),
        repo_root().join("sdk/wit/plugin.wit"),
    ];
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let fresh =
        modified(out).is_some_and(|built| sources.iter().all(|s| modified(s) < Some(built)));
    if !fresh {
        std::fs::create_dir_all(out.parent().expect("a file")).expect("create the output folder");
        let run = Command::new(componentize_py())
            .arg("-d")
            .arg(repo_root().join("sdk/wit"))
            .args(["-w", world, "componentize", "app", "-p"])
            .arg(dir)
            .arg("-p")
            .arg(repo_root().join("sdk/python"))
            .arg("-o")
            .arg(out)
            .output()
            .expect("run componentize-py");
        assert!(
            run.status.success(),
            "componentize-py failed:\n{}",
            String::from_utf8_lossy(&run.stderr)
        );
    }
    out.to_path_buf()
}
