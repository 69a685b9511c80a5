use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::GeneratorConfig;
use crate::api::{Source, SourceBatch, SourceContext};
use crate::error::ConnectorError;
use crate::record::{Offset, PartitionId, Record};

const BEHAVIORS: [&str; 4] = ["pv", "cart", "fav", "buy"];
/// 2017-11-25T00:00:00Z, the start of the UserBehavior data set.
const EPOCH_S: u64 = 1_511_568_000;
/// Bytes of an unpadded record, about: what a batch's buffer reserves per record at least.
const MIN_RECORD: usize = 160;

/// SplitMix64: a fast, well-mixed hash of the sequence number.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Renders record `seq` into `buf` (cleared first). Deterministic in `(seq, seed, pad_to)`.
#[cfg(test)]
fn render(seq: u64, seed: u64, pad_to: usize, buf: &mut Vec<u8>) {
    buf.clear();
    render_onto(seq, seed, pad_to, buf);
}

/// Appends record `seq` to `out` (deterministic in `(seq, seed, pad_to)`), without `core::fmt` (integers through
/// `itoa`), as the source renders a whole batch into one buffer.
fn render_onto(seq: u64, seed: u64, pad_to: usize, out: &mut Vec<u8>) {
    let start = out.len();
    let h = mix(seq ^ seed.rotate_left(17));
    let user_id = 1 + (h % 100_000);
    let item_id = 1 + ((h >> 17) % 5_000_000);
    let category_id = 1 + ((h >> 40) % 10_000);
    let behavior = BEHAVIORS[((h >> 60) & 3) as usize];
    let ts = EPOCH_S + seq / 8;
    let mut n = itoa::Buffer::new();
    let mut field = |name: &[u8], value: &[u8]| {
        out.extend_from_slice(name);
        out.extend_from_slice(value);
    };
    field(br#"{"seq":"#, n.format(seq).as_bytes());
    field(br#","user_id":"#, n.format(user_id).as_bytes());
    field(br#","item_id":"#, n.format(item_id).as_bytes());
    field(br#","category_id":"#, n.format(category_id).as_bytes());
    field(br#","behavior":""#, behavior.as_bytes());
    field(br#"","ts":"#, n.format(ts).as_bytes());
    field(br#","email":"user"#, n.format(user_id).as_bytes());
    out.extend_from_slice(br#"@example.com""#);
    let len = out.len() - start;
    if pad_to > len + 10 {
        let n = pad_to - len - 10;
        out.extend_from_slice(br#","pad":""#);
        out.resize(out.len() + n, b'x');
        out.push(b'"');
    }
    out.push(b'}');
}

/// Emits generator records; see the module docs.
pub struct GeneratorSource {
    cfg: GeneratorConfig,
}

impl GeneratorSource {
    pub fn new(cfg: GeneratorConfig) -> Self {
        Self { cfg }
    }
}

struct Part {
    id: PartitionId,
    p: u64,
    /// Index (within the partition) of the next record.
    next: u64,
    /// One past the last index, if the stream is finite.
    end: Option<u64>,
    done: bool,
}

#[async_trait]
impl Source for GeneratorSource {
    async fn run(&mut self, ctx: SourceContext) -> Result<(), ConnectorError> {
        let parts_n = u64::from(self.cfg.partitions.max(1));
        let mut parts = Vec::new();
        for p in 0..parts_n {
            let id: PartitionId = Arc::from(p.to_string());
            let end = self
                .cfg
                .count
                .map(|c| if c > p { (c - p).div_ceil(parts_n) } else { 0 });
            let (next, finished) = match ctx.start.get(&id) {
                Some(c) => {
                    let last: u64 = c.offset.as_str().parse().map_err(|_| {
                        ConnectorError::fatal(format!(
                            "generator: committed offset {:?} of partition {id} is not a record index",
                            c.offset
                        ))
                    })?;
                    (last + 1, c.finished)
                }
                None => (0, false),
            };
            parts.push(Part {
                id,
                p,
                next,
                end,
                done: finished,
            });
        }
        let pad_to = self.cfg.record_size.map_or(0, |s| s.0 as usize);
        let batch = self.cfg.batch_size.max(1);
        // Pace in slices of 100 ms: each slice may emit rate/10 records.
        let per_slice = self.cfg.rate.map(|r| (r / 10.0).max(1.0) as u64);
        let mut ticker = tokio::time::interval(Duration::from_millis(100));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut budget = 0u64;
        loop {
            let mut progressed = false;
            for part in parts.iter_mut().filter(|p| !p.done) {
                if let Some(slice) = per_slice
                    && budget == 0
                {
                    tokio::select! {
                        _ = ctx.shutdown.cancelled() => return Ok(()),
                        _ = ticker.tick() => budget = slice,
                    }
                }
                let mut n = batch as u64;
                if per_slice.is_some() {
                    n = n.min(budget);
                }
                if let Some(end) = part.end {
                    // `next` is past `end` when `count` was lowered since the last run.
                    n = n.min(end.saturating_sub(part.next));
                }
                let mut records = Vec::with_capacity(n as usize);
                // The record's timestamp is when it was made, not the data's 2017 `ts`: a Kafka
                // sink passes it on, and a broker's retention deletes records that old at once.
                let made_ms = chrono::Utc::now().timestamp_millis();
                // The batch's values share one buffer (one allocation, not one per record), and
                // its records one partition id of their own: the id's reference count is then
                // touched by the threads this batch passes through, not by every batch's.
                let mut values = Vec::with_capacity(n as usize * pad_to.max(MIN_RECORD));
                let mut ends = Vec::with_capacity(n as usize);
                for i in part.next..part.next + n {
                    render_onto(part.p + i * parts_n, self.cfg.seed, pad_to, &mut values);
                    ends.push(values.len());
                }
                let values = Bytes::from(values);
                let partition: PartitionId = Arc::from(&*part.id);
                let mut from = 0;
                for (i, end) in (part.next..).zip(ends) {
                    let mut r =
                        Record::new(partition.clone(), Offset::from(i), values.slice(from..end));
                    r.timestamp = Some(made_ms);
                    records.push(r);
                    from = end;
                }
                part.next += n;
                if per_slice.is_some() {
                    budget -= n;
                }
                let at_end = part.end.is_some_and(|e| part.next >= e);
                if n == 0 && !at_end {
                    continue;
                }
                part.done = at_end;
                progressed = true;
                let end_offset = (at_end && records.is_empty())
                    .then(|| Offset::from(part.next.saturating_sub(1)));
                if at_end && records.is_empty() && part.next == 0 {
                    // An empty partition: nothing to record.
                    continue;
                }
                let sent = ctx
                    .send(SourceBatch {
                        partition: part.id.clone(),
                        records,
                        end_of_partition: at_end,
                        end_offset,
                    })
                    .await;
                if !sent {
                    return Ok(());
                }
            }
            if parts.iter().all(|p| p.done) {
                return Ok(());
            }
            if !progressed && per_slice.is_none() {
                tokio::task::yield_now().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Committed, CommittedOffsets};

    /// Runs a finite generator from `start` to its end (it must end by itself) and returns its
    /// batches.
    async fn batches(cfg: serde_json::Value, start: CommittedOffsets) -> Vec<SourceBatch> {
        let cfg: GeneratorConfig = serde_json::from_value(cfg).expect("config");
        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
        let (_watch_tx, committed) = tokio::sync::watch::channel(Arc::new(start.clone()));
        let ctx = SourceContext {
            start,
            output: tx,
            shutdown: tokio_util::sync::CancellationToken::new(),
            committed,
            assigned: None,
            lag: Default::default(),
            grants: None,
            until_caught_up: false,
        };
        let run =
            tokio::time::timeout(Duration::from_secs(5), GeneratorSource::new(cfg).run(ctx)).await;
        assert!(
            matches!(run, Ok(Ok(()))),
            "the source ends by itself: {run:?}"
        );
        let mut out = Vec::new();
        while let Ok(b) = rx.try_recv() {
            out.push(b);
        }
        out
    }

    #[tokio::test]
    async fn a_count_lowered_below_the_committed_offset_emits_nothing_and_ends() {
        let start = CommittedOffsets::from([(
            PartitionId::from("0"),
            Committed {
                offset: Offset::from(19),
                finished: false,
            },
        )]);
        let batches = batches(serde_json::json!({"count": 10, "partitions": 1}), start).await;
        assert!(
            batches.iter().all(|b| b.records.is_empty()),
            "no record past `count`: {batches:?}"
        );
        assert!(
            batches
                .iter()
                .all(|b| b.end_offset.as_ref().is_none_or(|o| o.as_str() == "19")),
            "the committed offset never moves: {batches:?}"
        );
    }

    #[tokio::test]
    async fn a_batch_in_one_buffer_holds_each_record_as_render_makes_it() {
        for size in [0u64, 300] {
            let out = batches(
                serde_json::json!({
                    "count": 50, "partitions": 2, "batch_size": 7, "seed": 3, "record_size": size
                }),
                CommittedOffsets::default(),
            )
            .await;
            let mut seen = 0;
            let mut expected = Vec::new();
            for b in &out {
                for r in &b.records {
                    let i: u64 = r.offset.as_str().parse().expect("index offset");
                    let p: u64 = b.partition.parse().expect("numeric partition");
                    render(p + i * 2, 3, size as usize, &mut expected);
                    assert_eq!(r.value, expected, "partition {p} offset {i}");
                    assert_eq!(r.partition, b.partition);
                    seen += 1;
                }
            }
            assert_eq!(seen, 50);
        }
    }

    #[test]
    fn records_are_deterministic_json_of_the_requested_size() {
        let mut a = Vec::new();
        let mut b = Vec::new();
        render(42, 7, 0, &mut a);
        render(42, 7, 0, &mut b);
        assert_eq!(a, b);
        // What every earlier version rendered (then through `core::fmt`).
        assert_eq!(
            std::str::from_utf8(&a).expect("UTF-8"),
            r#"{"seq":42,"user_id":39160,"item_id":3125092,"category_id":3628,"behavior":"fav","ts":1511568005,"email":"user39160@example.com"}"#
        );
        let v: serde_json::Value = serde_json::from_slice(&a).expect("valid JSON");
        assert_eq!(v["seq"], 42);
        assert!(
            v["email"]
                .as_str()
                .is_some_and(|e| e.ends_with("@example.com"))
        );
        render(42, 7, 1024, &mut a);
        assert_eq!(a.len(), 1024);
        let v: serde_json::Value = serde_json::from_slice(&a).expect("valid padded JSON");
        assert!(v["pad"].is_string());
    }
}
