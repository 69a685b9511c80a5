//! Glue between the generated bindings and the traits; used by the export macros.

use std::cell::RefCell;

use serde::de::DeserializeOwned;

use crate::codec::{Batch, Outcomes, Routes};
use crate::{Format, JsonSchema, Partitioner, Transform};

/// The JSON Schema of a config type, as a string.
pub fn config_schema<C: JsonSchema>() -> String {
    let schema = schemars::schema_for!(C);
    serde_json::to_string(&schema).unwrap_or_else(|e| {
        // A schemars schema is a JSON value; serializing it cannot fail.
        panic!("sluice-sdk: cannot serialize the config schema: {e}")
    })
}

/// Parses the config JSON the host passes to `init`.
pub fn parse_config<C: DeserializeOwned>(config: &str) -> Result<C, String> {
    serde_json::from_str(config).map_err(|e| format!("invalid config: {e}"))
}

fn not_initialised() -> ! {
    panic!("sluice-sdk: the host called the plugin before `init`")
}

fn output_capacity(input: &[u8]) -> usize {
    input.len() + input.len() / 8 + 64
}

/// Builds the plugin from the config JSON (with the kind's `new`) and keeps it for the calls
/// that follow.
pub fn init<T, C: DeserializeOwned>(
    slot: &RefCell<Option<T>>,
    config: &str,
    new: impl FnOnce(C) -> Result<T, String>,
) -> Result<(), String> {
    let plugin = new(parse_config(config)?)?;
    *slot.borrow_mut() = Some(plugin);
    Ok(())
}

/// Calls `f` with the plugin `init` built.
fn with_plugin<T, R>(slot: &RefCell<Option<T>>, f: impl FnOnce(&mut T) -> R) -> R {
    let mut guard = slot.borrow_mut();
    f(guard.as_mut().unwrap_or_else(|| not_initialised()))
}

pub fn transform_process<T: Transform>(slot: &RefCell<Option<T>>, batch: &[u8]) -> Vec<u8> {
    with_plugin(slot, |p| {
        run_records(batch, |b, out| p.process_batch(b, out))
    })
}

pub fn format_decode<T: Format>(slot: &RefCell<Option<T>>, batch: &[u8]) -> Vec<u8> {
    with_plugin(slot, |p| {
        run_records(batch, |b, out| p.decode_batch(b, out))
    })
}

pub fn format_encode<T: Format>(slot: &RefCell<Option<T>>, batch: &[u8]) -> Vec<u8> {
    with_plugin(slot, |p| {
        run_records(batch, |b, out| p.encode_batch(b, out))
    })
}

pub fn partitioner_partition<T: Partitioner>(
    slot: &RefCell<Option<T>>,
    batch: &[u8],
    partition_count: Option<u32>,
) -> Vec<u8> {
    with_plugin(slot, |p| {
        run_routes(batch, |b, out| p.partition_batch(b, partition_count, out))
    })
}

pub(crate) fn run_records(batch: &[u8], f: impl FnOnce(Batch<'_>, &mut Outcomes)) -> Vec<u8> {
    let mut out = Outcomes::with_capacity(output_capacity(batch));
    f(Batch::decode(batch), &mut out);
    out.finish()
}

pub(crate) fn run_routes(batch: &[u8], f: impl FnOnce(Batch<'_>, &mut Routes)) -> Vec<u8> {
    let b = Batch::decode(batch);
    // About 24 bytes a route.
    let mut out = Routes::with_capacity(b.len() * 24);
    f(b, &mut out);
    out.finish()
}
