//! Faster reading of the two responses whose size grows with the records they carry: GetRecords
//! (every record's data, base64 in JSON) and PutRecords (a result per record).
//!
//! The SDK's generic JSON reader spends about 25 M instructions per MB of GetRecords response
//! (more than half of a polling read's CPU): it walks every base64 character on its own. Here a
//! successful response is read with `serde_json` (borrowed strings, scanned a word at a time)
//! and the same base64 decoder the SDK uses, into the same SDK output type, so the callers and
//! the SDK's retries, signing and errors are untouched. Everything else goes to the SDK's own
//! reader: error responses, a body not in memory, and any body this reader does not take (an
//! unexpected shape, `ChildShards` of a closed shard): the SDK then reads it as before.
//!
//! The swap happens per call: [`FastResponses`] is an interceptor given to one operation
//! (`customize().interceptor(..)`); just before deserialization it puts its deserializer into
//! the call's configuration. That deserializer hands what it leaves to the SDK's own one, taken
//! from the operation's configuration layer (the SDK's `RuntimePlugin` for the operation).

use std::borrow::Cow;
use std::sync::LazyLock;

use aws_sdk_kinesis::operation::get_records::{GetRecords, GetRecordsOutput};
use aws_sdk_kinesis::operation::put_records::{PutRecords, PutRecordsOutput};
use aws_sdk_kinesis::types::{EncryptionType, PutRecordsResultEntry, Record};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeDeserializationInterceptorContextMut, Error, Output,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpResponse, OrchestratorError};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::client::runtime_plugin::RuntimePlugin;
use aws_smithy_runtime_api::client::ser_de::{DeserializeResponse, SharedResponseDeserializer};
use aws_smithy_types::config_bag::{ConfigBag, FrozenLayer};
use aws_smithy_types::{Blob, DateTime};
use serde::Deserialize;

/// Reads a successful response body, or `None` to leave it to the SDK.
type Reader = fn(&[u8]) -> Option<Output>;

/// An operation's own configuration layer, which holds the SDK's deserializer for it.
type SdkLayer = LazyLock<Option<FrozenLayer>>;

/// The interceptor that swaps in the faster reader for one call.
#[derive(Debug, Clone, Copy)]
pub(super) struct FastResponses {
    read: Reader,
    /// The operation's own deserializer, for what `read` leaves to the SDK (`None` if the SDK
    /// has none where it is looked for: then the interceptor does nothing).
    sdk: Option<&'static SharedResponseDeserializer>,
}

impl FastResponses {
    pub(super) fn get_records() -> Self {
        static SDK: SdkLayer = LazyLock::new(|| GetRecords::new().config());
        Self::new(|body| get_records(body).map(Output::erase), &SDK)
    }

    pub(super) fn put_records() -> Self {
        static SDK: SdkLayer = LazyLock::new(|| PutRecords::new().config());
        Self::new(|body| put_records(body).map(Output::erase), &SDK)
    }

    fn new(read: Reader, sdk: &'static SdkLayer) -> Self {
        let sdk = sdk
            .as_ref()
            .and_then(|l| l.load::<SharedResponseDeserializer>());
        Self { read, sdk }
    }
}

impl Intercept for FastResponses {
    fn name(&self) -> &'static str {
        "sluice-kinesis-fast-responses"
    }

    fn modify_before_deserialization(
        &self,
        _: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        // Only with the SDK's own deserializer at hand for what this one leaves to it.
        if let Some(sdk) = self.sdk {
            let fast = Fast {
                read: self.read,
                sdk,
            };
            cfg.interceptor_state()
                .store_put(SharedResponseDeserializer::new(fast));
        }
        Ok(())
    }
}

/// The faster reader, and the SDK's for what it leaves.
#[derive(Debug)]
struct Fast {
    read: Reader,
    sdk: &'static SharedResponseDeserializer,
}

impl DeserializeResponse for Fast {
    fn deserialize_streaming_with_config(
        &self,
        response: &mut HttpResponse,
        cfg: &ConfigBag,
    ) -> Option<Result<Output, OrchestratorError<Error>>> {
        self.sdk.deserialize_streaming_with_config(response, cfg)
    }

    fn deserialize_nonstreaming_with_config(
        &self,
        response: &HttpResponse,
        cfg: &ConfigBag,
    ) -> Result<Output, OrchestratorError<Error>> {
        if response.status().is_success() {
            if let Some(out) = response.body().bytes().and_then(self.read) {
                tracing::trace!("kinesis: a response is read by the fast reader");
                return Ok(out);
            }
            // Expected for a closed shard's last response (ChildShards); anything else would
            // mean a response shape this reader does not know, read correctly but slower.
            tracing::debug!(
                bytes = response.body().bytes().map(<[u8]>::len),
                "kinesis: a successful response is read by the SDK's reader"
            );
        }
        self.sdk.deserialize_nonstreaming_with_config(response, cfg)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetRecordsBody<'a> {
    #[serde(borrow)]
    records: Vec<RecordBody<'a>>,
    #[serde(default, borrow)]
    next_shard_iterator: Option<Cow<'a, str>>,
    millis_behind_latest: Option<i64>,
    /// Only a closed shard's last responses list children: those go to the SDK's reader.
    child_shards: Option<Vec<serde::de::IgnoredAny>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RecordBody<'a> {
    #[serde(borrow)]
    sequence_number: Cow<'a, str>,
    approximate_arrival_timestamp: Option<serde_json::Number>,
    #[serde(borrow)]
    data: Cow<'a, str>,
    #[serde(default, borrow)]
    partition_key: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    encryption_type: Option<Cow<'a, str>>,
}

/// Epoch seconds as the SDK reads them: a fraction through `f64`, an integer exactly.
fn epoch_seconds(n: &serde_json::Number) -> Option<DateTime> {
    match n.as_i64() {
        Some(s) => Some(DateTime::from_secs(s)),
        None => n.as_f64().map(DateTime::from_secs_f64),
    }
}

/// A GetRecords response body as the SDK's output, or `None` to leave it to the SDK.
pub(super) fn get_records(body: &[u8]) -> Option<GetRecordsOutput> {
    let b: GetRecordsBody = serde_json::from_slice(body).ok()?;
    if b.child_shards.is_some_and(|c| !c.is_empty()) {
        return None;
    }
    let mut records = Vec::with_capacity(b.records.len());
    for r in b.records {
        let data = aws_smithy_types::base64::decode(r.data.as_ref()).ok()?;
        let arrival = match &r.approximate_arrival_timestamp {
            Some(n) => Some(epoch_seconds(n)?),
            None => None,
        };
        records.push(
            Record::builder()
                .sequence_number(r.sequence_number)
                .set_approximate_arrival_timestamp(arrival)
                .data(Blob::new(data))
                .set_partition_key(r.partition_key.map(Cow::into_owned))
                .set_encryption_type(r.encryption_type.map(|e| EncryptionType::from(e.as_ref())))
                .build()
                .ok()?,
        );
    }
    GetRecordsOutput::builder()
        .set_records(Some(records))
        .set_next_shard_iterator(b.next_shard_iterator.map(Cow::into_owned))
        .set_millis_behind_latest(b.millis_behind_latest)
        .build()
        .ok()
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutRecordsBody<'a> {
    failed_record_count: Option<i32>,
    #[serde(borrow)]
    records: Vec<ResultBody<'a>>,
    #[serde(default, borrow)]
    encryption_type: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ResultBody<'a> {
    #[serde(default, borrow)]
    sequence_number: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    shard_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    error_code: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    error_message: Option<Cow<'a, str>>,
}

/// A PutRecords response body as the SDK's output, or `None` to leave it to the SDK.
pub(super) fn put_records(body: &[u8]) -> Option<PutRecordsOutput> {
    let b: PutRecordsBody = serde_json::from_slice(body).ok()?;
    let owned = |s: Option<Cow<'_, str>>| s.map(Cow::into_owned);
    let records = b
        .records
        .into_iter()
        .map(|r| {
            PutRecordsResultEntry::builder()
                .set_sequence_number(owned(r.sequence_number))
                .set_shard_id(owned(r.shard_id))
                .set_error_code(owned(r.error_code))
                .set_error_message(owned(r.error_message))
                .build()
        })
        .collect();
    PutRecordsOutput::builder()
        .set_failed_record_count(b.failed_record_count)
        .set_records(Some(records))
        .set_encryption_type(b.encryption_type.map(|e| EncryptionType::from(e.as_ref())))
        .build()
        .ok()
}

#[cfg(test)]
mod tests {
    use aws_sdk_kinesis::Client;
    use bytes::Bytes;
    use serde_json::json;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::kinesis::aggregation::{Aggregate, UserRecord};
    use crate::kinesis::records::{Converter, StartAt};

    /// A server that answers every request with `status` and `body` (a real HTTP exchange, so
    /// the SDK's own reading of the same bytes is the reference), and a client for it.
    async fn serving(status: u16, body: String) -> Client {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let body = body.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        // Headers, then as many body bytes as Content-Length says.
                        let Ok(n) = sock.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let text = String::from_utf8_lossy(&buf).to_string();
                        let Some(end) = text.find("\r\n\r\n") else {
                            continue;
                        };
                        let len = text[..end]
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if buf.len() < end + 4 + len {
                            continue;
                        }
                        buf.drain(..end + 4 + len);
                        let head = format!(
                            "HTTP/1.1 {status} X\r\ncontent-type: application/x-amz-json-1.1\r\ncontent-length: {}\r\n\r\n",
                            body.len()
                        );
                        if sock.write_all(head.as_bytes()).await.is_err()
                            || sock.write_all(body.as_bytes()).await.is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        let aws: crate::aws::AwsConfig =
            serde_json::from_value(sluice_test_kit::aws_json(&format!("http://{addr}")))
                .expect("config");
        crate::kinesis::client(&aws).await.expect("client")
    }

    type GetRecordsResult = Result<
        GetRecordsOutput,
        aws_sdk_kinesis::error::SdkError<aws_sdk_kinesis::operation::get_records::GetRecordsError>,
    >;

    /// GetRecords answered with `body`: as the SDK reads it, and as read with the interceptor.
    async fn get_both(status: u16, body: String) -> (GetRecordsResult, GetRecordsResult) {
        let c = serving(status, body).await;
        let sdk = c.get_records().shard_iterator("it").send().await;
        let fast = c
            .get_records()
            .shard_iterator("it")
            .customize()
            .interceptor(FastResponses::get_records())
            .send()
            .await;
        (sdk, fast)
    }

    fn aggregate() -> Bytes {
        let mut a = Aggregate::default();
        for (pk, data) in [("k0", "v0"), ("k1", "v1"), ("k0", "v2")] {
            a.add(UserRecord {
                partition_key: pk.into(),
                explicit_hash_key: None,
                data: Bytes::from(data),
            });
        }
        a.finish()
    }

    /// A GetRecords answer as AWS and kinesis-local write it: epoch seconds with a fraction (or
    /// none), base64 data (one record a KPL aggregate, one binary), encryption types.
    fn get_records_body() -> serde_json::Value {
        let b64 = |b: &[u8]| aws_smithy_types::base64::encode(b);
        json!({
            "Records": [
                {"SequenceNumber": "49590338271490256608559692538361571095921575989136588898",
                 "ApproximateArrivalTimestamp": 1700000000.123, "Data": b64(b"{\"seq\":1}"),
                 "PartitionKey": "user-1", "EncryptionType": "NONE"},
                {"SequenceNumber": "49590338271490256608559692540925702759324208523137515618",
                 "ApproximateArrivalTimestamp": 1700000001, "Data": b64(&aggregate()),
                 "PartitionKey": "k0"},
                {"SequenceNumber": "49590338271490256608559692540925702759324208523137515619",
                 "ApproximateArrivalTimestamp": 1.700000002456E9, "Data": b64(&[0xfb, 0xff, 0xfe]),
                 "PartitionKey": "bin", "EncryptionType": "KMS"}
            ],
            "NextShardIterator": "AAAAAAAAAAGk3e6Jw1Q5yGHTaFNgcp+/escaped",
            "MillisBehindLatest": 42
        })
    }

    /// The interceptor swaps in the fast reader only when the SDK's own deserializer of the
    /// operation is found (an SDK upgrade could move it): without it every comparison below
    /// would compare the SDK with itself.
    #[test]
    fn the_sdk_deserializers_are_found() {
        for f in [FastResponses::get_records(), FastResponses::put_records()] {
            assert!(f.sdk.is_some());
        }
    }

    #[tokio::test]
    async fn get_records_reads_as_the_sdk_does() {
        let text = serde_json::to_string(&get_records_body()).expect("json");
        // Some servers escape `/` in strings; base64 has them.
        let text = text.replace("+/escaped", "+\\/escaped");
        assert!(
            get_records(text.as_bytes()).is_some(),
            "read here, not by the SDK"
        );
        let (sdk, fast) = get_both(200, text).await;
        let (sdk, fast) = (sdk.expect("sdk"), fast.expect("fast"));
        assert_eq!(fast, sdk);
        assert_eq!(fast.records().len(), 3);
        assert_eq!(fast.records()[2].data().as_ref(), [0xfb, 0xff, 0xfe]);
        assert_eq!(
            fast.next_shard_iterator(),
            Some("AAAAAAAAAAGk3e6Jw1Q5yGHTaFNgcp+/escaped")
        );
        // The records convert as before: the aggregate becomes its user records.
        let mut conv = Converter::new("s", "shard-0".into(), &StartAt::TrimHorizon);
        let mut out = Vec::new();
        conv.convert(fast.records, &mut out);
        let offsets: Vec<&str> = out.iter().map(|r| r.offset.as_str()).collect();
        assert_eq!(
            offsets,
            [
                "49590338271490256608559692538361571095921575989136588898",
                "49590338271490256608559692540925702759324208523137515618:0",
                "49590338271490256608559692540925702759324208523137515618:1",
                "49590338271490256608559692540925702759324208523137515618:2",
                "49590338271490256608559692540925702759324208523137515619",
            ]
        );
        assert_eq!(out[2].value, Bytes::from("v1"));
        assert_eq!(out[2].meta("partition-key"), Some("k1"));
        // The SDK's reading through f64 (1700000000.123 is just below .123), kept as it was.
        assert_eq!(out[0].timestamp, Some(1_700_000_000_122));
        assert_eq!(
            out[0].meta("arrival-timestamp"),
            Some("2023-11-14T22:13:20.122Z")
        );
    }

    #[tokio::test]
    async fn errors_children_and_unreadable_bodies_go_to_the_sdk() {
        // An expired iterator: the SDK's typed error, as before.
        let expired = json!({"__type": "ExpiredIteratorException", "message": "Iterator expired"});
        let (_, fast) = get_both(400, expired.to_string()).await;
        let err = fast.expect_err("an error answer is an error");
        assert!(
            err.as_service_error()
                .is_some_and(|e| e.is_expired_iterator_exception()),
            "{err:?}"
        );
        // A closed shard's last response lists its children: the SDK reads it.
        let mut body = get_records_body();
        body["ChildShards"] = json!([{"ShardId": "shardId-000000000004",
            "ParentShards": ["shardId-000000000000"],
            "HashKeyRange": {"StartingHashKey": "0", "EndingHashKey": "99"}}]);
        body["NextShardIterator"] = serde_json::Value::Null;
        assert!(get_records(body.to_string().as_bytes()).is_none());
        let (sdk, fast) = get_both(200, body.to_string()).await;
        let (sdk, fast) = (sdk.expect("sdk"), fast.expect("fast"));
        assert_eq!(fast, sdk);
        assert_eq!(fast.child_shards().len(), 1);
        // Bad base64 or a missing field: not taken here; the SDK fails it as before.
        let mut bad = get_records_body();
        bad["Records"][0]["Data"] = json!("***");
        assert!(get_records(bad.to_string().as_bytes()).is_none());
        let (sdk, fast) = get_both(200, bad.to_string()).await;
        assert!(sdk.is_err() && fast.is_err());
        assert!(get_records(b"{\"NextShardIterator\": \"x\"}").is_none());
        assert!(get_records(b"not json").is_none());
    }

    #[tokio::test]
    async fn put_records_reads_as_the_sdk_does() {
        let body = json!({
            "FailedRecordCount": 1,
            "Records": [
                {"SequenceNumber": "49543463076548007577105092703039560359975228518395019266",
                 "ShardId": "shardId-000000000000"},
                {"ErrorCode": "ProvisionedThroughputExceededException",
                 "ErrorMessage": "Rate exceeded for shard shardId-000000000001 in stream s"}
            ],
            "EncryptionType": "NONE"
        });
        assert!(put_records(body.to_string().as_bytes()).is_some());
        let c = serving(200, body.to_string()).await;
        let entry = || {
            aws_sdk_kinesis::types::PutRecordsRequestEntry::builder()
                .data(Blob::new(b"x".to_vec()))
                .partition_key("k")
                .build()
                .expect("entry")
        };
        let call = || {
            c.put_records()
                .stream_name("s")
                .records(entry())
                .records(entry())
        };
        let sdk = call().send().await.expect("sdk");
        let fast = call()
            .customize()
            .interceptor(FastResponses::put_records())
            .send()
            .await
            .expect("fast");
        assert_eq!(fast, sdk);
        assert_eq!(
            fast.records()[1].error_code(),
            Some("ProvisionedThroughputExceededException")
        );
    }
}
