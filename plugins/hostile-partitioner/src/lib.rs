//! Test only: a partitioner that breaks the contract on request: for a batch containing a record
//! whose value is `short` it returns no routes at all; for `out-of-range` it returns an index
//! equal to the partition count. Other records go to partition 0.

use sluice_sdk::{Batch, NoConfig, Partitioner, Record, Route, Routes};

pub struct HostilePartitioner;

impl Partitioner for HostilePartitioner {
    type Config = NoConfig;

    fn new(_: NoConfig) -> Result<Self, String> {
        Ok(HostilePartitioner)
    }

    fn partition(&mut self, record: &Record<'_>, n: Option<u32>) -> Result<Route, String> {
        let index = if record.value == b"out-of-range" {
            n
        } else {
            Some(0)
        };
        Ok(Route {
            index,
            ..Route::default()
        })
    }

    fn partition_batch(&mut self, batch: Batch<'_>, n: Option<u32>, out: &mut Routes) {
        let mut routes = Vec::new();
        let mut short = false;
        batch.for_each(|r| {
            short |= r.value == b"short";
            routes.push(self.partition(r, n));
        });
        if !short {
            routes.into_iter().for_each(|r| out.push(r));
        }
    }
}

sluice_sdk::export_partitioner!(HostilePartitioner);
