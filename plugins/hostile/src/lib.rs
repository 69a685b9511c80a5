//! Test only: a transform that misbehaves on request, to prove the host contains it. Each record's
//! value (raw, or as a JSON string such as `"loop"`) picks the behaviour:
//!
//! - `loop`: loops forever (stopped by the call timeout)
//! - `alloc`: allocates without bound (stopped by the memory cap)
//! - `panic`: panics (a trap)
//! - `overflow`: recurses until the stack overflows (a trap)
//! - `short`: returns one outcome fewer than there are records (a contract violation)
//! - `nap`: sleeps 5 ms, then keeps the record (a legitimate wait)
//! - `sleep`: `std::thread::sleep` for 30 s (a blocking WASI wait, stopped by the call timeout)
//! - `block-forever`: `subscribe-duration(u64::MAX)` then `pollable.block` (waits forever)
//! - `poll-forever`: the same pollable passed to `wasi:io/poll.poll` (waits forever)
//! - `pollables`: creates clock pollables without dropping them (stopped by the host's bound on
//!   its WASI resource table)
//! - `bomb:N`: answers with N empty output records (stopped by the host's output limits)
//! - anything else: kept.

use sluice_sdk::{Batch, NoConfig, Outcome, Outcomes, Output, Record, Transform};

pub struct Hostile;

/// The record's value without the quotes of a JSON string.
fn command<'a>(record: &Record<'a>) -> &'a [u8] {
    let v = record.value;
    v.strip_prefix(b"\"")
        .and_then(|v| v.strip_suffix(b"\""))
        .unwrap_or(v)
}

/// Raw `wasi:clocks` and `wasi:io/poll` imports (the versions Rust's standard library imports),
/// to reach the calls a well-behaved guest would not make.
#[cfg(target_arch = "wasm32")]
mod wasi {
    #[link(wasm_import_module = "wasi:clocks/monotonic-clock@0.2.0")]
    unsafe extern "C" {
        #[link_name = "subscribe-duration"]
        fn subscribe_duration(nanos: i64) -> i32;
    }

    #[link(wasm_import_module = "wasi:io/poll@0.2.0")]
    unsafe extern "C" {
        #[link_name = "[method]pollable.block"]
        fn pollable_block(pollable: i32);
        #[link_name = "poll"]
        fn poll(list: *const i32, len: usize, ret: *mut [usize; 2]);
    }

    /// A pollable that becomes ready after `nanos` (u64::MAX: never).
    pub fn subscribe(nanos: u64) -> i32 {
        // SAFETY: a plain import call; the canonical ABI passes a u64 as i64 bits.
        unsafe { subscribe_duration(nanos as i64) }
    }

    pub fn block(pollable: i32) {
        // SAFETY: `pollable` is a handle this instance owns.
        unsafe { pollable_block(pollable) }
    }

    pub fn poll_one(pollable: i32) {
        let list = [pollable];
        let mut ret = [0usize; 2];
        // SAFETY: `list` and `ret` outlive the call; the returned list is allocated by the
        // guest's `cabi_realloc` and leaked, which is fine for a test plugin.
        unsafe { poll(list.as_ptr(), list.len(), &mut ret) }
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod wasi {
    pub fn subscribe(_: u64) -> i32 {
        0
    }
    pub fn block(_: i32) {}
    pub fn poll_one(_: i32) {}
}

#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    let pad = std::hint::black_box([depth; 64]);
    recurse(depth + 1).wrapping_add(pad[depth as usize % 64])
}

impl Transform for Hostile {
    type Config = NoConfig;

    fn new(_: NoConfig) -> Result<Self, String> {
        Ok(Hostile)
    }

    fn process(&mut self, record: &Record<'_>) -> Outcome {
        match command(record) {
            b"loop" => {
                let mut n = 0u64;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            b"alloc" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            b"panic" => panic!("hostile plugin panics on purpose"),
            b"overflow" => Outcome::Value(recurse(0).to_string().into_bytes()),
            b"nap" => {
                std::thread::sleep(std::time::Duration::from_millis(5));
                Outcome::Keep
            }
            b"sleep" => {
                std::thread::sleep(std::time::Duration::from_secs(30));
                Outcome::Keep
            }
            b"block-forever" => {
                wasi::block(wasi::subscribe(u64::MAX));
                Outcome::Keep
            }
            b"poll-forever" => {
                wasi::poll_one(wasi::subscribe(u64::MAX));
                Outcome::Keep
            }
            b"pollables" => {
                let mut n = 0u64;
                loop {
                    std::hint::black_box(wasi::subscribe(1_000_000_000));
                    n += 1;
                    if n > 100_000_000 {
                        return Outcome::Keep;
                    }
                }
            }
            v if v.starts_with(b"bomb:") => {
                let n = std::str::from_utf8(&v[5..])
                    .ok()
                    .and_then(|n| n.parse::<usize>().ok())
                    .unwrap_or(0);
                let mut outs = Vec::with_capacity(n);
                outs.resize_with(n, Output::default);
                Outcome::Records(outs)
            }
            _ => Outcome::Keep,
        }
    }

    fn process_batch(&mut self, batch: Batch<'_>, out: &mut Outcomes) {
        // `short` records get no outcome at all.
        batch.for_each(|r| {
            if command(r) != b"short" {
                out.push(self.process(r));
            }
        });
    }
}

sluice_sdk::export_transform!(Hostile);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_drops_an_outcome() {
        let out = sluice_sdk::testing::transform::<Hostile>(
            sluice_sdk::serde_json::json!({}),
            &[Record::new(b"ok"), Record::new(b"\"short\"")],
        )
        .unwrap();
        assert_eq!(out, vec![Outcome::Keep]);
    }
}
