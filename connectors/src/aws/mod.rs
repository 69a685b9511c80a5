//! What the Kinesis and DynamoDB connectors share: the connection (region, endpoint,
//! credentials) and how AWS errors are classified for retries.

mod config;

pub use config::{AwsConfig, AwsTimeouts, CredentialsConfig};

use aws_sdk_kinesis::error::ProvideErrorMetadata;

/// Error codes AWS uses for throttling and passing overload.
const RETRIABLE_CODES: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "LimitExceededException",
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "RequestThrottled",
    "RequestThrottledException",
    "InternalFailure",
    "InternalServerError",
    "ServiceUnavailable",
    "KMSThrottlingException",
    "TransactionInProgressException",
];

/// True when an AWS SDK error is worth retrying: throttling, timeouts, connection failures
/// and 5xx responses. Missing resources and denied access are not.
pub fn is_retriable<E, R>(e: &aws_sdk_kinesis::error::SdkError<E, R>) -> bool
where
    E: ProvideErrorMetadata,
    R: std::fmt::Debug,
{
    use aws_sdk_kinesis::error::SdkError;
    match e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => true,
        SdkError::ResponseError(_) => true,
        SdkError::ServiceError(s) => {
            let code = s.err().code().unwrap_or_default();
            RETRIABLE_CODES.contains(&code) || status_is_5xx(s.raw())
        }
        _ => false,
    }
}

fn status_is_5xx<R: std::fmt::Debug>(raw: &R) -> bool {
    // The raw response type differs per SDK; its Debug output carries the status code.
    let text = format!("{raw:?}");
    text.contains("StatusCode(5") || text.contains("status: 5")
}

/// A readable one-line description of an AWS SDK error: the service's code and message, or
/// the transport failure. (The SDK's own `Display` says only "service error".)
pub fn describe<E, R>(e: &aws_sdk_kinesis::error::SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    use aws_sdk_kinesis::error::SdkError;
    match e {
        SdkError::ServiceError(s) => {
            let err = s.err();
            match (err.code(), err.message()) {
                (Some(c), Some(m)) => format!("{c}: {m}"),
                (Some(c), None) => c.to_string(),
                _ => err.to_string(),
            }
        }
        SdkError::DispatchFailure(d) => format!("cannot reach the endpoint: {d:?}"),
        SdkError::TimeoutError(_) => "timed out".to_string(),
        other => {
            let mut s = other.to_string();
            let mut src = std::error::Error::source(other);
            while let Some(inner) = src {
                s.push_str(&format!(": {inner}"));
                src = inner.source();
            }
            s
        }
    }
}
