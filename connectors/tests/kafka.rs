//! What exactly-once relies on, checked against noida-db (the broker `scripts/test.sh` starts
//! as SLUICE_TEST_NOIDA_BROKERS): read_committed hides aborted and open transactions, and a
//! second producer with the same id fences the first (as `kafka::is_fenced` reads it).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;
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
    let id = sluice_test_kit::unique_name("txn-check-id");
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

    // read_committed (librdkafka's default): the open and the fenced transaction stay hidden.
    let seen: Vec<String> = kafka::read_settled(&brokers, &topic, 2, Duration::from_secs(10))
        .iter()
        .map(|m| String::from_utf8_lossy(&m.value).into_owned())
        .collect();
    assert_eq!(seen, ["committed", "after fencing"]);
}
