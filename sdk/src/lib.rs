//! Write [Sluice](https://example.invalid/sluice) plugins in Rust: transforms, formats and
//! partitioners that run as WebAssembly components inside the Sluice host.
//!
//! Implement one plain trait ([`Transform`], [`Format`] or [`Partitioner`]) for a type built from
//! a config that derives `Deserialize + JsonSchema`, then call the matching export macro. The
//! config's JSON Schema is exported too, so `sluice validate` checks a spec's `config:` before
//! anything runs.
//!
//! ```
//! use sluice_sdk::{json, Outcome, Record, Transform};
//!
//! /// Replaces the listed top-level fields.
//! #[derive(serde::Deserialize, schemars::JsonSchema)]
//! #[serde(deny_unknown_fields)]
//! pub struct Config {
//!     /// Fields to replace.
//!     fields: Vec<String>,
//! }
//!
//! pub struct Mask(Config);
//!
//! impl Transform for Mask {
//!     type Config = Config;
//!     fn new(config: Config) -> Result<Self, String> {
//!         Ok(Mask(config))
//!     }
//!     fn process(&mut self, record: &Record<'_>) -> Outcome {
//!         let mut doc = match json::parse(record.value) {
//!             Ok(doc) => doc,
//!             Err(e) => return Outcome::Error(e),
//!         };
//!         for f in &self.0.fields {
//!             if let Some(v) = doc.get_mut(f.as_str()) {
//!                 *v = "***".into();
//!             }
//!         }
//!         Outcome::json_value(&doc)
//!     }
//! }
//!
//! sluice_sdk::export_transform!(Mask);
//!
//! // Native unit test of the trait impl, through the same batch encoding the host uses:
//! let out = sluice_sdk::testing::transform::<Mask>(
//!     serde_json::json!({"fields": ["email"]}),
//!     &[Record::new(br#"{"email":"a@b.c","n":1}"#)],
//! )
//! .unwrap();
//! assert_eq!(out, vec![Outcome::Value(br#"{"email":"***","n":1}"#.to_vec())]);
//! ```
//!
//! Build with `cargo build --release --target wasm32-wasip2`; the `.wasm` in
//! `target/wasm32-wasip2/release/` is the plugin.

// Lets the generated bindings name this crate as `::sluice_sdk`, also from inside it.
extern crate self as sluice_sdk;

// Compiled and unit-tested on every target; the global allocator only on wasm32 without
// threads (the predicate of `ALLOCATOR` below).
#[cfg_attr(
    not(all(
        feature = "allocator",
        target_arch = "wasm32",
        not(target_feature = "atomics")
    )),
    allow(dead_code)
)]
mod alloc;
mod codec;
pub mod hash;
pub mod json;
pub mod testing;

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod bindings;

#[doc(hidden)]
pub mod __rt;

pub use codec::{Batch, Counted, Outcomes, Routes};
pub use schemars::JsonSchema;
pub use serde::Deserialize;
pub use serde_json;

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

/// The plugin's allocator (feature `allocator`, on by default): see [`alloc`].
#[cfg(all(
    feature = "allocator",
    target_arch = "wasm32",
    not(target_feature = "atomics")
))]
#[global_allocator]
static ALLOCATOR: alloc::SizeClasses = alloc::SizeClasses::new();

use serde::de::DeserializeOwned;

/// One record as a plugin sees it: a view into the batch the host sent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Record<'a> {
    pub key: Option<&'a [u8]>,
    pub value: &'a [u8],
    /// Milliseconds since the Unix epoch.
    pub timestamp: Option<i64>,
    pub headers: Vec<(&'a str, &'a [u8])>,
    /// Read-only source metadata (`shard-id`, `sequence-number`, `topic`, `partition`, ...).
    pub meta: Vec<(&'a str, &'a str)>,
}

impl<'a> Record<'a> {
    /// A record with only a value (handy in tests).
    pub fn new(value: &'a [u8]) -> Self {
        Self {
            value,
            ..Self::default()
        }
    }

    /// The first header with this name.
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
    }

    /// A source metadata entry, e.g. `shard-id`.
    pub fn meta(&self, name: &str) -> Option<&'a str> {
        self.meta.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }

    /// The value parsed as JSON into `T`.
    pub fn json<T: serde::Deserialize<'a>>(&self) -> Result<T, String> {
        serde_json::from_slice(self.value).map_err(|e| format!("value is not valid JSON: {e}"))
    }
}

/// The config of a plugin without options: `type Config = NoConfig;`. The spec's `config:` must
/// then be empty (`{}`) or left out; any key is refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoConfig {}

/// What a transform or format made of one input record.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The input passes unchanged.
    Keep,
    /// One output record with this value; key, headers and timestamp are inherited.
    Value(Vec<u8>),
    /// Zero (dropped), one or many output records.
    Records(Vec<Output>),
    /// The record is bad: it goes to the pipeline's error policy with this message.
    Error(String),
}

impl Outcome {
    /// Drops the input record.
    pub fn drop_record() -> Self {
        Outcome::Records(Vec::new())
    }

    /// One output record whose value is `value` serialized as JSON.
    pub fn json<T: serde::Serialize + ?Sized>(value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(v) => Outcome::Value(v),
            Err(e) => Outcome::Error(format!("cannot serialize output as JSON: {e}")),
        }
    }

    /// One output record whose value is this JSON value: the bytes [`Outcome::json`] gives,
    /// written by the SDK's faster writer ([`json::to_vec`]). Use it for a `serde_json::Value`.
    pub fn json_value(value: &serde_json::Value) -> Self {
        Outcome::Value(json::to_vec(value))
    }

    /// A per-record error.
    pub fn error(message: impl std::fmt::Display) -> Self {
        Outcome::Error(message.to_string())
    }
}

/// An output record. Fields left `None` are inherited from the input record.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Output {
    pub value: Vec<u8>,
    /// `Some(None)` removes the key, `Some(Some(k))` sets it.
    pub key: Option<Option<Vec<u8>>>,
    /// `Some(None)` removes the timestamp, `Some(Some(t))` sets it.
    pub timestamp: Option<Option<i64>>,
    /// Replaces all headers.
    pub headers: Option<Vec<(String, Vec<u8>)>>,
}

impl Output {
    pub fn new(value: impl Into<Vec<u8>>) -> Self {
        Self {
            value: value.into(),
            ..Self::default()
        }
    }

    pub fn with_key(mut self, key: Option<Vec<u8>>) -> Self {
        self.key = Some(key);
        self
    }

    pub fn with_timestamp(mut self, timestamp: Option<i64>) -> Self {
        self.timestamp = Some(timestamp);
        self
    }

    pub fn with_headers(mut self, headers: Vec<(String, Vec<u8>)>) -> Self {
        self.headers = Some(headers);
        self
    }
}

/// Where a partitioner sends a record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Route {
    /// A partition key (Kinesis partition key, Kafka message key).
    pub key: Option<String>,
    /// A partition index in `0..partition_count`.
    pub index: Option<u32>,
    /// A Kinesis explicit hash key (a decimal 128-bit integer).
    pub explicit_hash_key: Option<String>,
}

/// A transform: for each record, keep it, replace it with zero, one or many records, or reject
/// it.
pub trait Transform: Sized {
    /// The plugin's config (the spec's `config:`), with its JSON Schema.
    type Config: DeserializeOwned + JsonSchema;

    /// Builds the plugin from its config; an error rejects the spec.
    fn new(config: Self::Config) -> Result<Self, String>;

    /// Handles one record.
    fn process(&mut self, record: &Record<'_>) -> Outcome;

    /// Handles a batch: one outcome per input record, in order. Override it to share work
    /// across a batch or to write outputs without allocating (see [`Outcomes::push_json`]).
    fn process_batch(&mut self, batch: Batch<'_>, out: &mut Outcomes) {
        batch.for_each(|r| out.push(self.process(r)));
    }
}

/// A format: `decode` turns source bytes into JSON records, `encode` turns JSON records into
/// sink bytes.
pub trait Format: Sized {
    type Config: DeserializeOwned + JsonSchema;

    fn new(config: Self::Config) -> Result<Self, String>;

    /// Decodes one source record into zero, one or many JSON values (each output value must be
    /// one JSON document; the host checks).
    fn decode(&mut self, record: &Record<'_>) -> Outcome;

    /// Encodes one JSON record (its value is a JSON document) into sink bytes.
    fn encode(&mut self, record: &Record<'_>) -> Outcome;

    fn decode_batch(&mut self, batch: Batch<'_>, out: &mut Outcomes) {
        batch.for_each(|r| out.push(self.decode(r)));
    }

    fn encode_batch(&mut self, batch: Batch<'_>, out: &mut Outcomes) {
        batch.for_each(|r| out.push(self.encode(r)));
    }
}

/// A partitioner: one route per record. `partition_count` is the sink's number of partitions
/// (Kafka partitions, Kinesis open shards) when it has one.
pub trait Partitioner: Sized {
    type Config: DeserializeOwned + JsonSchema;

    fn new(config: Self::Config) -> Result<Self, String>;

    fn partition(
        &mut self,
        record: &Record<'_>,
        partition_count: Option<u32>,
    ) -> Result<Route, String>;

    fn partition_batch(
        &mut self,
        batch: Batch<'_>,
        partition_count: Option<u32>,
        out: &mut Routes,
    ) {
        batch.for_each(|r| out.push(self.partition(r, partition_count)));
    }
}

/// The body the three export macros share: the plugin kept per instance, `config-schema` and
/// `init` for any kind, and the kind's own methods, passed in as `$methods`. They may name
/// `PLUGIN` and `__rt` (items are not hygienic in `macro_rules!`).
#[doc(hidden)]
#[macro_export]
macro_rules! __export_plugin {
    ($plugin:ty, $kind:ident, $guest:ident, $world:ident, $export:ident, { $($methods:tt)* }) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            use ::std::{cell::RefCell, string::String, vec::Vec};
            use $crate::__rt;
            ::std::thread_local! {
                static PLUGIN: RefCell<Option<$plugin>> = const { RefCell::new(None) };
            }
            struct Export;
            impl $crate::bindings::$guest for Export {
                fn config_schema() -> String {
                    __rt::config_schema::<<$plugin as $crate::$kind>::Config>()
                }
                fn init(config: String) -> Result<(), String> {
                    PLUGIN.with(|slot| __rt::init(slot, &config, <$plugin as $crate::$kind>::new))
                }
                $($methods)*
            }
            $crate::$export!(Export with_types_in $crate::bindings::$world);
        };
    };
}

/// Exports a [`Transform`] implementation as the plugin's `transform` world.
///
/// On targets other than `wasm32` it expands to nothing, so the crate builds and tests natively.
#[macro_export]
macro_rules! export_transform {
    ($plugin:ty) => {
        $crate::__export_plugin! {
            $plugin, Transform, TransformGuest, transform, __export_transform_impl,
            {
                fn process(batch: Vec<u8>) -> Vec<u8> {
                    PLUGIN.with(|slot| __rt::transform_process::<$plugin>(slot, &batch))
                }
            }
        }
    };
}

/// Exports a [`Format`] implementation as the plugin's `format` world.
#[macro_export]
macro_rules! export_format {
    ($plugin:ty) => {
        $crate::__export_plugin! {
            $plugin, Format, FormatGuest, format, __export_format_impl,
            {
                fn decode(batch: Vec<u8>) -> Vec<u8> {
                    PLUGIN.with(|slot| __rt::format_decode::<$plugin>(slot, &batch))
                }
                fn encode(batch: Vec<u8>) -> Vec<u8> {
                    PLUGIN.with(|slot| __rt::format_encode::<$plugin>(slot, &batch))
                }
            }
        }
    };
}

/// Exports a [`Partitioner`] implementation as the plugin's `partitioner` world.
#[macro_export]
macro_rules! export_partitioner {
    ($plugin:ty) => {
        $crate::__export_plugin! {
            $plugin, Partitioner, PartitionerGuest, partitioner, __export_partitioner_impl,
            {
                fn partition(batch: Vec<u8>, partition_count: Option<u32>) -> Vec<u8> {
                    PLUGIN.with(|slot| {
                        __rt::partitioner_partition::<$plugin>(slot, &batch, partition_count)
                    })
                }
            }
        }
    };
}
