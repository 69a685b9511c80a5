//! Durations (`5s`, `200ms`, `1m`, `30d`) and sizes (`5MiB`, `512KiB`, `1GB`) in specs.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written as a number and a unit: `200ms`, `5s`, `1m`, `2h`, `30d`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

/// A size in bytes written as a number and a unit: `512KiB`, `5MiB`, `1GB`, or plain bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

/// The longest duration a spec may hold: 100 years. Anything longer is certainly a typo, and
/// bounding it keeps every `Instant + duration` and timer in the runtime free of overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 86_400);

pub const DURATION_PATTERN: &str = r"^\s*[0-9]+(\.[0-9]+)?\s*(ns|us|µs|ms|s|m|h|d)\s*$";
pub const SIZE_PATTERN: &str = r"^\s*[0-9]+(\.[0-9]+)?\s*(B|KB|MB|GB|KiB|MiB|GiB|k|K|M|G)?\s*$";

/// Splits `1.5 MiB` into its number and its unit (trimmed); `what` says what was expected.
fn number_and_unit<'a>(s: &'a str, what: &str) -> Result<(f64, &'a str), String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n = num.parse().map_err(|_| format!("`{s}` is not {what}"))?;
    Ok((n, unit.trim()))
}

/// Parses `200ms`, `5s`, `1.5m`, `2h`, `30d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = number_and_unit(s, "a duration (write e.g. 200ms, 5s, 1m, 2h, 30d)")?;
    let secs = match unit {
        "ns" => n / 1e9,
        "us" | "µs" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        "" => return Err(format!("`{s}` has no unit (write e.g. {s}s or {s}ms)")),
        u => {
            return Err(format!(
                "`{s}`: unknown duration unit `{u}` (use ms, s, m, h or d)"
            ));
        }
    };
    match Duration::try_from_secs_f64(secs) {
        Ok(d) if d <= MAX_DURATION => Ok(d),
        _ => Err(format!(
            "`{s}` is too long (at most 100 years, e.g. 36500d)"
        )),
    }
}

/// Parses `512KiB`, `5MiB`, `1GB`, `100`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let (n, unit) = number_and_unit(s, "a size (write e.g. 512KiB, 5MiB, 1GB)")?;
    let mult: f64 = match unit {
        "" | "B" => 1.0,
        "KB" | "k" | "K" => 1e3,
        "MB" | "M" => 1e6,
        "GB" | "G" => 1e9,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        u => {
            return Err(format!(
                "`{s}`: unknown size unit `{u}` (use B, KiB, MiB, GiB, KB, MB, GB)"
            ));
        }
    };
    let bytes = (n * mult).round();
    // `u64::MAX as f64` rounds up to 2^64, so `<` keeps the cast below exact and in range.
    if bytes.is_finite() && bytes < u64::MAX as f64 {
        Ok(bytes as u64)
    } else {
        Err(format!("`{s}` is too large (at most 2^64 - 1 bytes)"))
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s)
            .map(Dur)
            .map_err(serde::de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => parse_size(&s)
                .map(ByteSize)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// `JsonSchema` for a type written as text in specs: its name in the schema and its schema.
macro_rules! text_schema {
    ($ty:ty, $name:literal, $schema:tt) => {
        impl schemars::JsonSchema for $ty {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                $name.into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!($schema)
            }
        }
    };
}
pub(crate) use text_schema;

text_schema!(Dur, "Duration", {
    "type": "string",
    "pattern": DURATION_PATTERN,
    "description": "A duration: a number and a unit (ms, s, m, h, d), e.g. `200ms`, `5s`, `1m`.",
});

text_schema!(ByteSize, "Size", {
    "type": ["string", "integer"],
    "pattern": SIZE_PATTERN,
    "minimum": 0,
    "description": "A size in bytes, or a number and a unit (B, KiB, MiB, GiB, KB, MB, GB), e.g. `5MiB`.",
});

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
        for (m, u) in UNITS {
            if self.0 >= m && self.0.is_multiple_of(m) {
                return write!(f, "{}{u}", self.0 / m);
            }
        }
        write!(f, "{}B", self.0)
    }
}

/// In the largest unit that holds it exactly (`290s`, `1m`, `500ms`), so that what the reference
/// and `validate --print` show reads back as the same duration.
impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u128, &str); 6] = [
            (86_400_000_000_000, "d"),
            (3_600_000_000_000, "h"),
            (60_000_000_000, "m"),
            (1_000_000_000, "s"),
            (1_000_000, "ms"),
            (1_000, "us"),
        ];
        let ns = self.0.as_nanos();
        if ns == 0 {
            return f.write_str("0s");
        }
        match UNITS.iter().find(|(n, _)| ns.is_multiple_of(*n)) {
            Some((n, unit)) => write!(f, "{}{unit}", ns / n),
            None => write!(f, "{ns}ns"),
        }
    }
}

impl From<Dur> for Duration {
    fn from(d: Dur) -> Self {
        d.0
    }
}

/// Parses a start timestamp, the one way every source reads one: with `format` (strftime) if
/// given, else RFC 3339, a date, a UTC date-time, or epoch seconds with a fraction.
pub fn parse_timestamp(
    s: &str,
    format: Option<&str>,
) -> Result<chrono::DateTime<chrono::Utc>, String> {
    use chrono::TimeZone;
    let t = s.trim();
    if let Some(f) = format {
        if let Ok(d) = chrono::DateTime::parse_from_str(t, f) {
            return Ok(d.with_timezone(&chrono::Utc));
        }
        if let Ok(d) = chrono::NaiveDateTime::parse_from_str(t, f) {
            return Ok(chrono::Utc.from_utc_datetime(&d));
        }
        if let Ok(d) = chrono::NaiveDate::parse_from_str(t, f) {
            return Ok(chrono::Utc.from_utc_datetime(&d.and_time(chrono::NaiveTime::MIN)));
        }
        return Err(format!("`{s}` does not match timestamp_format `{f}`"));
    }
    if let Ok(secs) = t.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            let ms = (secs * 1000.0).round() as i64;
            return chrono::Utc
                .timestamp_millis_opt(ms)
                .single()
                .ok_or_else(|| format!("`{s}` is out of range"));
        }
        return Err(format!("`{s}`: epoch seconds must not be negative"));
    }
    if let Ok(d) = chrono::DateTime::parse_from_rfc3339(t) {
        return Ok(d.with_timezone(&chrono::Utc));
    }
    for f in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(d) = chrono::NaiveDateTime::parse_from_str(t, f) {
            return Ok(chrono::Utc.from_utc_datetime(&d));
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return Ok(chrono::Utc.from_utc_datetime(&d.and_time(chrono::NaiveTime::MIN)));
    }
    Err(format!(
        "`{s}` is not a timestamp: write RFC 3339 (2016-04-04T19:58:46.480Z), a date (2016-04-04), epoch seconds (1459799926.480), or set timestamp_format"
    ))
}

// Defaults written at the field they belong to, e.g. `#[serde(default = "secs::<10>")]`,
// instead of a one-line function per field. The schema and the reference show the value.

/// A default duration of `N` seconds.
pub fn secs<const N: u64>() -> Dur {
    Dur(Duration::from_secs(N))
}

/// A default duration of `N` milliseconds.
pub fn millis<const N: u64>() -> Dur {
    Dur(Duration::from_millis(N))
}

/// A default number (the field's type is named: `int::<usize, 1000>`).
pub fn int<T: From<u16>, const N: u16>() -> T {
    T::from(N)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duration_shown_reads_back_as_itself() {
        for (d, shown) in [
            (Duration::from_secs(290), "290s"),
            (Duration::from_secs(60), "1m"),
            (Duration::from_secs(7200), "2h"),
            (Duration::from_secs(86_400 * 30), "30d"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_millis(1500), "1500ms"),
            (Duration::from_micros(7), "7us"),
            (Duration::from_nanos(5), "5ns"),
            (Duration::ZERO, "0s"),
        ] {
            assert_eq!(Dur(d).to_string(), shown);
            assert_eq!(parse_duration(shown), Ok(d), "{shown}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86400)));
        assert!(parse_duration("5").unwrap_err().contains("no unit"));
        assert!(
            parse_duration("5 parsecs")
                .unwrap_err()
                .contains("unknown duration unit")
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("5MiB"), Ok(5 * 1024 * 1024));
        assert_eq!(parse_size("1KB"), Ok(1000));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("5XB").is_err());
    }

    #[test]
    fn huge_durations_are_errors_not_panics() {
        for s in [
            "99999999999999999999s",
            "1000000000000000000000000000000000000000d",
            "101y",
        ] {
            assert!(parse_duration(s).is_err(), "{s}");
        }
        let long = format!("{}s", "9".repeat(400));
        assert!(parse_duration(&long).unwrap_err().contains("too long"));
        assert!(parse_duration("36500d").is_ok());
        assert!(parse_duration("36501d").unwrap_err().contains("too long"));
    }

    #[test]
    fn huge_sizes_are_errors_not_saturated() {
        assert!(
            parse_size("99999999999999999999GB")
                .unwrap_err()
                .contains("too large")
        );
        assert!(
            parse_size(&"9".repeat(400))
                .unwrap_err()
                .contains("too large")
        );
        assert_eq!(parse_size("16GiB"), Ok(16 << 30));
        assert_eq!(ByteSize(5 * 1024 * 1024).to_string(), "5MiB");
    }
}
