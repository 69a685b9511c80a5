//! What the Kinesis and DynamoDB connectors share: the connection (region, endpoint,
//! credentials) and how AWS errors are classified for retries.

mod config;

pub use config::{AwsConfig, AwsTimeouts, CredentialsConfig};

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::error::{Classify, Failure};

/// Error codes AWS uses when it asks callers to slow down.
const THROTTLING_CODES: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "LimitExceededException",
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "RequestThrottled",
    "RequestThrottledException",
    "KMSThrottlingException",
];

/// Error codes AWS uses for a passing condition on its side, whatever the HTTP status.
const TRANSIENT_CODES: &[&str] = &[
    "InternalFailure",
    "InternalServerError",
    "ServiceUnavailable",
    "TransactionInProgressException",
];

/// Classifies a service's answer by its error code, then its HTTP status: throttling codes and
/// 429 are throttled, transient codes and 5xx are transient, anything else (a missing resource,
/// denied access, a failed condition) is fatal.
pub fn classify(status: u16, code: Option<&str>) -> Failure {
    let code = code.unwrap_or_default();
    if THROTTLING_CODES.contains(&code) || status == 429 {
        Failure::Throttled
    } else if TRANSIENT_CODES.contains(&code) || (500..600).contains(&status) {
        Failure::Transient
    } else {
        Failure::Fatal
    }
}

/// The raw answer an SDK error carries: an HTTP response, or an event-stream message (which has
/// no status of its own).
pub trait RawAnswer {
    fn status(&self) -> Option<u16>;
}

impl RawAnswer for HttpResponse {
    fn status(&self) -> Option<u16> {
        Some(HttpResponse::status(self).as_u16())
    }
}

impl RawAnswer for aws_smithy_types::event_stream::RawMessage {
    fn status(&self) -> Option<u16> {
        None
    }
}

/// Every AWS SDK call's error (Kinesis, DynamoDB, DynamoDB Streams share the smithy types):
/// timeouts, connection failures and unreadable responses are transient, a service's answer is
/// classified by [`classify`].
impl<E, R> Classify for SdkError<E, R>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: RawAnswer + std::fmt::Debug + 'static,
{
    fn failure(&self) -> Failure {
        match self {
            SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => Failure::Transient,
            SdkError::ResponseError(_) => Failure::Transient,
            SdkError::ServiceError(s) => {
                classify(s.raw().status().unwrap_or_default(), s.err().code())
            }
            _ => Failure::Fatal,
        }
    }

    /// The service's code and message, or the transport failure (the SDK's own `Display` says
    /// only "service error").
    fn describe(&self) -> String {
        match self {
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
}

#[cfg(test)]
mod tests {
    use aws_sdk_dynamodb::operation::put_item::PutItemError;
    use aws_smithy_runtime_api::http::StatusCode;
    use aws_smithy_types::body::SdkBody;
    use aws_smithy_types::error::ErrorMetadata;

    use super::*;

    /// The error the SDK returns when the service answers `status` with `code`.
    fn answer(status: u16, code: Option<&str>) -> SdkError<PutItemError, HttpResponse> {
        let mut meta = ErrorMetadata::builder().message("from the service");
        if let Some(c) = code {
            meta = meta.code(c);
        }
        let raw = HttpResponse::new(StatusCode::try_from(status).unwrap(), SdkBody::empty());
        SdkError::service_error(PutItemError::generic(meta.build()), raw)
    }

    #[test]
    fn throttling_is_read_from_the_code_or_a_429() {
        for code in [
            "ThrottlingException",
            "ProvisionedThroughputExceededException",
        ] {
            let e = answer(400, Some(code));
            assert_eq!(e.failure(), Failure::Throttled, "{code}");
            assert!(crate::error::retriable(&e));
            assert_eq!(e.describe(), format!("{code}: from the service"));
        }
        assert_eq!(answer(429, None).failure(), Failure::Throttled);
    }

    #[test]
    fn server_errors_are_transient_by_status() {
        assert_eq!(answer(500, None).failure(), Failure::Transient);
        assert_eq!(
            answer(503, Some("SomethingNew")).failure(),
            Failure::Transient
        );
        assert_eq!(
            answer(400, Some("InternalFailure")).failure(),
            Failure::Transient
        );
    }

    #[test]
    fn timeouts_and_unreachable_endpoints_are_transient() {
        let e = SdkError::<PutItemError, HttpResponse>::timeout_error("slow");
        assert_eq!(e.failure(), Failure::Transient);
        assert_eq!(e.describe(), "timed out");
        let refused = aws_smithy_runtime_api::client::result::ConnectorError::io("refused".into());
        let e = SdkError::<PutItemError, HttpResponse>::dispatch_failure(refused);
        assert_eq!(e.failure(), Failure::Transient);
    }

    #[test]
    fn client_errors_are_fatal() {
        for code in [
            "ConditionalCheckFailedException",
            "ResourceNotFoundException",
            "ValidationException",
        ] {
            let e = answer(400, Some(code));
            assert_eq!(e.failure(), Failure::Fatal, "{code}");
            assert!(!crate::error::retriable(&e));
        }
        assert_eq!(answer(400, None).failure(), Failure::Fatal);
    }

    #[test]
    fn a_failed_call_names_where_the_call_and_the_service_answer() {
        let e = crate::ConnectorError::call(
            "dynamodb sink: table t",
            "PutItem",
            &answer(400, Some("ResourceNotFoundException")),
        );
        assert_eq!(
            e.to_string(),
            "dynamodb sink: table t: PutItem failed: ResourceNotFoundException: from the service"
        );
        assert!(!e.retriable);
        let e = crate::ConnectorError::call("x", "PutItem", &answer(503, None));
        assert!(e.retriable);
    }
}
