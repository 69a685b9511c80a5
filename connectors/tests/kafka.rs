//! What exactly-once relies on, checked against noida-db (the broker `scripts/test.sh` starts
//! as SLUICE_TEST_NOIDA_BROKERS): read_committed hides aborted and open transactions, and a
//! second producer with the same id fences the first (as `kafka::is_fenced` reads it).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use sluice_connectors::kafka::is_fenced;
use sluice_test_kit::{emulator, kafka};

fn producer(brokers: &str, id: &str) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("transactional.id", id)
        .create()
        .expect("producer")
}

fn send(p: &BaseProducer, topic: &str, v: &str) -> Result<(), KafkaError> {
    p.send(BaseRecord::<[u8], [u8]>::to(topic).payload(v.as_bytes()))
        .map_err(|(e, _)| e)?;
    p.flush(Duration::from_secs(10))
}

#[test]
fn the_broker_hides_aborted_transactions_and_fences_zombies() {
    let brokers = emulator::noida_brokers();
    let topic = kafka::topic("txn-check");
    let id = kafka::topic("txn-check-id");
    kafka::create_topic(&brokers, &topic, 1);
    let t = Duration::from_secs(10);
    let zombie = producer(&brokers, &id);
    zombie.init_transactions(t).expect("init");
    zombie.begin_transaction().expect("begin");
    send(&zombie, &topic, "committed").expect("send");
    zombie.commit_transaction(t).expect("commit");
    zombie.begin_transaction().expect("begin");
    send(&zombie, &topic, "left open").expect("send");
    let next = producer(&brokers, &id);
    next.init_transactions(t)
        .expect("the second instance fences the first");
    next.begin_transaction().expect("begin");
    send(&next, &topic, "after fencing").expect("send");
    next.commit_transaction(t).expect("commit");
    let late = send(&zombie, &topic, "zombie").and_then(|()| zombie.commit_transaction(t));
    assert!(late.is_err(), "the fenced producer cannot commit");
    let (code, _) = zombie.client().fatal_error().expect("fenced is fatal");
    assert!(is_fenced(code), "{code:?}");

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "txn-check")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, rdkafka::Offset::Beginning)
        .expect("tpl");
    consumer.assign(&tpl).expect("assign");
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while seen.len() < 2 && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            seen.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).to_string());
        }
    }
    // Anything after "after fencing" would have shown by now if it were visible.
    let settle = std::time::Instant::now() + Duration::from_millis(500);
    while std::time::Instant::now() < settle {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            seen.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).to_string());
        }
    }
    assert_eq!(seen, ["committed", "after fencing"]);
}
