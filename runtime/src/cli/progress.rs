//! Live progress per pipeline: bars on a terminal, periodic log lines otherwise.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio_util::sync::CancellationToken;

use super::LogFormat;
use crate::pipeline::{Metrics, Snapshot};

pub struct Display {
    multi: Option<MultiProgress>,
}

impl Display {
    /// Bars when asked for, on a terminal, with text logs; otherwise log lines.
    pub fn new(wanted: bool, format: LogFormat) -> Self {
        let tty = std::io::stderr().is_terminal();
        let multi = (wanted && tty && format == LogFormat::Text)
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(4)));
        Self { multi }
    }

    pub fn multi(&self) -> Option<MultiProgress> {
        self.multi.clone()
    }

    /// Shows one pipeline's progress until `stop` fires.
    pub fn track(&self, name: &str, metrics: Arc<Metrics>, stop: CancellationToken) {
        let name = name.to_string();
        match &self.multi {
            Some(multi) => {
                let bar = multi.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("{spinner:.cyan} {prefix:.bold} {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.set_prefix(name);
                tokio::spawn(async move {
                    let mut rates = Rates::new(metrics.snapshot());
                    loop {
                        let stopped = tokio::select! {
                            _ = stop.cancelled() => true,
                            _ = tokio::time::sleep(Duration::from_millis(250)) => false,
                        };
                        let s = metrics.snapshot();
                        bar.set_message(rates.line(s));
                        bar.tick();
                        if stopped {
                            bar.finish();
                            break;
                        }
                    }
                });
            }
            None => {
                tokio::spawn(async move {
                    let mut rates = Rates::new(metrics.snapshot());
                    loop {
                        tokio::select! {
                            _ = stop.cancelled() => break,
                            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
                        }
                        let s = metrics.snapshot();
                        let (rin, rout) = rates.update(s);
                        tracing::info!(
                            pipeline = %name, read = s.read, delivered = s.delivered,
                            committed = s.committed, dead_lettered = s.dead_lettered,
                            in_per_s = rin as u64, out_per_s = rout as u64, "progress"
                        );
                    }
                });
            }
        }
    }
}

struct Rates {
    last: Snapshot,
    at: Instant,
    rin: f64,
    rout: f64,
}

impl Rates {
    fn new(s: Snapshot) -> Self {
        Self {
            last: s,
            at: Instant::now(),
            rin: 0.0,
            rout: 0.0,
        }
    }

    /// Smoothed records/s in and out since the last call.
    fn update(&mut self, s: Snapshot) -> (f64, f64) {
        let dt = self.at.elapsed().as_secs_f64().max(1e-3);
        let rin = (s.read - self.last.read) as f64 / dt;
        let rout = (s.delivered - self.last.delivered) as f64 / dt;
        self.rin = if self.rin == 0.0 {
            rin
        } else {
            0.6 * self.rin + 0.4 * rin
        };
        self.rout = if self.rout == 0.0 {
            rout
        } else {
            0.6 * self.rout + 0.4 * rout
        };
        self.last = s;
        self.at = Instant::now();
        (self.rin, self.rout)
    }

    fn line(&mut self, s: Snapshot) -> String {
        let (rin, rout) = self.update(s);
        format!(
            "in {}/s · out {}/s · read {} · delivered {} · committed {} · errors {}",
            human(rin as u64),
            human(rout as u64),
            human(s.read),
            human(s.delivered),
            human(s.committed),
            s.dead_lettered
        )
    }
}

/// 1234567 → `1.23M`.
pub fn human(n: u64) -> String {
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{:.1}k", n as f64 / 1e3),
        _ => format!("{:.2}M", n as f64 / 1e6),
    }
}
