//! Sizes and durations as people write them in the file: `20GiB`, `512 MiB`, `30s`, `1m`.
//!
//! A value that does not read is a mistake naming its key, with an example of what would.

use std::time::Duration;

use super::{Checker, ConfigError};

impl Checker<'_> {
    /// `value` (or `default` when the key is absent) as a duration.
    pub(super) fn duration(
        &self,
        value: Option<&str>,
        default: &str,
        key: &str,
    ) -> Result<Duration, ConfigError> {
        let v = value.unwrap_or(default);
        humantime::parse_duration(v).map_err(|e| {
            self.bad(
                key,
                format!("{v:?} is not a duration like 30s, 5m, 1h ({e})"),
            )
        })
    }

    /// `value` (or `default` when the key is absent) as a size in bytes.
    pub(super) fn size(
        &self,
        value: Option<&str>,
        default: &str,
        key: &str,
    ) -> Result<u64, ConfigError> {
        let v = value.unwrap_or(default);
        parse_size(v).ok_or_else(|| {
            self.bad(
                key,
                format!(
                    "{v:?} is not a size like 512MiB or 20GiB (binary units B, KiB, MiB, GiB, TiB; decimal KB, MB, GB, TB are powers of 1000: 20GB is 18.6GiB)"
                ),
            )
        })
    }
}

/// Parses `20GiB`, `512 MiB`, `100KB`-style sizes into bytes. Binary and decimal units are both
/// accepted (`KB` = 1000, `KiB` = 1024); a bare number is bytes.
pub(crate) fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let unit = unit.trim();
    let mult: u64 = match unit {
        "" | "B" => 1,
        "KiB" | "K" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        "TiB" | "T" => 1 << 40,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        _ => return None,
    };
    if num.is_empty() || num.starts_with('.') || num.ends_with('.') {
        return None;
    }
    if let Ok(n) = num.parse::<u64>() {
        return n.checked_mul(mult);
    }
    let f: f64 = num.parse().ok()?;
    let bytes = f * mult as f64;
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// A size as people write it: in the largest binary unit it is a whole number of (`20GiB`,
/// `64KiB`), else in bytes (`1000B`). [`parse_size`] reads it back to the same number.
pub(crate) fn format_size(bytes: u64) -> String {
    for (unit, m) in [
        ("TiB", 1u64 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ] {
        if bytes >= m && bytes.is_multiple_of(m) {
            return format!("{}{unit}", bytes / m);
        }
    }
    format!("{bytes}B")
}

/// A duration as people write it (`1m`, `10s`, `1h 30m`); `humantime` reads it back.
pub(crate) fn format_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("20GiB"), Some(20 << 30));
        assert_eq!(parse_size("512 MiB"), Some(512 << 20));
        assert_eq!(parse_size("1.5KiB"), Some(1536));
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("10XB"), None);
        assert_eq!(parse_size("GiB"), None);
        assert_eq!(parse_size("-1GiB"), None);
        assert_eq!(parse_size("99999999999TiB"), None);
    }

    #[test]
    fn sizes_print_as_people_write_them_and_read_back() {
        assert_eq!(format_size(20 << 30), "20GiB");
        assert_eq!(format_size(64 << 10), "64KiB");
        assert_eq!(format_size(1536), "1536B");
        assert_eq!(format_size(0), "0B");
        for n in [0, 1, 1000, 1 << 10, 3 << 20, (5 << 40) + 1, u64::MAX] {
            assert_eq!(parse_size(&format_size(n)), Some(n), "{n}");
        }
        let d = Duration::from_secs(90);
        assert_eq!(humantime::parse_duration(&format_duration(d)).unwrap(), d);
        assert_eq!(format_duration(Duration::from_secs(60)), "1m");
    }
}
