//! Kafka helpers: the shared broker, random topics, a producer and a reader, and private tansu
//! brokers for tests that restart one.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

/// The shared test broker: `SLUICE_TEST_KAFKA_BROKERS`, else 127.0.0.1:9092. Panics with the
/// way to start one when nothing answers.
pub fn brokers() -> String {
    crate::emulator::kafka_brokers()
}

/// A fresh topic name.
pub fn topic(prefix: &str) -> String {
    crate::unique_name(prefix)
}

fn config(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    c.set("allow.auto.create.topics", "false");
    c
}

/// Creates a topic and waits until its metadata shows every partition.
pub fn create_topic(brokers: &str, topic: &str, partitions: i32) {
    create_topic_with(brokers, topic, partitions, &[]);
}

/// Creates a topic with topic-level configuration (`cleanup.policy`, `max.message.bytes`) and
/// waits until its metadata shows every partition.
pub fn create_topic_with(brokers: &str, topic: &str, partitions: i32, configs: &[(&str, &str)]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let admin: AdminClient<DefaultClientContext> = config(brokers).create().expect("admin");
    let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        new = new.set(k, v);
    }
    let res = rt
        .block_on(admin.create_topics([&new], &AdminOptions::new()))
        .expect("create topics");
    for r in res {
        r.unwrap_or_else(|(t, e)| panic!("create topic {t}: {e}"));
    }
    let consumer: BaseConsumer = config(brokers).create().expect("consumer");
    assert!(
        crate::wait_for(Duration::from_secs(10), || {
            consumer
                .fetch_metadata(Some(topic), Duration::from_secs(2))
                .map(|m| {
                    m.topics().iter().any(|t| {
                        t.name() == topic
                            && t.error().is_none()
                            && t.partitions().len() == partitions as usize
                    })
                })
                .unwrap_or(false)
        }),
        "topic {topic} did not appear"
    );
}

/// A message as read back.
#[derive(Debug, Clone)]
pub struct Msg {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: BTreeMap<String, String>,
    pub timestamp: Option<i64>,
}

impl Msg {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.value)
            .unwrap_or_else(|e| panic!("not JSON: {e}: {:?}", String::from_utf8_lossy(&self.value)))
    }
    /// The `seq` field of a JSON value (the tests' record numbers).
    pub fn seq(&self) -> u64 {
        self.json()["seq"]
            .as_u64()
            .unwrap_or_else(|| panic!("no seq in {:?}", String::from_utf8_lossy(&self.value)))
    }
    pub fn key_str(&self) -> Option<String> {
        self.key
            .as_ref()
            .map(|k| String::from_utf8_lossy(k).into_owned())
    }
}

/// The distinct `seq`s of some messages.
pub fn seqs(msgs: &[Msg]) -> std::collections::BTreeSet<u64> {
    msgs.iter().map(Msg::seq).collect()
}

/// A record to produce: key, value, headers.
pub type Produce = (Option<String>, String, Vec<(String, String)>);

/// Produces `(key, value, headers)` records (partition by librdkafka's key hash, or `partition`)
/// and waits until the broker has them.
pub fn produce(brokers: &str, topic: &str, records: &[Produce], partition: Option<i32>) {
    let mut c = config(brokers);
    c.set("linger.ms", "5");
    c.set("partitioner", "murmur2_random");
    let p: ThreadedProducer<DefaultProducerContext> = c.create().expect("producer");
    for (k, v, hs) in records {
        let mut h = OwnedHeaders::new();
        for (hk, hv) in hs {
            h = h.insert(Header {
                key: hk,
                value: Some(hv.as_bytes()),
            });
        }
        let mut r: BaseRecord<'_, [u8], [u8]> =
            BaseRecord::to(topic).payload(v.as_bytes()).headers(h);
        r.key = k.as_deref().map(str::as_bytes);
        r.partition = partition;
        loop {
            match p.send(r) {
                Ok(()) => break,
                Err((_, back)) => {
                    r = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
    p.flush(Duration::from_secs(30)).expect("flush");
}

/// Reads a topic from the beginning until `want` messages arrived or `timeout` passed.
pub fn read(brokers: &str, topic: &str, want: usize, timeout: Duration) -> Vec<Msg> {
    read_until(brokers, topic, timeout, |m| m.len() >= want)
}

/// Everything a read_committed reader sees in `topic` once `want` records are there (failing the
/// test if they do not show within `timeout`), and whatever else arrives within a short grace
/// after that: a bounded wait for what must not be there (a duplicate, an aborted record). One
/// reader: what it saw stays counted, however slowly a second reader would catch up.
pub fn read_settled(brokers: &str, topic: &str, want: usize, timeout: Duration) -> Vec<Msg> {
    const GRACE: Duration = Duration::from_secs(3);
    let mut reached: Option<Instant> = None;
    let got = read_until(brokers, topic, timeout + GRACE, |m| {
        m.len() > want
            || (m.len() >= want && reached.get_or_insert_with(Instant::now).elapsed() >= GRACE)
    });
    assert!(
        got.len() >= want,
        "only {} of {want} records became visible",
        got.len()
    );
    got
}

/// Reads a topic from the beginning until `done` holds for what arrived, or `timeout` passed.
pub fn read_until(
    brokers: &str,
    topic: &str,
    timeout: Duration,
    mut done: impl FnMut(&[Msg]) -> bool,
) -> Vec<Msg> {
    let mut c = config(brokers);
    c.set("group.id", format!("reader-{}", rand::random::<u64>()));
    c.set("enable.auto.commit", "false");
    c.set("fetch.wait.max.ms", "50");
    let consumer: BaseConsumer = c.create().expect("consumer");
    let deadline = Instant::now() + timeout;
    // The topic may not exist yet (a sink creates it when it starts).
    let mut parts = 0;
    let _listed = crate::wait_for(timeout, || {
        parts = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(5))
            .ok()
            .and_then(|md| {
                md.topics()
                    .iter()
                    .find(|t| t.name() == topic && t.error().is_none())
                    .map(|t| t.partitions().len())
            })
            .unwrap_or(0);
        parts > 0
    });
    let mut tpl = TopicPartitionList::new();
    for p in 0..parts {
        tpl.add_partition_offset(topic, p as i32, Offset::Beginning)
            .expect("tpl");
    }
    consumer.assign(&tpl).expect("assign");
    drop(tpl);
    let mut out = Vec::new();
    // Asked on every pass, also when nothing arrived: a condition may wait out a grace.
    while Instant::now() < deadline {
        if done(&out) {
            break;
        }
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let headers = m
                .headers()
                .into_iter()
                .flat_map(|hs| hs.iter())
                .map(|h| {
                    let value = String::from_utf8_lossy(h.value.unwrap_or_default());
                    (h.key.to_string(), value.into_owned())
                })
                .collect();
            out.push(Msg {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                value: m.payload().unwrap_or_default().to_vec(),
                headers,
                timestamp: m.timestamp().to_millis(),
            });
        }
    }
    out
}

/// The consumer group's committed offsets (next offset to read) of `topic`'s partitions.
pub fn group_offsets(brokers: &str, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let mut c = config(brokers);
    c.set("group.id", group);
    c.set("enable.auto.commit", "false");
    let consumer: BaseConsumer = c.create().expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed");
    // Copy the offsets out and drop the list before the consumer (librdkafka hangs otherwise).
    let out = got
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => o,
            _ => -1,
        })
        .collect();
    drop(got);
    out
}

/// Commits `offset` (the next offset to read) for one partition to a consumer group, as
/// another member of the group would.
pub fn commit_group_offset(brokers: &str, group: &str, topic: &str, partition: i32, offset: i64) {
    let mut c = config(brokers);
    c.set("group.id", group);
    c.set("enable.auto.commit", "false");
    let consumer: BaseConsumer = c.create().expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
        .expect("tpl");
    consumer
        .commit(&tpl, rdkafka::consumer::CommitMode::Sync)
        .expect("commit");
}

/// A scratch folder holding a private broker (started, or only given a port when `start` is
/// false), the broker's address and a fresh topic name: for tests that stop and start it.
pub fn private_broker(prefix: &str, start: bool) -> (crate::Scratch, Tansu, String, String) {
    let s = crate::Scratch::new();
    let dir = s.path("tansu");
    let broker = if start {
        Tansu::start(&dir)
    } else {
        Tansu::reserve(&dir)
    };
    let brokers = broker.brokers();
    (s, broker, brokers, topic(prefix))
}

/// A private tansu broker on a fixed port (for tests that stop and restart it).
pub struct Tansu {
    pub port: u16,
    dir: std::path::PathBuf,
    child: Option<Child>,
}

impl Tansu {
    /// Starts tansu (`SLUICE_TEST_TANSU_BIN`) with memory storage on a free port, working in `dir`.
    pub fn start(dir: &Path) -> Self {
        let mut t = Self::reserve(dir);
        t.restart();
        t
    }

    /// Picks a free port without starting the broker (for tests of a broker that comes late);
    /// [`Tansu::restart`] starts it there.
    pub fn reserve(dir: &Path) -> Self {
        let port = crate::free_port();
        Self {
            port,
            dir: dir.to_path_buf(),
            child: None,
        }
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port; waits until it listens.
    pub fn restart(&mut self) {
        let bin = crate::emulator::tansu_bin();
        std::fs::create_dir_all(&self.dir).expect("tansu dir");
        std::fs::write(self.dir.join(".env"), "").expect("tansu .env");
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("tansu.log"))
            .expect("tansu log");
        let child = Command::new(bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "memory://tansu/",
            ])
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start tansu");
        self.child = Some(child);
        let addr: SocketAddr = self.brokers().parse().expect("addr");
        assert!(
            crate::wait_for(Duration::from_secs(20), || TcpStream::connect_timeout(
                &addr,
                Duration::from_millis(200)
            )
            .is_ok()),
            "tansu did not listen on {addr}"
        );
    }

    /// Kills the broker (its memory storage is lost).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.kill();
    }
}
