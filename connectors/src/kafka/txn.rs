//! The Kafka sink's transaction (`exactly_once`): librdkafka's transactional producer, shared by
//! the sink (which writes records into the open transaction) and the offset store (which adds the
//! pipeline's offsets and commits it through [`Transactional`]).
//!
//! librdkafka's transaction calls block: every one runs on a blocking thread. Their errors come
//! in three kinds (librdkafka `INTRODUCTION.md`, "Transactional Producer"): retriable (call again),
//! abort-required (abort; the input rewinds to the last commit) and fatal (the producer is done;
//! a newer instance with the same `transactional.id` fencing this one is the common case).

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};

use super::sink::{Deliveries, InFlight, SinkContext};
use crate::api::{Transactional, TxnError};
use crate::error::ConnectorError;
use crate::record::{Offset, Record};

/// How long one transaction call may block.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts of a commit whose error librdkafka calls retriable.
const COMMIT_ATTEMPTS: usize = 3;

/// What to do about a failed transaction call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Retriable,
    Abort,
    Fatal,
}

/// Sorts a transaction call's error; anything librdkafka does not mark is fatal, as its guide
/// says.
pub(super) fn kind(e: &KafkaError) -> Kind {
    match e {
        KafkaError::Transaction(t) if t.is_fatal() => Kind::Fatal,
        KafkaError::Transaction(t) if t.txn_requires_abort() => Kind::Abort,
        KafkaError::Transaction(t) if t.is_retriable() => Kind::Retriable,
        _ => Kind::Fatal,
    }
}

/// True when librdkafka's fatal error says that a newer producer with the same id took over.
pub fn is_fenced(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::Fenced
            | RDKafkaErrorCode::ProducerFenced
            | RDKafkaErrorCode::InvalidProducerEpoch
    )
}

/// Records a broker refused inside a transaction, by `transactional.id`. The refusal aborts the
/// transaction; the pipeline then rewinds to its last commit (its supervisor rebuilds it, so
/// this outlives one sink) and the sink hands these records to the error policy instead of
/// producing them again. Kept for the life of the process; a new process learns them again
/// (at the cost of one more aborted transaction each).
static REFUSED: LazyLock<Mutex<HashMap<String, HashSet<u64>>>> = LazyLock::new(Default::default);

/// Identifies a record across a rewind: its source partition and offset, key and value.
pub(super) fn identity(record: &Record, value: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    record.partition.hash(&mut h);
    record.offset.as_str().hash(&mut h);
    record.key.as_deref().hash(&mut h);
    value.hash(&mut h);
    h.finish()
}

/// Remembers that the broker refused this record in transaction `id`.
pub(super) fn remember_refused(id: &str, identity: u64) {
    if let Ok(mut m) = REFUSED.lock() {
        m.entry(id.to_string()).or_default().insert(identity);
    }
}

/// What the broker refused in earlier transactions of `id`. Read once per sink: a refusal
/// aborts the transaction and the pipeline's rebuild makes a new sink, so the set never grows
/// under a running one.
fn refused_before(id: &str) -> HashSet<u64> {
    REFUSED
        .lock()
        .map(|m| m.get(id).cloned().unwrap_or_default())
        .unwrap_or_default()
}

/// The transactional producer of one Kafka sink.
pub struct KafkaTransaction {
    producer: ThreadedProducer<SinkContext>,
    deliveries: Arc<Deliveries>,
    pub(super) id: String,
    brokers: String,
    /// [`refused_before`], taken when the sink was built.
    refused: HashSet<u64>,
}

impl KafkaTransaction {
    pub(super) fn new(
        producer: ThreadedProducer<SinkContext>,
        deliveries: Arc<Deliveries>,
        id: String,
        brokers: String,
    ) -> Self {
        Self {
            refused: refused_before(&id),
            producer,
            deliveries,
            id,
            brokers,
        }
    }

    /// Whether the broker refused this record in an earlier transaction of this id (hashed
    /// only when something was refused: the set is almost always empty).
    pub(super) fn was_refused(&self, record: &Record) -> bool {
        !self.refused.is_empty() && self.refused.contains(&identity(record, &record.value))
    }

    /// Takes the largest of the records Kafka refused in one batch for the bad one: Kafka refuses
    /// the whole batch (`MSG_SIZE_TOO_LARGE` for one oversized record), and librdkafka does
    /// not split it. After the rewind the sink hands that record to the error policy and
    /// produces the others again; another refusal convicts the next.
    pub(super) fn convict(&self, suspects: &Mutex<Vec<(u64, usize)>>) {
        let Ok(mut s) = suspects.lock() else { return };
        if let Some(&(identity, size)) = s.iter().max_by_key(|(_, size)| *size) {
            tracing::info!(transactional_id = %self.id, bytes = size, refused_together = s.len(), "kafka sink: the largest record of the refused batch goes to the error policy after the rewind");
            remember_refused(&self.id, identity);
        }
        s.clear();
    }

    /// Runs a blocking transaction call on a blocking thread.
    async fn call(
        &self,
        f: impl FnOnce(&ThreadedProducer<SinkContext>) -> Result<(), KafkaError> + Send + 'static,
    ) -> Result<(), KafkaError> {
        let producer = self.producer.clone();
        match tokio::task::spawn_blocking(move || f(&producer)).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(transactional_id = %self.id, error = %e, "kafka sink: a transaction call's thread failed");
                Err(KafkaError::Canceled)
            }
        }
    }

    /// The message for a fatal error, naming a fencing for what it is.
    pub(super) fn fatal_message(&self, what: &str, e: &dyn std::fmt::Display) -> String {
        let fenced = self
            .producer
            .client()
            .fatal_error()
            .is_some_and(|(code, _)| is_fenced(code));
        if fenced {
            format!(
                "kafka sink: the transactional producer `{}` on {} was fenced: another instance of this pipeline (same transactional.id) started. This one stops at once and writes nothing more ({what}: {e})",
                self.id, self.brokers
            )
        } else {
            format!(
                "kafka sink: the transactional producer `{}` on {} failed for good ({what}: {e}); nothing of its open transaction becomes visible",
                self.id, self.brokers
            )
        }
    }

    /// Fences any earlier producer with this id, aborting its open transaction, and begins the
    /// first transaction.
    pub(super) async fn init(&self) -> Result<(), ConnectorError> {
        self.call(|p| p.init_transactions(CALL_TIMEOUT))
            .await
            .map_err(|e| {
                let mut err = ConnectorError::call(
                    format_args!(
                        "kafka sink: transactional.id `{}` on {}",
                        self.id, self.brokers
                    ),
                    "init_transactions",
                    &e,
                );
                // librdkafka's own retriable mark counts too (a coordinator still loading).
                err.retriable |= kind(&e) == Kind::Retriable;
                err
            })?;
        self.begin()
            .map_err(|e| ConnectorError::fatal(self.fatal_message("begin_transaction", &e)))?;
        tracing::info!(transactional_id = %self.id, brokers = %self.brokers, "kafka sink: transactions initialised (earlier instances fenced, their open transaction aborted)");
        Ok(())
    }

    fn begin(&self) -> Result<(), KafkaError> {
        // Local to the client: it does not block.
        self.producer.begin_transaction()
    }

    fn produce(&self, topic: &str, key: &[u8], value: Option<&[u8]>) -> Result<(), KafkaError> {
        let pending = Box::new(InFlight {
            ack: None,
            record: Record::new("".into(), Offset::from(0), bytes::Bytes::new()),
            routed: false,
        });
        let mut r: BaseRecord<'_, [u8], [u8], Box<InFlight>> =
            BaseRecord::with_opaque_to(topic, pending)
                .key(key)
                .partition(0);
        if let Some(v) = value {
            r = r.payload(v);
        }
        self.deliveries.in_flight.fetch_add(1, Ordering::AcqRel);
        self.producer.send(r).map_err(|(e, _)| {
            self.deliveries.done();
            e
        })
    }

    /// Aborts after an abort-required error and says so.
    async fn aborted(&self, what: &str, e: &KafkaError) -> TxnError {
        self.abort().await;
        TxnError::Aborted(format!(
            "kafka sink: transaction of `{}` on {} aborted ({what}: {e}); nothing of it is visible, and the pipeline resumes from its last committed offsets",
            self.id, self.brokers
        ))
    }
}

#[async_trait]
impl Transactional for KafkaTransaction {
    fn describe(&self) -> String {
        format!("kafka transactional.id {} on {}", self.id, self.brokers)
    }

    async fn commit(
        &self,
        topic: &str,
        records: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    ) -> Result<(), TxnError> {
        for (k, v) in &records {
            if let Err(e) = self.produce(topic, k, v.as_deref()) {
                let what = format!("writing offsets to `{topic}`");
                return Err(match kind(&e) {
                    Kind::Fatal if self.producer.client().fatal_error().is_some() => {
                        TxnError::Fatal(self.fatal_message(&what, &e))
                    }
                    _ => self.aborted(&what, &e).await,
                });
            }
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.call(|p| p.commit_transaction(CALL_TIMEOUT)).await {
                Ok(()) => break,
                Err(e) => match kind(&e) {
                    Kind::Retriable if attempt < COMMIT_ATTEMPTS => {
                        tracing::warn!(transactional_id = %self.id, error = %e, attempt, "kafka sink: commit_transaction failed; retrying");
                    }
                    Kind::Retriable | Kind::Abort => {
                        return Err(self.aborted("commit_transaction", &e).await);
                    }
                    Kind::Fatal => {
                        return Err(TxnError::Fatal(
                            self.fatal_message("commit_transaction", &e),
                        ));
                    }
                },
            }
        }
        self.begin()
            .map_err(|e| TxnError::Fatal(self.fatal_message("begin_transaction", &e)))
    }

    async fn abort(&self) {
        if let Err(e) = self.call(|p| p.abort_transaction(CALL_TIMEOUT)).await {
            // No transaction open, or the producer is fenced: nothing to undo from here (a
            // fenced producer's transaction was aborted by the instance that fenced it).
            tracing::debug!(transactional_id = %self.id, error = %e, "kafka sink: abort_transaction");
        }
    }
}
