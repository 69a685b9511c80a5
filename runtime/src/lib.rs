//! The Sluice host: connector specs, the pipeline engine, the plugin host, offset stores, the CLI.
//!
//! ```
//! let text = "version: 1\nname: demo\nsource: {type: generator, count: 10}\nsink: {type: stdout}\n";
//! let (spec, _, _) = sluice_runtime::spec::parse("demo.yaml", text, &|_| None).expect("valid");
//! assert_eq!(spec.name, "demo");
//! ```

pub mod cli;
pub mod http;
pub mod offsets;
pub mod pipeline;
pub mod plugin;
pub mod spec;
pub mod stage;
