//! What the source, the sink and the offset log share: librdkafka's logs and errors as `tracing`
//! events naming the brokers, topic metadata lookups and topic creation.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{Client, ClientContext, DefaultClientContext};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::error::{Classify, ConnectorError, Failure};

/// Forwards librdkafka's logs and client errors to `tracing`, with the brokers they concern.
#[derive(Clone, Debug)]
pub struct LogContext {
    /// `sink`, `source` or `offset store`: which part of Sluice the client belongs to.
    pub role: &'static str,
    pub brokers: String,
}

impl ClientContext for LogContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        let (role, brokers) = (self.role, self.brokers.as_str());
        // A tracing event's level is fixed where it is written: one event per level.
        macro_rules! event {
            ($level:expr) => {
                tracing::event!(
                    $level,
                    kafka = role,
                    brokers,
                    facility = fac,
                    "librdkafka: {message}"
                )
            };
        }
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => event!(tracing::Level::ERROR),
            RDKafkaLogLevel::Warning => event!(tracing::Level::WARN),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => event!(tracing::Level::INFO),
            RDKafkaLogLevel::Debug => event!(tracing::Level::DEBUG),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // Transport errors repeat while a broker is down; librdkafka retries them by itself.
        tracing::warn!(kafka = self.role, brokers = %self.brokers, error = %error, reason, "kafka client error (retrying)");
    }
}

/// `ClientContext` for a context that holds a [`LogContext`] in its `log` field: librdkafka's
/// logs and errors go through it.
macro_rules! logs_through_log_context {
    ($ctx:ty) => {
        impl rdkafka::client::ClientContext for $ctx {
            fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
                rdkafka::client::ClientContext::log(&self.log, level, fac, message)
            }
            fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
                rdkafka::client::ClientContext::error(&self.log, error, reason)
            }
        }
    };
}
pub(super) use logs_through_log_context;

/// An error creating a librdkafka client, without any property value: rdkafka's
/// `KafkaError::ClientConfig` displays the rejected value (a misspelt `sasl.pasword` would print
/// the password), and librdkafka's own description may quote it too.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ClientConfigError(String);

impl ClientConfigError {
    pub fn new(e: &KafkaError) -> Self {
        Self(match e {
            KafkaError::ClientConfig(res, desc, key, value) => {
                let what = match res {
                    rdkafka::types::RDKafkaConfRes::RD_KAFKA_CONF_UNKNOWN => "unknown property",
                    rdkafka::types::RDKafkaConfRes::RD_KAFKA_CONF_INVALID => {
                        "invalid value for property"
                    }
                    _ => "cannot set property",
                };
                // The description names the property, but some also quote the value.
                let desc = if !value.is_empty() && desc.contains(value.as_str()) {
                    "(the value is not shown)".to_string()
                } else {
                    desc.clone()
                };
                format!("librdkafka: {what} `{key}`: {desc}")
            }
            other => format!("librdkafka: {other}"),
        })
    }
}

/// A fatal error for a client librdkafka refused to create, naming what failed but never a
/// property value.
pub fn config_error(context: String, e: &KafkaError) -> ConnectorError {
    ConnectorError::fatal(context).with_source(ClientConfigError::new(e))
}

/// Kafka's errors: a broker down or restarting, a timeout or a leader election pass; a quota
/// throttles; anything else (an unknown property, denied access, a fenced producer) is fatal. A
/// refused client config is described without the property's value (it may be a secret).
impl Classify for KafkaError {
    fn failure(&self) -> Failure {
        use RDKafkaErrorCode::*;
        // rdkafka gives no code for an admin operation's error, though it carries one.
        let code = match self {
            KafkaError::AdminOp(code) => Some(*code),
            other => other.rdkafka_error_code(),
        };
        match code {
            Some(ThrottlingQuotaExceeded) => Failure::Throttled,
            Some(
                BrokerTransportFailure
                | AllBrokersDown
                | OperationTimedOut
                | RequestTimedOut
                | MessageTimedOut
                | TimedOutQueue
                | LeaderNotAvailable
                | NotLeaderForPartition
                | NetworkException
                | NotCoordinator
                | CoordinatorNotAvailable
                | CoordinatorLoadInProgress
                | NotEnoughReplicas
                | NotEnoughReplicasAfterAppend
                | UnknownTopicOrPartition
                | QueueFull
                | Resolve
                | RebalanceInProgress
                | KafkaStorageError
                | Retry,
            ) => Failure::Transient,
            _ => Failure::Fatal,
        }
    }

    fn describe(&self) -> String {
        match self {
            KafkaError::ClientConfig(..) => ClientConfigError::new(self).to_string(),
            other => other.to_string(),
        }
    }
}

impl LogContext {
    /// Creates a librdkafka client that logs through this context. A configuration librdkafka
    /// refuses is a fatal error naming the role and the brokers, never a property's value.
    pub fn create<T>(self, config: &ClientConfig) -> Result<T, ConnectorError>
    where
        T: rdkafka::config::FromClientConfigAndContext<LogContext>,
    {
        let what = format!(
            "kafka {}: bad client configuration for {}",
            self.role, self.brokers
        );
        config
            .create_with_context(self)
            .map_err(|e| config_error(what, &e))
    }
}

/// A consumer context that only logs (plain reads, no group).
impl rdkafka::consumer::ConsumerContext for LogContext {}

/// What metadata says about one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicState {
    Present { partitions: u32 },
    Missing,
}

/// Looks a topic up (blocking: call from a blocking thread). Errors are the broker's.
pub fn topic_state<C: ClientContext>(
    client: &Client<C>,
    topic: &str,
    timeout: Duration,
) -> Result<TopicState, KafkaError> {
    let md = client.fetch_metadata(Some(topic), timeout)?;
    let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
        return Ok(TopicState::Missing);
    };
    match t.error() {
        Some(e) if RDKafkaErrorCode::from(e) == RDKafkaErrorCode::UnknownTopicOrPartition => {
            Ok(TopicState::Missing)
        }
        Some(e) => Err(KafkaError::MetadataFetch(e.into())),
        None if t.partitions().is_empty() => Ok(TopicState::Missing),
        None => Ok(TopicState::Present {
            partitions: t.partitions().len() as u32,
        }),
    }
}

/// Creates a topic; a topic that already exists is fine.
pub async fn create_topic(
    config: &ClientConfig,
    brokers: &str,
    topic: &str,
    partitions: u32,
    replication: u32,
    topic_config: &[(&str, &str)],
) -> Result<(), ConnectorError> {
    let admin: AdminClient<DefaultClientContext> = config.create().map_err(|e| {
        config_error(
            format!("kafka: cannot create an admin client for {brokers}"),
            &e,
        )
    })?;
    let mut new = NewTopic::new(
        topic,
        partitions as i32,
        TopicReplication::Fixed(replication as i32),
    );
    for (k, v) in topic_config {
        new = new.set(k, v);
    }
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let at = format!("kafka: topic `{topic}` on {brokers}");
    let results = admin
        .create_topics([&new], &opts)
        .await
        .map_err(|e| ConnectorError::call(&at, "creating the topic", &e))?;
    for r in results {
        match r {
            Ok(_) => {}
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => {
                let e = KafkaError::AdminOp(code);
                return Err(ConnectorError::call(&at, "creating the topic", &e));
            }
        }
    }
    tracing::info!(
        topic,
        brokers,
        partitions,
        replication,
        "created kafka topic"
    );
    Ok(())
}

/// A delivery error code that says the record was purged (the producer is closing).
pub fn is_purged(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::types::RDKafkaConfRes;

    #[test]
    fn client_config_errors_never_show_the_value() {
        let e = KafkaError::ClientConfig(
            RDKafkaConfRes::RD_KAFKA_CONF_INVALID,
            "Unsupported value \"hunter2\" for configuration property \"sasl.password\"".into(),
            "sasl.password".into(),
            "hunter2".into(),
        );
        assert!(e.to_string().contains("hunter2"), "rdkafka itself shows it");
        let shown = config_error("kafka sink: bad configuration".into(), &e).to_string();
        sluice_test_kit::assert_hidden(&shown, &["hunter2"]);
        assert!(shown.contains("sasl.password"), "{shown}");
        let e = KafkaError::ClientConfig(
            RDKafkaConfRes::RD_KAFKA_CONF_UNKNOWN,
            "No such configuration property: \"sasl.pasword\"".into(),
            "sasl.pasword".into(),
            "hunter2".into(),
        );
        let shown = config_error("x".into(), &e).to_string();
        sluice_test_kit::assert_hidden(&shown, &["hunter2"]);
        assert!(shown.contains("No such configuration property"), "{shown}");
    }

    #[test]
    fn kafka_errors_are_classified_by_their_code() {
        let transient = [
            KafkaError::MessageProduction(RDKafkaErrorCode::BrokerTransportFailure),
            KafkaError::MetadataFetch(RDKafkaErrorCode::AllBrokersDown),
            KafkaError::AdminOp(RDKafkaErrorCode::RequestTimedOut),
            KafkaError::ConsumerCommit(RDKafkaErrorCode::CoordinatorNotAvailable),
        ];
        for e in transient {
            assert_eq!(e.failure(), Failure::Transient, "{e}");
        }
        let throttled = KafkaError::MessageProduction(RDKafkaErrorCode::ThrottlingQuotaExceeded);
        assert_eq!(throttled.failure(), Failure::Throttled);
        let fatal = [
            KafkaError::AdminOp(RDKafkaErrorCode::TopicAuthorizationFailed),
            KafkaError::MessageProduction(RDKafkaErrorCode::InvalidProducerEpoch),
            KafkaError::Canceled,
        ];
        for e in fatal {
            assert_eq!(e.failure(), Failure::Fatal, "{e}");
            assert!(!crate::error::retriable(&e));
        }
        let e = ConnectorError::call(
            "kafka sink: topic t",
            "produce",
            &KafkaError::MessageProduction(RDKafkaErrorCode::BrokerTransportFailure),
        );
        assert!(e.retriable);
        assert!(
            e.to_string()
                .starts_with("kafka sink: topic t: produce failed: Message production error"),
            "{e}"
        );
    }

    #[test]
    fn a_refused_config_is_fatal_and_never_shows_the_value() {
        let e = KafkaError::ClientConfig(
            RDKafkaConfRes::RD_KAFKA_CONF_INVALID,
            "Unsupported value \"hunter2\" for configuration property \"sasl.password\"".into(),
            "sasl.password".into(),
            "hunter2".into(),
        );
        assert_eq!(e.failure(), Failure::Fatal);
        let shown = ConnectorError::call("kafka sink", "create producer", &e).to_string();
        sluice_test_kit::assert_hidden(&shown, &["hunter2"]);
        assert!(shown.contains("sasl.password"), "{shown}");
    }
}
