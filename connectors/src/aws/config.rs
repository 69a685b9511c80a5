use std::path::PathBuf;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::ConnectorError;
use crate::secret::Secret;
use crate::units::{Dur, secs};

/// How to reach AWS (or a local emulator).
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AwsConfig {
    /// The region, e.g. `us-east-1`. Default: from the environment or profile (`us-east-1`
    /// when only an `endpoint` is given).
    pub region: Option<String>,
    /// An endpoint URL that replaces the service's, e.g. `http://127.0.0.1:4567` for an
    /// emulator or a VPC endpoint.
    pub endpoint: Option<String>,
    /// Where credentials come from.
    #[serde(default)]
    pub credentials: CredentialsConfig,
    /// How long a call may take before it fails as a (retriable) timeout.
    #[serde(default)]
    pub timeouts: AwsTimeouts,
}

/// Time limits of every AWS call. A call that runs out of time fails as retriable and goes
/// through the connector's own retry policy; in the connectors the SDK does not retry on its
/// own (the DynamoDB offset store keeps the SDK's standard retries). A Kinesis
/// SubscribeToShard call is done once its subscription is open: the event stream that follows
/// (up to 5 minutes) is not cut by these limits.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AwsTimeouts {
    /// Opening a connection (TCP and TLS).
    pub connect: Dur,
    /// One HTTP request and its response, from sending to the last byte read.
    pub attempt: Dur,
    /// The whole call, including credential look-ups and request signing.
    pub operation: Dur,
}

impl Default for AwsTimeouts {
    fn default() -> Self {
        Self {
            connect: secs::<5>(),
            attempt: secs::<30>(),
            operation: secs::<60>(),
        }
    }
}

impl AwsTimeouts {
    fn sdk(&self) -> TimeoutConfig {
        TimeoutConfig::builder()
            .connect_timeout(self.connect.0)
            .operation_attempt_timeout(self.attempt.0)
            .operation_timeout(self.operation.0)
            .build()
    }

    /// Checks beyond the schema, without I/O; `at` is the path of the `aws` block.
    pub fn check(&self, at: &str) -> Vec<crate::ConfigIssue> {
        let mut issues = Vec::new();
        for (name, d) in [
            ("connect", self.connect),
            ("attempt", self.attempt),
            ("operation", self.operation),
        ] {
            if d.0.is_zero() {
                issues.push(crate::ConfigIssue::new(
                    format!("{at}/timeouts/{name}"),
                    "must be more than 0s",
                ));
            }
        }
        if self.operation.0 < self.attempt.0 {
            issues.push(crate::ConfigIssue::new(
                format!("{at}/timeouts/operation"),
                "must be at least `attempt` (one call is one attempt)",
            ));
        }
        issues
    }
}

/// A credentials provider, as in Flink's `aws.credentials.provider`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(tag = "provider", rename_all = "snake_case", deny_unknown_fields)]
pub enum CredentialsConfig {
    /// The standard chain: environment, profile, web identity, container and instance roles.
    #[default]
    Auto,
    /// Keys given in the spec (write them as `${VAR}`).
    Basic {
        /// The access key id.
        access_key_id: String,
        /// The secret access key.
        secret_access_key: Secret,
        /// A session token, for temporary credentials.
        session_token: Option<Secret>,
    },
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`.
    Env,
    /// A profile of the shared credentials file.
    Profile {
        /// The credentials file. Default: `~/.aws/credentials`.
        path: Option<PathBuf>,
        /// The profile. Default: `default` (or `AWS_PROFILE`).
        name: Option<String>,
    },
    /// Assume a role with credentials from a nested `source` provider.
    AssumeRole {
        /// The role's ARN.
        role_arn: String,
        /// The session name.
        #[serde(default = "default_session_name")]
        session_name: String,
        /// The external id the role's trust policy requires.
        external_id: Option<Secret>,
        /// Credentials used to assume the role.
        #[serde(default)]
        source: Box<CredentialsConfig>,
    },
    /// OIDC web identity (Kubernetes service accounts, EKS).
    WebIdentity {
        /// The file holding the token.
        token_file: PathBuf,
        /// The role's ARN.
        role_arn: String,
        /// The session name.
        #[serde(default = "default_session_name")]
        session_name: String,
    },
}

fn default_session_name() -> String {
    "sluice".into()
}

impl AwsConfig {
    /// The region the clients use.
    pub fn region(&self) -> Option<String> {
        self.region
            .clone()
            .or_else(|| self.endpoint.as_ref().map(|_| "us-east-1".to_string()))
    }

    /// Builds the SDK configuration (resolves credentials lazily, on first use) for callers
    /// without a retry policy of their own: the `timeouts` apply, and the SDK retries throttling
    /// and transient failures itself (its standard mode, 3 attempts unless `AWS_MAX_ATTEMPTS`).
    pub async fn sdk_config(&self) -> Result<SdkConfig, ConnectorError> {
        self.load(None).await
    }

    /// As [`Self::sdk_config`], for the connectors, which retry through their own policies: the
    /// SDK never retries, so each SDK call is one attempt and a policy's `max_retries` is the
    /// real number of retries.
    pub async fn sdk_config_without_sdk_retries(&self) -> Result<SdkConfig, ConnectorError> {
        self.load(Some(RetryConfig::disabled())).await
    }

    async fn load(&self, retry: Option<RetryConfig>) -> Result<SdkConfig, ConnectorError> {
        let mut loader =
            aws_config::defaults(BehaviorVersion::latest()).timeout_config(self.timeouts.sdk());
        if let Some(r) = retry {
            loader = loader.retry_config(r);
        }
        if let Some(r) = self.region() {
            loader = loader.region(Region::new(r));
        }
        if let Some(e) = &self.endpoint {
            loader = loader.endpoint_url(e);
        }
        if let Some(p) = self.credentials.provider(self.region()).await? {
            loader = loader.credentials_provider(p);
        }
        let sdk = loader.load().await;
        let env = |name: &str| std::env::var(name).ok();
        // Only the service clients change: credential providers keep the default client.
        Ok(match self.plain_http_client(&env) {
            Some(client) => sdk.into_builder().http_client(client).build(),
            None => sdk,
        })
    }

    /// For an `http://` endpoint (an emulator, a plain-HTTP VPC endpoint) reached without a
    /// proxy: the default HTTP client with an empty TLS trust store. The default client loads and
    /// parses the system's whole certificate store for every client it makes (about 20 M
    /// instructions, a third of a run's start-up), which a plain-HTTP endpoint never uses.
    /// `None` (the default client) for `https://` endpoints, AWS itself, and whenever a proxy
    /// variable is set (a proxy may need TLS).
    fn plain_http_client(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Option<aws_smithy_runtime_api::client::http::SharedHttpClient> {
        use aws_smithy_http_client::tls::{self, TlsContext, TrustStore};
        let endpoint = self.endpoint.as_deref()?;
        let plain = endpoint
            .get(..7)
            .is_some_and(|s| s.eq_ignore_ascii_case("http://"));
        let proxied = PROXY_VARS
            .iter()
            .any(|v| env(v).is_some_and(|x| !x.is_empty()));
        if !plain || proxied {
            return None;
        }
        let context = TlsContext::builder()
            .with_trust_store(TrustStore::empty())
            .build()
            .ok()?;
        Some(
            aws_smithy_http_client::Builder::new()
                .tls_provider(tls::Provider::Rustls(
                    tls::rustls_provider::CryptoMode::AwsLc,
                ))
                .tls_context(context)
                .build_https(),
        )
    }
}

/// The variables the default HTTP client reads its proxy from.
const PROXY_VARS: [&str; 6] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
];

impl CredentialsConfig {
    /// The provider, or `None` for the default chain.
    async fn provider(
        &self,
        region: Option<String>,
    ) -> Result<Option<SharedCredentialsProvider>, ConnectorError> {
        use aws_config::environment::EnvironmentVariableCredentialsProvider;
        use aws_config::profile::ProfileFileCredentialsProvider;
        // Deprecated aliases of aws-runtime's `EnvConfigFile*`, kept so that aws-runtime need
        // not become a direct dependency; they name the same types.
        #[allow(deprecated)]
        use aws_config::profile::profile_file::{ProfileFileKind, ProfileFiles};
        use aws_config::sts::AssumeRoleProvider;
        use aws_config::web_identity_token::{
            StaticConfiguration, WebIdentityTokenCredentialsProvider,
        };

        Ok(Some(match self {
            Self::Auto => return Ok(None),
            Self::Basic {
                access_key_id,
                secret_access_key,
                session_token,
            } => SharedCredentialsProvider::new(Credentials::new(
                access_key_id,
                secret_access_key.expose(),
                session_token.as_ref().map(|t| t.expose().to_string()),
                None,
                "sluice-spec",
            )),
            Self::Env => {
                SharedCredentialsProvider::new(EnvironmentVariableCredentialsProvider::new())
            }
            Self::Profile { path, name } => {
                let mut b = ProfileFileCredentialsProvider::builder();
                if let Some(n) = name {
                    b = b.profile_name(n);
                }
                #[allow(deprecated)]
                if let Some(p) = path {
                    b = b.profile_files(
                        ProfileFiles::builder()
                            .with_file(ProfileFileKind::Credentials, p)
                            .include_default_config_file(true)
                            .build(),
                    );
                }
                SharedCredentialsProvider::new(b.build())
            }
            Self::AssumeRole {
                role_arn,
                session_name,
                external_id,
                source,
            } => {
                let mut b = AssumeRoleProvider::builder(role_arn).session_name(session_name);
                if let Some(id) = external_id {
                    b = b.external_id(id.expose());
                }
                if let Some(r) = &region {
                    b = b.region(Region::new(r.clone()));
                }
                let inner = Box::pin(source.provider(region.clone())).await?;
                let provider = match inner {
                    Some(p) => b.build_from_provider(p).await,
                    None => b.build().await,
                };
                SharedCredentialsProvider::new(provider)
            }
            Self::WebIdentity {
                token_file,
                role_arn,
                session_name,
            } => SharedCredentialsProvider::new(
                WebIdentityTokenCredentialsProvider::builder()
                    .static_configuration(StaticConfiguration {
                        web_identity_token_file: token_file.clone(),
                        role_arn: role_arn.clone(),
                        session_name: session_name.clone(),
                    })
                    .build(),
            ),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let c: AwsConfig = serde_json::from_value(serde_json::json!({
            "endpoint": "http://127.0.0.1:4567",
            "credentials": {"provider": "basic", "access_key_id": "AKIA", "secret_access_key": "s3cr3t"}
        }))
        .expect("config");
        assert_eq!(c.region().as_deref(), Some("us-east-1"));
        let dbg = format!("{c:?}");
        sluice_test_kit::assert_hidden(&dbg, &["s3cr3t"]);
        assert!(dbg.contains("<redacted>"), "{dbg}");
    }

    #[tokio::test]
    async fn builds_an_sdk_config_for_an_emulator() {
        let c: AwsConfig = serde_json::from_value(serde_json::json!({
            "endpoint": "http://127.0.0.1:4567",
            "credentials": {"provider": "basic", "access_key_id": "test", "secret_access_key": "test"}
        }))
        .expect("config");
        let sdk = c.sdk_config().await.expect("sdk config");
        assert_eq!(
            sdk.region().map(|r| r.as_ref().to_string()).as_deref(),
            Some("us-east-1")
        );
        assert_eq!(sdk.endpoint_url(), Some("http://127.0.0.1:4567"));
    }

    #[tokio::test]
    async fn a_plain_http_endpoint_gets_a_client_without_the_system_trust_store() {
        let with = |endpoint: &str| -> AwsConfig {
            serde_json::from_value(sluice_test_kit::aws_json(endpoint)).expect("config")
        };
        let no_env = |_: &str| None;
        assert!(
            with("http://127.0.0.1:4567")
                .plain_http_client(&no_env)
                .is_some()
        );
        assert!(
            with("HTTP://localhost:4567")
                .plain_http_client(&no_env)
                .is_some()
        );
        assert!(
            with("https://kinesis.us-east-1.amazonaws.com")
                .plain_http_client(&no_env)
                .is_none()
        );
        assert!(AwsConfig::default().plain_http_client(&no_env).is_none());
        // A proxy may need TLS: the default client, which reads the proxy variables.
        let proxied =
            |name: &str| (name == "https_proxy").then(|| "https://proxy:3128".to_string());
        assert!(
            with("http://127.0.0.1:4567")
                .plain_http_client(&proxied)
                .is_none()
        );
        // The service clients get it; an https endpoint keeps the SDK's default client.
        let sdk = with("http://127.0.0.1:4567")
            .sdk_config()
            .await
            .expect("sdk config");
        // As the client reads them: an empty variable is no proxy.
        let unproxied = PROXY_VARS
            .iter()
            .all(|v| std::env::var(v).ok().is_none_or(|x| x.is_empty()));
        assert_eq!(sdk.http_client().is_some(), unproxied);
        let sdk = with("https://127.0.0.1:4567")
            .sdk_config()
            .await
            .expect("sdk config");
        assert!(sdk.http_client().is_none());
    }

    /// A server that accepts connections and reads requests but never answers: a stalled
    /// endpoint (half-open connection, stuck proxy), which no emulator can play. Counts the
    /// connections it accepted.
    async fn black_hole() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = std::sync::Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    while matches!(sock.read(&mut buf).await, Ok(n) if n > 0) {}
                });
            }
        });
        (format!("http://{addr}"), accepted)
    }

    fn stalled_config(endpoint: &str) -> AwsConfig {
        serde_json::from_value(serde_json::json!({
            "endpoint": endpoint,
            "credentials": {"provider": "basic", "access_key_id": "test", "secret_access_key": "test"},
            "timeouts": {"attempt": "300ms", "operation": "1s"}
        }))
        .expect("config")
    }

    type ListStreamsError = aws_sdk_kinesis::error::SdkError<
        aws_sdk_kinesis::operation::list_streams::ListStreamsError,
    >;

    /// One ListStreams call, with or without the SDK's own retries, to a server that never
    /// answers: its error, how long it took and how many connections the server accepted. The
    /// call must end on its own, well before 10s.
    async fn stalled_call(sdk_retries: bool) -> (ListStreamsError, Duration, usize) {
        let (endpoint, accepted) = black_hole().await;
        let config = stalled_config(&endpoint);
        let sdk = if sdk_retries {
            config.sdk_config().await
        } else {
            config.sdk_config_without_sdk_retries().await
        }
        .expect("sdk config");
        let client = aws_sdk_kinesis::Client::new(&sdk);
        let started = std::time::Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(10), client.list_streams().send())
            .await
            .expect("the call must end on its own, well before 10s");
        let took = started.elapsed();
        let accepted = accepted.load(std::sync::atomic::Ordering::SeqCst);
        (r.expect_err("nothing answers"), took, accepted)
    }

    #[tokio::test]
    async fn a_stalled_call_times_out_after_one_attempt_and_is_retriable() {
        let (e, took, accepted) = stalled_call(false).await;
        assert!(
            matches!(e, aws_sdk_kinesis::error::SdkError::TimeoutError(_)),
            "{e:?}"
        );
        assert!(crate::error::retriable(&e), "a timeout is retriable");
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_secs(2),
            "took {took:?}"
        );
        // The SDK did not retry on its own: one connection, one attempt.
        assert_eq!(accepted, 1);
    }

    #[tokio::test]
    async fn the_operation_timeout_bounds_the_sdks_own_retries() {
        let (_, took, _) = stalled_call(true).await;
        assert!(took < Duration::from_secs(3), "took {took:?}");
    }

    #[test]
    fn timeouts_of_zero_or_an_operation_shorter_than_an_attempt_are_refused() {
        let c: AwsConfig = serde_json::from_value(serde_json::json!({
            "timeouts": {"connect": "0s", "attempt": "10s", "operation": "5s"}
        }))
        .expect("config");
        let issues = c.timeouts.check("aws");
        let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(paths, ["aws/timeouts/connect", "aws/timeouts/operation"]);
        let d = AwsConfig::default().timeouts;
        assert!(d.check("aws").is_empty());
        assert_eq!(d.attempt.0, Duration::from_secs(30));
    }
}
