//! From Kinesis records to Sluice records: KPL de-aggregation, metadata, offsets, and the
//! position a shard reader resumes from.

use std::borrow::Cow;

use aws_sdk_kinesis::types::{ShardIteratorType, StartingPosition};
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};

use super::aggregation;
use crate::record::{Offset, PartitionId, Record};

/// Where a shard reader starts (or starts again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartAt {
    /// Right after this sequence number (a committed plain record).
    After(String),
    /// At this sequence number, skipping its user records up to this sub-sequence number (a
    /// committed record inside a KPL aggregate).
    AtSub(String, u64),
    Latest,
    TrimHorizon,
    Timestamp(DateTime<Utc>),
}

impl StartAt {
    /// Resumes after a committed offset: `<seq>` or `<seq>:<sub>`.
    pub fn after_offset(o: &Offset) -> Self {
        match o.as_str().split_once(':') {
            Some((seq, sub)) => match sub.parse() {
                Ok(sub) => Self::AtSub(seq.to_string(), sub),
                Err(_) => Self::After(seq.to_string()),
            },
            None => Self::After(o.as_str().to_string()),
        }
    }

    /// The iterator type and its sequence number.
    pub fn iterator_type(&self) -> (ShardIteratorType, Option<&str>) {
        match self {
            Self::After(s) => (ShardIteratorType::AfterSequenceNumber, Some(s)),
            Self::AtSub(s, _) => (ShardIteratorType::AtSequenceNumber, Some(s)),
            Self::Latest => (ShardIteratorType::Latest, None),
            Self::TrimHorizon => (ShardIteratorType::TrimHorizon, None),
            Self::Timestamp(_) => (ShardIteratorType::AtTimestamp, None),
        }
    }

    pub fn timestamp(&self) -> Option<aws_smithy_types::DateTime> {
        match self {
            Self::Timestamp(t) => Some(aws_smithy_types::DateTime::from_millis(
                t.timestamp_millis(),
            )),
            _ => None,
        }
    }

    /// The same position as an EFO starting position.
    pub fn starting_position(
        &self,
    ) -> Result<StartingPosition, aws_smithy_types::error::operation::BuildError> {
        let (t, seq) = self.iterator_type();
        StartingPosition::builder()
            .r#type(t)
            .set_sequence_number(seq.map(str::to_string))
            .set_timestamp(self.timestamp())
            .build()
    }

    /// Records to skip: the already delivered user records of the first aggregate.
    fn skip(&self) -> Option<(String, u64)> {
        match self {
            Self::AtSub(s, sub) => Some((s.clone(), *sub)),
            _ => None,
        }
    }
}

/// Turns one shard's Kinesis records into Sluice records, remembering the position after the
/// last one.
pub struct Converter {
    stream: String,
    shard: PartitionId,
    skip: Option<(String, u64)>,
    /// The position after the last converted record, if any was converted.
    pub position: Option<StartAt>,
    /// Payload bytes converted, for adaptive reads.
    pub bytes: u64,
    /// The last arrival time formatted, in ms, and its text.
    last_arrival: Option<(i64, String)>,
}

impl Converter {
    pub fn new(stream: &str, shard: PartitionId, start: &StartAt) -> Self {
        Self {
            stream: stream.to_string(),
            shard,
            skip: start.skip(),
            position: None,
            bytes: 0,
            last_arrival: None,
        }
    }

    /// Reading starts again at `from` (a new iterator or subscription).
    pub fn resume_at(&mut self, from: &StartAt) {
        self.skip = from.skip();
    }

    /// Appends the records (de-aggregated) of `recs` to `out`. The records are taken by value:
    /// their data, sequence numbers and partition keys move into the Sluice records uncopied.
    pub fn convert(&mut self, recs: Vec<aws_sdk_kinesis::types::Record>, out: &mut Vec<Record>) {
        for r in recs {
            let arrival = r
                .approximate_arrival_timestamp
                .and_then(|t| t.to_millis().ok());
            let seq = r.sequence_number;
            let data = Bytes::from(r.data.into_inner());
            self.bytes += data.len() as u64;
            let skip_to = match self.skip.take() {
                Some((s, sub)) if s == seq => Some(sub),
                _ => None,
            };
            match aggregation::deaggregate(&data) {
                Some(users) => {
                    let n = users.len();
                    for (i, u) in users.into_iter().enumerate() {
                        let sub = i as u64;
                        if skip_to.is_some_and(|k| sub <= k) {
                            continue;
                        }
                        let rec = self.record(
                            format!("{seq}:{sub}"),
                            seq.clone(),
                            Some(sub),
                            arrival,
                            u.partition_key,
                            u.data,
                        );
                        out.push(rec);
                    }
                    if n > 0 {
                        self.position = Some(StartAt::AtSub(seq, n as u64 - 1));
                    }
                }
                None => {
                    // A plain record is never partly delivered: a sub-sequence skip of a plain
                    // record means it was delivered.
                    if skip_to.is_none() {
                        let pk = r.partition_key.unwrap_or_default();
                        let rec = self.record(seq.clone(), seq.clone(), None, arrival, pk, data);
                        out.push(rec);
                    }
                    self.position = Some(StartAt::After(seq));
                }
            }
        }
    }

    /// The RFC 3339 form of an arrival time: records of one PutRecords call share their arrival
    /// time, so the last one formatted is kept.
    fn arrival_text(&mut self, ms: i64) -> Option<String> {
        if let Some((last, text)) = &self.last_arrival
            && *last == ms
        {
            return Some(text.clone());
        }
        let text = DateTime::<Utc>::from_timestamp_millis(ms)?
            .to_rfc3339_opts(SecondsFormat::Millis, true);
        self.last_arrival = Some((ms, text.clone()));
        Some(text)
    }

    fn record(
        &mut self,
        offset: String,
        seq: String,
        sub: Option<u64>,
        arrival: Option<i64>,
        pk: String,
        value: Bytes,
    ) -> Record {
        let mut meta: Vec<(Cow<'static, str>, String)> = Vec::with_capacity(6);
        meta.push(("stream".into(), self.stream.clone()));
        meta.push(("shard-id".into(), self.shard.to_string()));
        meta.push(("sequence-number".into(), seq));
        if let Some(s) = sub {
            meta.push(("sub-sequence-number".into(), s.to_string()));
        }
        if let Some(t) = arrival.and_then(|ms| self.arrival_text(ms)) {
            meta.push(("arrival-timestamp".into(), t));
        }
        let key = Bytes::copy_from_slice(pk.as_bytes());
        meta.push(("partition-key".into(), pk));
        Record {
            key: Some(key),
            value,
            headers: Vec::new(),
            timestamp: arrival,
            meta,
            partition: self.shard.clone(),
            offset: Offset(offset),
        }
    }
}
