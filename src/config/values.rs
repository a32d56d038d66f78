//! The value types of the file: human-readable durations and settings that can be
//! turned off. Each deserializes straight from the TOML value, so a bad value is
//! reported by the parser with its line and column.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A duration written as `"250ms"`, `"3s"`, `"10m"`, `"1h30m"` (see
/// [`parse_duration`]); serialized in the largest unit that writes it exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationSetting(pub Duration);

impl Serialize for DurationSetting {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(self.0))
    }
}

/// `d` as the file writes it: `"90s"`, `"1500ms"`, `"2h"`, `"250ns"`.
pub(crate) fn format_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    let units: [(u128, &str); 7] = [
        (86_400_000_000_000, "d"),
        (3_600_000_000_000, "h"),
        (60_000_000_000, "m"),
        (1_000_000_000, "s"),
        (1_000_000, "ms"),
        (1_000, "us"),
        (1, "ns"),
    ];
    let (size, unit) = units
        .into_iter()
        .find(|(size, _)| nanos >= *size && nanos.is_multiple_of(*size))
        .unwrap_or((1, "ns"));
    format!("{}{unit}", nanos / size)
}

impl<'de> Deserialize<'de> for DurationSetting {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(DurationVisitor)
    }
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = DurationSetting;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration such as \"250ms\", \"3s\", \"10m\" or \"1h\"")
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<DurationSetting, E> {
        parse_duration(s).map(DurationSetting).map_err(E::custom)
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<DurationSetting, E> {
        Err(E::custom(format!(
            "a duration needs a unit: write \"{n}s\" or \"{n}ms\""
        )))
    }
    // JSON and YAML parsers hand non-negative integers over as `u64`.
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<DurationSetting, E> {
        Err(E::custom(format!(
            "a duration needs a unit: write \"{n}s\" or \"{n}ms\""
        )))
    }
}

/// A setting that may be turned off with `"off"` or `false` (the builder's `None`);
/// serialized as `"off"` or the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Off<T>(pub Option<T>);

impl Off<DurationSetting> {
    /// The duration, or `None` if turned off.
    pub fn duration(self) -> Option<Duration> {
        self.0.map(|d| d.0)
    }
}

impl<T: Serialize> Serialize for Off<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Some(value) => value.serialize(s),
            None => s.serialize_str("off"),
        }
    }
}

impl<'de> Deserialize<'de> for Off<DurationSetting> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Off<DurationSetting>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"10m\", or \"off\" or false")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                if s.trim().eq_ignore_ascii_case("off") {
                    return Ok(Off(None));
                }
                DurationVisitor.visit_str(s).map(|d| Off(Some(d)))
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<Self::Value, E> {
                off_bool(b)
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
                DurationVisitor.visit_i64(n).map(|d| Off(Some(d)))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
                DurationVisitor.visit_u64(n).map(|d| Off(Some(d)))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Off<usize> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Off<usize>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-negative integer, or \"off\" or false")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                if s.trim().eq_ignore_ascii_case("off") {
                    return Ok(Off(None));
                }
                Err(E::invalid_value(de::Unexpected::Str(s), &self))
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<Self::Value, E> {
                off_bool(b)
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
                usize::try_from(n)
                    .map(|n| Off(Some(n)))
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(n), &self))
            }
            // JSON and YAML parsers hand non-negative integers over as `u64`.
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
                usize::try_from(n)
                    .map(|n| Off(Some(n)))
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(n), &self))
            }
        }
        d.deserialize_any(V)
    }
}

fn off_bool<T, E: de::Error>(b: bool) -> Result<Off<T>, E> {
    if b {
        Err(E::custom(
            "`true` is not a value here: give one, or \"off\"/false to turn it off",
        ))
    } else {
        Ok(Off(None))
    }
}

/// Parses a human-readable duration: one or more `<number><unit>` parts, for example
/// `"250ms"`, `"3s"`, `"1.5s"`, `"10m"`, `"1h30m"`, `"5min"`, `"100us"`. The number may
/// have a fraction; the units are `ns`, `us` (or `µs`), `ms`, `s` (`sec`, `secs`,
/// `second`, `seconds`), `m` (`min`, `mins`, `minute`, `minutes`), `h` (`hr`, `hrs`,
/// `hour`, `hours`) and `d` (`day`, `days`), humantime's spellings. Spaces between
/// parts are allowed. A bare number, an unknown unit or an overflow is an error saying
/// so.
///
/// ```
/// use std::time::Duration;
/// use stickypool::config::parse_duration;
///
/// assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
/// assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
/// assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
/// assert_eq!(parse_duration("5min 3sec"), Ok(Duration::from_secs(303)));
/// assert!(parse_duration("10").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration: write e.g. \"3s\" or \"250ms\"".into());
    }
    let too_large = || format!("invalid duration \"{text}\": too large");
    let mut total_ns: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let whole = rest.bytes().take_while(u8::is_ascii_digit).count();
        if whole == 0 {
            return Err(format!(
                "invalid duration \"{text}\": expected a number at \"{rest}\" \
                 (e.g. \"250ms\", \"3s\", \"10m\", \"1h\")"
            ));
        }
        let mut number_len = whole;
        let mut fraction = "";
        if let Some(after_dot) = rest[whole..].strip_prefix('.') {
            let digits = after_dot.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(format!(
                    "invalid duration \"{text}\": expected digits after the point"
                ));
            }
            fraction = &after_dot[..digits];
            number_len += 1 + digits;
        }
        let integer: u128 = rest[..whole].parse().map_err(|_| too_large())?;
        let number_text = &rest[..number_len];
        rest = &rest[number_len..];
        let unit_len = rest
            .char_indices()
            .find(|(_, c)| !c.is_alphabetic())
            .map_or(rest.len(), |(i, _)| i);
        let unit = &rest[..unit_len];
        let unit_ns: u128 = match unit {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" | "sec" | "secs" | "second" | "seconds" => 1_000_000_000,
            "m" | "min" | "mins" | "minute" | "minutes" => 60_000_000_000,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3_600_000_000_000,
            "d" | "day" | "days" => 86_400_000_000_000,
            "" => {
                return Err(format!(
                    "invalid duration \"{text}\": missing unit after {number_text} \
                     (use ns, us, ms, s, m, h or d)"
                ));
            }
            other => {
                return Err(format!(
                    "invalid duration \"{text}\": unknown unit \"{other}\" \
                     (use ns, us, ms, s, m, h or d)"
                ));
            }
        };
        // The fraction's digits beyond nanoseconds are dropped, not rounded.
        let scale = 10u128
            .checked_pow(fraction.len() as u32)
            .ok_or_else(too_large)?;
        let fraction_ns = if fraction.is_empty() {
            0
        } else {
            fraction.parse::<u128>().map_err(|_| too_large())? * unit_ns / scale
        };
        let part = integer
            .checked_mul(unit_ns)
            .and_then(|ns| ns.checked_add(fraction_ns))
            .ok_or_else(too_large)?;
        total_ns = total_ns.checked_add(part).ok_or_else(too_large)?;
        rest = rest[unit_len..].trim_start();
    }
    let secs = u64::try_from(total_ns / 1_000_000_000).map_err(|_| too_large())?;
    Ok(Duration::new(secs, (total_ns % 1_000_000_000) as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ok = |s: &str| parse_duration(s).unwrap();
        assert_eq!(ok("250ms"), Duration::from_millis(250));
        assert_eq!(ok("3s"), Duration::from_secs(3));
        assert_eq!(ok("10m"), Duration::from_secs(600));
        assert_eq!(ok("1h"), Duration::from_secs(3600));
        assert_eq!(ok("2d"), Duration::from_secs(172_800));
        assert_eq!(ok("1h30m"), Duration::from_secs(5400));
        assert_eq!(ok(" 1m 30s "), Duration::from_secs(90));
        assert_eq!(ok("0s"), Duration::ZERO);
        for bad in [
            "",
            " ",
            "10",
            "s",
            "3 s",
            "1.s",
            ".5s",
            "-1s",
            "3secs5",
            "3S",
            "abc",
            "1h30",
            "99999999999999999999s",
            "18446744073709551615h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(parse_duration("10").unwrap_err().contains("missing unit"));
        assert!(
            parse_duration("3fortnights")
                .unwrap_err()
                .contains("unknown unit \"fortnights\"")
        );
        // humantime's spellings and fractions.
        assert_eq!(ok("1.5s"), Duration::from_millis(1500));
        assert_eq!(ok("0.25ms"), Duration::from_micros(250));
        assert_eq!(ok("100us"), Duration::from_micros(100));
        assert_eq!(ok("100µs"), Duration::from_micros(100));
        assert_eq!(ok("7ns"), Duration::from_nanos(7));
        assert_eq!(ok("5min"), Duration::from_secs(300));
        assert_eq!(ok("3sec"), Duration::from_secs(3));
        assert_eq!(ok("2hours 1minute"), Duration::from_secs(7260));
        assert_eq!(ok("1day"), Duration::from_secs(86_400));
        assert_eq!(ok("1.0000000001s"), Duration::from_secs(1));
        assert_eq!(ok("18446744073709551615s"), Duration::from_secs(u64::MAX));
    }
}
