//! Logs on standard error, as text or JSON, kept clear of the progress display.

use std::io::Write;

use indicatif::MultiProgress;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use super::LogFormat;

/// Writes log lines to stderr, hiding the progress bars while it does.
#[derive(Clone)]
struct Writer {
    multi: Option<MultiProgress>,
}

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &self.multi {
            Some(m) => m.suspend(|| std::io::stderr().write(buf)),
            None => std::io::stderr().write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> MakeWriter<'a> for Writer {
    type Writer = Writer;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

pub fn init(format: LogFormat, filter: &str, multi: Option<MultiProgress>) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|e| {
        eprintln!("warning: bad log filter `{filter}` ({e}); using `info`");
        EnvFilter::new("info")
    });
    let writer = Writer { multi };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.compact().try_init(),
    };
}
