//! The `file` source (lines of files; partition = file, offset = line number) and the `file` sink
//! (one record per line, acknowledged only after the data is fsynced).

mod append;
mod config;
mod sink;
mod source;

pub use append::{create_dir_durable, open_append};
pub use config::{FileSinkConfig, FileSourceConfig};
pub use sink::{FileSink, render_line};
pub use source::{FileSource, read_lines};
