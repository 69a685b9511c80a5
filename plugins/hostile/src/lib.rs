//! Test only: a transform that misbehaves on request, to prove the host contains it. Each record's
//! value (raw, or as a JSON string such as `"loop"`) picks the behaviour:
//!
//! - `loop`: loops forever (stopped by the call timeout)
//! - `alloc`: allocates without bound (stopped by the memory cap)
//! - `panic`: panics (a trap)
//! - `overflow`: recurses until the stack overflows (a trap)
//! - `short`: returns one outcome fewer than there are records (a contract violation)
//! - anything else: kept.

use sluice_sdk::{Batch, Outcome, Outcomes, Record, Transform};

/// No options.
#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {}

pub struct Hostile;

/// The record's value without the quotes of a JSON string.
fn command<'a>(record: &Record<'a>) -> &'a [u8] {
    let v = record.value;
    v.strip_prefix(b"\"")
        .and_then(|v| v.strip_suffix(b"\""))
        .unwrap_or(v)
}

#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    let pad = std::hint::black_box([depth; 64]);
    recurse(depth + 1).wrapping_add(pad[depth as usize % 64])
}

impl Transform for Hostile {
    type Config = Config;

    fn new(_: Config) -> Result<Self, String> {
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
            serde_json::json!({}),
            &[Record::new(b"ok"), Record::new(b"\"short\"")],
        )
        .unwrap();
        assert_eq!(out, vec![Outcome::Keep]);
    }
}
