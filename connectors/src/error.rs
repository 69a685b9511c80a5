//! Connector errors, and the one way a failed call to an external system becomes one:
//! [`ConnectorError::call`] with the client library's [`Classify`] (AWS in `aws`, Kafka in
//! `kafka::client`).

use std::fmt;

/// What a failed call says about trying it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// A passing condition (a timeout, a refused connection, a 5xx, a broker restarting).
    Transient,
    /// The system asks callers to slow down (HTTP 429, a throughput or request-rate limit).
    Throttled,
    /// Trying the same call again cannot help (a missing resource, denied access, a bad request).
    Fatal,
}

impl Failure {
    pub fn retriable(self) -> bool {
        self != Failure::Fatal
    }
}

/// A client library's errors, classified once for every connector that uses the library.
pub trait Classify {
    /// Whether, and why, the call may succeed if tried again.
    fn failure(&self) -> Failure;
    /// A readable one-line description (the service's error code and message, or the transport
    /// failure).
    fn describe(&self) -> String;
}

/// True when a classified error is worth retrying; fits [`RetryPolicy::run`](crate::retry::RetryPolicy::run).
pub fn retriable<E: Classify>(e: &E) -> bool {
    e.failure().retriable()
}

/// An error of a connector, saying whether trying again may help.
#[derive(Debug, thiserror::Error)]
pub struct ConnectorError {
    /// What failed, naming the connector and the stream, table, topic, file or partition.
    pub message: String,
    /// Trying again later may succeed (throttling, timeouts, a broker restarting).
    pub retriable: bool,
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl ConnectorError {
    /// A non-retriable error.
    pub fn fatal(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retriable: false,
            source: None,
        }
    }

    /// A retriable error.
    pub fn retriable(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retriable: true,
            source: None,
        }
    }

    /// A failed call to an external system. `at` names the connector and what it works on
    /// (`kinesis source: stream s shard x`), `call` the operation (`GetRecords`); the error's
    /// classifier says whether it is retriable.
    pub fn call(at: impl fmt::Display, call: &str, e: &impl Classify) -> Self {
        Self {
            message: format!("{at}: {call} failed: {}", e.describe()),
            retriable: e.failure().retriable(),
            source: None,
        }
    }

    /// An I/O error with context; retriable when the kind suggests a passing condition.
    pub fn io(context: impl Into<String>, e: std::io::Error) -> Self {
        use std::io::ErrorKind::*;
        let retriable = matches!(e.kind(), Interrupted | TimedOut | WouldBlock);
        Self {
            message: context.into(),
            retriable,
            source: Some(Box::new(e)),
        }
    }

    pub fn with_source(mut self, e: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(e));
        self
    }
}

impl fmt::Display for ConnectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(s) = &self.source {
            write!(f, ": {s}")?;
        }
        Ok(())
    }
}
