//! Where a Kafka source stands against the end of its partitions: `sluice_source_lag_records`
//! (high watermark minus position, with the watermarks fetched every [`LAG_INTERVAL`], not per
//! record) and `--until-caught-up` (each partition stops at the high watermark it had when the
//! run started).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::topic_partition_list::{Offset as KOffset, TopicPartitionList};

use super::source::{Tp, partition_id};
use crate::api::Lag;
use crate::record::PartitionId;

/// How often the high watermarks of the assigned partitions are fetched for the lag in records.
pub(super) const LAG_INTERVAL: Duration = Duration::from_secs(2);
/// How often `--until-caught-up` compares positions with the tips at start.
const CHECK_INTERVAL: Duration = Duration::from_millis(100);
/// One ListOffsets round trip; a broker that does not answer in time is asked again later.
const WATERMARK_TIMEOUT: Duration = Duration::from_secs(2);

/// What the poll loop knows about the end of each partition.
pub(super) struct Tips {
    /// `--until-caught-up`: the (low, high) watermarks of each partition at the run's start (or,
    /// if it could not be fetched then, when first assigned).
    ends: Option<HashMap<Tp, (i64, i64)>>,
    /// `--until-caught-up`: partitions read up to their tip (paused in the consumer).
    reached: std::collections::HashSet<Tp>,
    next_lag: Instant,
    next_check: Instant,
}

impl Tips {
    pub fn new(until_caught_up: bool) -> Self {
        Self {
            ends: until_caught_up.then(HashMap::new),
            reached: Default::default(),
            next_lag: Instant::now(),
            next_check: Instant::now(),
        }
    }

    /// With `--until-caught-up`, when the run starts: the watermarks of every partition of
    /// `topics`, so each stops at its tip of that moment. A partition missed here (a broker that
    /// did not answer) gets its tip when it is first assigned.
    pub fn fetch_ends<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        topics: &[String],
    ) {
        let Some(ends) = self.ends.as_mut() else {
            return;
        };
        for topic in topics {
            let partitions: Vec<i32> = match consumer.fetch_metadata(Some(topic), WATERMARK_TIMEOUT)
            {
                Ok(m) => m
                    .topics()
                    .iter()
                    .filter(|t| t.name() == topic)
                    .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                    .collect(),
                Err(e) => {
                    tracing::warn!(topic = %topic, error = %e, "kafka source: cannot list the topic's partitions at the start; their tips are taken when they are assigned");
                    continue;
                }
            };
            for p in partitions {
                if let Ok(w) = consumer.fetch_watermarks(topic, p, WATERMARK_TIMEOUT) {
                    ends.insert((topic.clone(), p), w);
                }
            }
        }
    }

    /// Whether [`Tips::report_lag`] or [`Tips::caught_up`] has work now (one clock read, so
    /// the poll loop can ask per record).
    pub fn due(&self) -> bool {
        let now = Instant::now();
        now >= self.next_lag || (self.ends.is_some() && now >= self.next_check)
    }

    /// With `--until-caught-up`: the record at `offset` is past its partition's tip at start
    /// (left for the next run).
    pub fn beyond_end(&self, tp: &Tp, offset: i64) -> bool {
        self.ends
            .as_ref()
            .and_then(|e| e.get(tp))
            .is_some_and(|(_, high)| offset >= *high)
    }

    /// Every [`LAG_INTERVAL`]: fetches the high watermark of each assigned partition and
    /// reports high watermark minus position as its lag in records.
    pub fn report_lag<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        starts: &HashMap<Tp, KOffset>,
        lag: &Lag,
    ) {
        if Instant::now() < self.next_lag {
            return;
        }
        self.next_lag = Instant::now() + LAG_INTERVAL;
        let positions = positions(consumer);
        for tp in assigned(consumer) {
            let (low, high) = match consumer.fetch_watermarks(&tp.0, tp.1, WATERMARK_TIMEOUT) {
                Ok(w) => w,
                Err(e) => {
                    tracing::debug!(partition = %partition_id(&tp.0, tp.1), error = %e, "kafka source: cannot fetch the partition's high watermark; its lag in records waits for the next try");
                    continue;
                }
            };
            let pos = position(&tp, &positions, starts, (low, high));
            if let Some(pos) = pos {
                let id = PartitionId::from(partition_id(&tp.0, tp.1));
                lag.set_records(&id, high.saturating_sub(pos).max(0) as u64);
            }
        }
    }

    /// With `--until-caught-up`, at most every [`CHECK_INTERVAL`]: whether every assigned
    /// partition was read up to its tip at start. Partitions seen for the first time get their
    /// tip now; partitions that reached it are paused.
    pub fn caught_up<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        starts: &HashMap<Tp, KOffset>,
    ) -> bool {
        let Some(ends) = self.ends.as_mut() else {
            return false;
        };
        if Instant::now() < self.next_check {
            return false;
        }
        self.next_check = Instant::now() + CHECK_INTERVAL;
        let tps = assigned(consumer);
        if tps.is_empty() {
            return false;
        }
        let positions = positions(consumer);
        let mut pause = TopicPartitionList::new();
        let mut all = true;
        for tp in tps {
            if self.reached.contains(&tp) {
                continue;
            }
            if !ends.contains_key(&tp) {
                match consumer.fetch_watermarks(&tp.0, tp.1, WATERMARK_TIMEOUT) {
                    Ok(w) => {
                        tracing::info!(partition = %partition_id(&tp.0, tp.1), high_watermark = w.1, "kafka source: reading up to the partition's tip");
                        ends.insert(tp.clone(), w);
                    }
                    Err(e) => {
                        tracing::warn!(partition = %partition_id(&tp.0, tp.1), error = %e, "kafka source: cannot fetch the partition's high watermark; asking again");
                        all = false;
                        continue;
                    }
                }
            }
            let w = ends[&tp];
            if position(&tp, &positions, starts, w).is_some_and(|p| p >= w.1) {
                tracing::info!(partition = %partition_id(&tp.0, tp.1), "kafka source: partition read up to its tip");
                let _ = pause.add_partition(&tp.0, tp.1);
                self.reached.insert(tp);
            } else {
                all = false;
            }
        }
        if pause.count() > 0
            && let Err(e) = consumer.pause(&pause)
        {
            tracing::debug!(error = %e, "kafka source: cannot pause partitions read up to their tip");
        }
        all
    }
}

fn assigned<C: ConsumerContext>(consumer: &BaseConsumer<C>) -> Vec<Tp> {
    consumer
        .assignment()
        .map(|l| {
            l.elements()
                .iter()
                .map(|e| (e.topic().to_string(), e.partition()))
                .collect()
        })
        .unwrap_or_default()
}

/// The consumer's positions (the offset after the last message or transaction marker consumed),
/// where it has one.
fn positions<C: ConsumerContext>(consumer: &BaseConsumer<C>) -> HashMap<Tp, i64> {
    consumer
        .position()
        .map(|l| {
            l.elements()
                .iter()
                .filter_map(|e| match e.offset() {
                    KOffset::Offset(o) if o >= 0 => {
                        Some(((e.topic().to_string(), e.partition()), o))
                    }
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Where a partition is read up to: the consumer's position, or before anything was consumed,
/// where it was told to start.
fn position(
    tp: &Tp,
    positions: &HashMap<Tp, i64>,
    starts: &HashMap<Tp, KOffset>,
    (low, high): (i64, i64),
) -> Option<i64> {
    if let Some(p) = positions.get(tp) {
        return Some(*p);
    }
    match starts.get(tp)? {
        KOffset::Offset(o) => Some((*o).max(low)),
        KOffset::Beginning => Some(low),
        KOffset::End => Some(high),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_not_consumed_yet_stands_where_it_was_told_to_start() {
        let tp: Tp = ("t".into(), 0);
        let none = HashMap::new();
        let at = |o| HashMap::from([(tp.clone(), o)]);
        assert_eq!(
            position(&tp, &none, &at(KOffset::Beginning), (3, 9)),
            Some(3)
        );
        assert_eq!(position(&tp, &none, &at(KOffset::End), (3, 9)), Some(9));
        assert_eq!(
            position(&tp, &none, &at(KOffset::Offset(1)), (3, 9)),
            Some(3)
        );
        assert_eq!(
            position(&tp, &none, &at(KOffset::Offset(5)), (3, 9)),
            Some(5)
        );
        assert_eq!(position(&tp, &none, &HashMap::new(), (3, 9)), None);
        let consumed = HashMap::from([(tp.clone(), 7)]);
        assert_eq!(
            position(&tp, &consumed, &at(KOffset::Beginning), (3, 9)),
            Some(7)
        );
    }
}
