//! Connector errors.

use std::fmt;

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
