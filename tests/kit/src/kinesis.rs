//! Kinesis helpers: a blocking client of kinesis-local, randomly named streams, a Kinesis → file
//! spec and readers of its output.

use std::time::{Duration, Instant};

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, Shard, ShardIteratorType, StreamStatus};

/// The emulator's endpoint; panics with a hint when nothing answers there.
pub fn endpoint() -> String {
    crate::emulator::kinesis()
}

pub use crate::aws_yaml;

/// A record read back from a stream.
#[derive(Debug, Clone)]
pub struct Got {
    pub shard: String,
    pub seq: String,
    pub key: String,
    pub data: Vec<u8>,
}

/// A client of the emulator with a runtime of its own, for synchronous tests.
pub struct Kinesis {
    pub rt: tokio::runtime::Runtime,
    pub client: Client,
    pub endpoint: String,
}

impl Kinesis {
    pub fn new() -> Self {
        let endpoint = endpoint();
        let conf = aws_sdk_kinesis::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(&endpoint)
            .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
            .build();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        Self {
            rt,
            client: Client::from_conf(conf),
            endpoint,
        }
    }

    /// A new stream with a random name and `shards` shards, active.
    pub fn create_stream(&self, shards: i32) -> String {
        let name = crate::unique_name("sluice-test");
        self.rt
            .block_on(
                self.client
                    .create_stream()
                    .stream_name(&name)
                    .shard_count(shards)
                    .send(),
            )
            .expect("CreateStream");
        self.wait_active(&name);
        name
    }

    pub fn wait_active(&self, name: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = self
                .rt
                .block_on(
                    self.client
                        .describe_stream_summary()
                        .stream_name(name)
                        .send(),
                )
                .expect("DescribeStreamSummary");
            let status = s
                .stream_description_summary()
                .map(|d| d.stream_status().clone());
            if status == Some(StreamStatus::Active) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "stream {name} not active: {status:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Writes records (partition key, data) in order, 500 per call, retrying refused entries.
    pub fn put(&self, stream: &str, records: &[(String, Vec<u8>)]) {
        for chunk in records.chunks(500) {
            let mut todo: Vec<&(String, Vec<u8>)> = chunk.iter().collect();
            while !todo.is_empty() {
                let entries = todo
                    .iter()
                    .map(|(k, d)| {
                        PutRecordsRequestEntry::builder()
                            .partition_key(k)
                            .data(Blob::new(d.clone()))
                            .build()
                            .expect("entry")
                    })
                    .collect();
                let out = self
                    .rt
                    .block_on(
                        self.client
                            .put_records()
                            .stream_name(stream)
                            .set_records(Some(entries))
                            .send(),
                    )
                    .expect("PutRecords");
                todo = todo
                    .into_iter()
                    .zip(out.records())
                    .filter(|(_, r)| r.error_code().is_some())
                    .map(|(e, _)| e)
                    .collect();
            }
        }
    }

    /// A new stream of `shards` shards holding [`Kinesis::put_seqs`]`(seqs, keys)`.
    pub fn stream_with_seqs(&self, shards: i32, seqs: std::ops::Range<u64>, keys: u64) -> String {
        let stream = self.create_stream(shards);
        self.put_seqs(&stream, seqs, keys);
        stream
    }

    /// JSON records `{"seq":N,"key":"kK"}` for `seqs`, keyed by `k{seq % keys}`.
    pub fn put_seqs(&self, stream: &str, seqs: std::ops::Range<u64>, keys: u64) {
        let recs: Vec<(String, Vec<u8>)> = seqs
            .map(|s| {
                let k = format!("k{}", s % keys);
                (
                    k.clone(),
                    format!(r#"{{"seq":{s},"key":"{k}"}}"#).into_bytes(),
                )
            })
            .collect();
        self.put(stream, &recs);
    }

    pub fn shards(&self, stream: &str) -> Vec<Shard> {
        self.rt
            .block_on(self.client.list_shards().stream_name(stream).send())
            .expect("ListShards")
            .shards()
            .to_vec()
    }

    pub fn open_shards(&self, stream: &str) -> Vec<Shard> {
        self.shards(stream)
            .into_iter()
            .filter(|s| {
                s.sequence_number_range()
                    .is_some_and(|r| r.ending_sequence_number().is_none())
            })
            .collect()
    }

    /// Splits a shard in the middle of its hash range.
    pub fn split(&self, stream: &str, shard: &Shard) {
        let r = shard.hash_key_range().expect("range");
        let lo: u128 = r.starting_hash_key().parse().expect("start");
        let hi: u128 = r.ending_hash_key().parse().expect("end");
        let mid = lo + (hi - lo) / 2;
        self.rt
            .block_on(
                self.client
                    .split_shard()
                    .stream_name(stream)
                    .shard_to_split(shard.shard_id())
                    .new_starting_hash_key(mid.to_string())
                    .send(),
            )
            .expect("SplitShard");
        self.wait_active(stream);
    }

    /// Merges two adjacent open shards.
    pub fn merge(&self, stream: &str, a: &str, b: &str) {
        self.rt
            .block_on(
                self.client
                    .merge_shards()
                    .stream_name(stream)
                    .shard_to_merge(a)
                    .adjacent_shard_to_merge(b)
                    .send(),
            )
            .expect("MergeShards");
        self.wait_active(stream);
    }

    /// Every record of every shard, from the trim horizon.
    pub fn read_all(&self, stream: &str) -> Vec<Got> {
        let mut out = Vec::new();
        for s in self.shards(stream) {
            let mut it = self
                .rt
                .block_on(
                    self.client
                        .get_shard_iterator()
                        .stream_name(stream)
                        .shard_id(s.shard_id())
                        .shard_iterator_type(ShardIteratorType::TrimHorizon)
                        .send(),
                )
                .expect("GetShardIterator")
                .shard_iterator()
                .map(str::to_string);
            while let Some(i) = it {
                let r = self
                    .rt
                    .block_on(self.client.get_records().shard_iterator(i).send())
                    .expect("GetRecords");
                for rec in r.records() {
                    out.push(Got {
                        shard: s.shard_id().to_string(),
                        seq: rec.sequence_number().to_string(),
                        key: rec.partition_key().unwrap_or_default().to_string(),
                        data: rec.data().as_ref().to_vec(),
                    });
                }
                if r.records().is_empty() && r.millis_behind_latest().unwrap_or(0) == 0 {
                    break;
                }
                it = r.next_shard_iterator().map(str::to_string);
            }
        }
        out
    }

    pub fn consumers(&self, stream_arn: &str) -> Vec<String> {
        self.rt
            .block_on(
                self.client
                    .list_stream_consumers()
                    .stream_arn(stream_arn)
                    .send(),
            )
            .expect("ListStreamConsumers")
            .consumers()
            .iter()
            .map(|c| c.consumer_name().to_string())
            .collect()
    }

    pub fn stream_arn(&self, stream: &str) -> String {
        self.rt
            .block_on(
                self.client
                    .describe_stream_summary()
                    .stream_name(stream)
                    .send(),
            )
            .expect("DescribeStreamSummary")
            .stream_description_summary()
            .expect("summary")
            .stream_arn()
            .to_string()
    }

    pub fn delete(&self, stream: &str) {
        let _ = self.rt.block_on(
            self.client
                .delete_stream()
                .stream_name(stream)
                .enforce_consumer_deletion(true)
                .send(),
        );
    }
}

/// A Kinesis → file spec (JSON values, envelopes with metadata, fast commits).
pub fn source_spec(name: &str, endpoint: &str, source_extra: &str) -> String {
    format!(
        "version: 1\nname: {name}\nsource:\n  type: kinesis\n{source_extra}  shard_discovery_interval: 500ms\n{aws}sink:\n  type: file\n  path: out/data.jsonl\n  envelope: true\noffsets:\n  store: file\n  path: offsets\n  commit_interval: 100ms\npipeline:\n  flush_interval: 50ms\n  max_buffered: 1000\n",
        aws = aws_yaml(endpoint, "  "),
    )
}

/// An output envelope line: (seq, key, shard-id, offset).
pub fn envelope(line: &str) -> (u64, String, String, String) {
    let v: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("bad line {line:?}: {e}"));
    let m = &v["metadata"];
    (
        v["value"]["seq"]
            .as_u64()
            .unwrap_or_else(|| panic!("no seq in {line}")),
        v["value"]["key"].as_str().unwrap_or_default().to_string(),
        m["shard-id"].as_str().unwrap_or_default().to_string(),
        m["offset"].as_str().unwrap_or_default().to_string(),
    )
}

/// Committed offsets of a pipeline in the file store `dir/offsets`: (shard, offset, finished),
/// by shard.
pub fn committed(dir: &std::path::Path, name: &str) -> Vec<(String, String, bool)> {
    crate::committed_offsets(&dir.join("offsets"), name)
}
