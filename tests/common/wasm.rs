//! Builds the plugins in `plugins/` to `wasm32-wasip2`, once per test process, and says where the
//! `.wasm` files are. Parallel test binaries share the build: cargo's own lock on the target
//! directory serialises them, and the second build finds everything fresh.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The repository root (the runtime crate's parent).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the runtime crate lives inside the repository")
        .to_path_buf()
}

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
