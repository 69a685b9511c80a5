use std::path::PathBuf;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::error::ConnectorError;
use crate::secret::Secret;

/// How to reach AWS (or a local emulator).
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AwsConfig {
    /// The region, e.g. `us-east-1`. Default: from the environment or profile (`us-east-1`
    /// when only an `endpoint` is given).
    #[serde(default)]
    pub region: Option<String>,
    /// An endpoint URL that replaces the service's, e.g. `http://127.0.0.1:4567` for an
    /// emulator or a VPC endpoint.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Where credentials come from. Default: the standard chain (`auto`).
    #[serde(default)]
    pub credentials: CredentialsConfig,
}

/// A credentials provider, as in Flink's `aws.credentials.provider`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
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
        #[serde(default)]
        session_token: Option<Secret>,
    },
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`.
    Env,
    /// A profile of the shared credentials file.
    Profile {
        /// The credentials file. Default: `~/.aws/credentials`.
        #[serde(default)]
        path: Option<PathBuf>,
        /// The profile. Default: `default` (or `AWS_PROFILE`).
        #[serde(default)]
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
        #[serde(default)]
        external_id: Option<Secret>,
        /// Credentials used to assume the role. Default: `auto`.
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

    /// Builds the SDK configuration (resolves credentials lazily, on first use).
    pub async fn sdk_config(&self) -> Result<SdkConfig, ConnectorError> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(r) = self.region() {
            loader = loader.region(Region::new(r));
        }
        if let Some(e) = &self.endpoint {
            loader = loader.endpoint_url(e);
        }
        if let Some(p) = self.credentials.provider(self.region()).await? {
            loader = loader.credentials_provider(p);
        }
        Ok(loader.load().await)
    }
}

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

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let c: AwsConfig = serde_json::from_value(serde_json::json!({
            "endpoint": "http://127.0.0.1:4567",
            "credentials": {"provider": "basic", "access_key_id": "AKIA", "secret_access_key": "s3cr3t"}
        }))
        .expect("config");
        assert_eq!(c.region().as_deref(), Some("us-east-1"));
        let dbg = format!("{c:?}");
        assert!(
            !dbg.contains("s3cr3t") && dbg.contains("<redacted>"),
            "{dbg}"
        );
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
}
