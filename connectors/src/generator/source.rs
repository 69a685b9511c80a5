use std::io::Write;
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

/// SplitMix64: a fast, well-mixed hash of the sequence number.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Renders record `seq` into `buf` (cleared first). Deterministic in `(seq, seed, pad_to)`.
pub fn render(seq: u64, seed: u64, pad_to: usize, buf: &mut Vec<u8>) {
    buf.clear();
    let h = mix(seq ^ seed.rotate_left(17));
    let user_id = 1 + (h % 100_000);
    let item_id = 1 + ((h >> 17) % 5_000_000);
    let category_id = 1 + ((h >> 40) % 10_000);
    let behavior = BEHAVIORS[((h >> 60) & 3) as usize];
    let ts = EPOCH_S + seq / 8;
    // Writing into a Vec cannot fail.
    let _ = write!(
        buf,
        r#"{{"seq":{seq},"user_id":{user_id},"item_id":{item_id},"category_id":{category_id},"behavior":"{behavior}","ts":{ts},"email":"user{user_id}@example.com""#
    );
    if pad_to > buf.len() + 10 {
        let n = pad_to - buf.len() - 10;
        buf.extend_from_slice(br#","pad":""#);
        buf.resize(buf.len() + n, b'x');
        buf.push(b'"');
    }
    buf.push(b'}');
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
        let mut buf = Vec::with_capacity(pad_to.max(256));
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
                for i in part.next..part.next + n {
                    let seq = part.p + i * parts_n;
                    render(seq, self.cfg.seed, pad_to, &mut buf);
                    let mut r = Record::new(
                        part.id.clone(),
                        Offset::from(i),
                        Bytes::copy_from_slice(&buf),
                    );
                    r.timestamp = Some(made_ms);
                    records.push(r);
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

    #[tokio::test]
    async fn a_count_lowered_below_the_committed_offset_emits_nothing_and_ends() {
        let cfg: GeneratorConfig =
            serde_json::from_value(serde_json::json!({"count": 10, "partitions": 1}))
                .expect("config");
        let start = CommittedOffsets::from([(
            PartitionId::from("0"),
            Committed {
                offset: Offset::from(19),
                finished: false,
            },
        )]);
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
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
        let mut batches = Vec::new();
        while let Ok(b) = rx.try_recv() {
            batches.push(b);
        }
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

    #[test]
    fn records_are_deterministic_json_of_the_requested_size() {
        let mut a = Vec::new();
        let mut b = Vec::new();
        render(42, 7, 0, &mut a);
        render(42, 7, 0, &mut b);
        assert_eq!(a, b);
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
