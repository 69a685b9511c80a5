# Sourced by scripts/test.sh and the demo scripts: what a fresh machine needs to build Sluice.
# The wasm32-wasip2 target (plugins), librdkafka's build tools (rdkafka's cmake-build), and the
# Prometheus server the operations tests scrape with.

rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2

sluice_missing=()
command -v cmake >/dev/null || sluice_missing+=(cmake)
command -v pkg-config >/dev/null || sluice_missing+=(pkg-config)
[ -e /usr/include/curl/curl.h ] || [ -e /usr/include/x86_64-linux-gnu/curl/curl.h ] || sluice_missing+=(libcurl4-openssl-dev)
[ -e /usr/include/openssl/ssl.h ] || sluice_missing+=(libssl-dev)
[ -e /usr/include/sasl/sasl.h ] || sluice_missing+=(libsasl2-dev)
# The Prometheus server scrapes `sluice run --http` in tests/ops.rs (started there, not as a service).
command -v prometheus >/dev/null || sluice_missing+=(prometheus)
if [ ${#sluice_missing[@]} -gt 0 ]; then
  echo "==> installing ${sluice_missing[*]}"
  sluice_sudo=""
  [ "$(id -u)" -ne 0 ] && sluice_sudo=sudo
  $sluice_sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sluice_sudo apt-get install -y -qq "${sluice_missing[@]}" >/dev/null
fi

# componentize-py (PyPI) for the Python plugin tests, once into the cache.
SLUICE_PY_VENV=${SLUICE_CACHE:-$HOME/.cache/sluice}/componentize-py-venv
if ! "$SLUICE_PY_VENV/bin/componentize-py" --version 2>/dev/null | grep -q '0\.25\.1'; then
  echo "==> installing componentize-py into $SLUICE_PY_VENV"
  python3 -m venv "$SLUICE_PY_VENV"
  "$SLUICE_PY_VENV/bin/pip" install -q --disable-pip-version-check componentize-py==0.25.1
fi
export SLUICE_COMPONENTIZE_PY="$SLUICE_PY_VENV/bin/componentize-py"

# The demos' build: the mask-fields and field-partitioner plugins into .sluice/plugins (where the
# example specs find them) and the sluice binary; sets SLUICE to the binary. Run from the root.
build_demo() {
  echo "==> building the plugins (wasm32-wasip2) and sluice"
  cargo build --quiet --release --target wasm32-wasip2 \
    --manifest-path plugins/Cargo.toml --target-dir "$CARGO_TARGET_DIR/wasm-plugins" \
    -p mask-fields -p field-partitioner
  mkdir -p .sluice/plugins
  cp "$CARGO_TARGET_DIR"/wasm-plugins/wasm32-wasip2/release/{mask_fields,field_partitioner}.wasm .sluice/plugins/
  cargo build --quiet -p sluice-runtime
  SLUICE="$CARGO_TARGET_DIR/debug/sluice"
}
