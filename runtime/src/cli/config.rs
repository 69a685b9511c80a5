//! The host's own settings, independent of any spec: `sluice run --config sluice.yaml`.
//!
//! ```yaml
//! http:
//!   address: 127.0.0.1:9464      # as --http / SLUICE_HTTP (which win when given)
//!   token_env: SLUICE_HTTP_TOKEN # the variable holding the control endpoints' bearer token
//! ```

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;
use serde::Deserialize;

/// The environment variable holding the bearer token when the config names none.
pub const DEFAULT_TOKEN_ENV: &str = "SLUICE_HTTP_TOKEN";

/// A `--config` file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// The operations API (health, readiness, metrics, pipelines).
    pub http: Option<HttpConfig>,
}

/// `http:` of a `--config` file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Where to serve, e.g. `127.0.0.1:9464`; `--http` and `SLUICE_HTTP` take precedence.
    pub address: SocketAddr,
    /// The environment variable holding the bearer token that protects pause, resume and
    /// restart (the token itself never goes in a file). Default `SLUICE_HTTP_TOKEN`, optional;
    /// a variable named here must be set.
    pub token_env: Option<String>,
}

impl HostConfig {
    /// Reads a config file; errors name the file, line and column.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the config {}", path.display()))?;
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        serde_yaml::from_str(&text).map_err(|e| match e.location() {
            Some(l) => anyhow::anyhow!(
                "{}:{}:{}: {}",
                path.display(),
                l.line(),
                l.column(),
                strip_location(&e.to_string())
            ),
            None => anyhow::anyhow!("{}: {e}", path.display()),
        })
    }
}

/// serde_yaml's messages end with " at line L column C"; the location is printed first instead.
fn strip_location(message: &str) -> &str {
    message
        .rfind(" at line ")
        .map_or(message, |i| &message[..i])
}

/// The address and token the operations API uses: `--http`/`SLUICE_HTTP` first, then the
/// config's `http.address`; the token from the config's `token_env` (which must be set) or
/// `SLUICE_HTTP_TOKEN`.
pub fn http_settings(
    flag: Option<SocketAddr>,
    config: Option<&HttpConfig>,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<Option<(SocketAddr, Option<String>)>> {
    let Some(address) = flag.or(config.map(|c| c.address)) else {
        return Ok(None);
    };
    let token = match config.and_then(|c| c.token_env.as_deref()) {
        Some(name) => Some(env(name).with_context(|| {
            format!("http.token_env names `{name}`, which is not set: the control endpoints would be unprotected")
        })?),
        None => env(DEFAULT_TOKEN_ENV),
    };
    Ok(Some((address, token)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(yaml: &str) -> HttpConfig {
        serde_yaml::from_str::<HostConfig>(yaml)
            .expect("config")
            .http
            .expect("http")
    }

    #[test]
    fn the_flag_wins_and_the_token_comes_from_the_named_variable() {
        let c = http("http: {address: 127.0.0.1:9000, token_env: MY_TOKEN}");
        let env = |k: &str| (k == "MY_TOKEN").then(|| "t0k".to_string());
        let (addr, token) = http_settings(None, Some(&c), &env)
            .expect("ok")
            .expect("served");
        assert_eq!((addr.port(), token.as_deref()), (9000, Some("t0k")));
        let flag = "127.0.0.1:9001".parse().ok();
        let (addr, _) = http_settings(flag, Some(&c), &env)
            .expect("ok")
            .expect("served");
        assert_eq!(addr.port(), 9001);
        let unset = |_: &str| None;
        let e = http_settings(None, Some(&c), &unset).expect_err("unset token variable");
        assert!(
            e.to_string().contains("`MY_TOKEN`, which is not set"),
            "{e}"
        );
        assert!(http_settings(None, None, &unset).expect("ok").is_none());
    }

    #[test]
    fn a_bad_key_is_located() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("sluice.yaml");
        std::fs::write(&path, "http:\n  adress: 127.0.0.1:9000\n").expect("write");
        let e = HostConfig::load(&path)
            .expect_err("unknown key")
            .to_string();
        assert!(
            e.contains("sluice.yaml:2:3: http: unknown field `adress`"),
            "{e}"
        );
    }
}
