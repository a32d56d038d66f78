//! The value types of the file: human-readable durations and settings that can be
//! turned off. Each deserializes straight from the TOML value, so a bad value is
//! reported by the parser with its line and column.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// A duration written as `"250ms"`, `"3s"`, `"10m"`, `"1h30m"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DurationSetting(pub(crate) Duration);

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
}

/// A setting that may be turned off with `"off"` or `false` (the builder's `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Off<T>(pub(crate) Option<T>);

impl Off<DurationSetting> {
    pub(crate) fn duration(self) -> Option<Duration> {
        self.0.map(|d| d.0)
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

/// Parses a human-readable duration: one or more `<integer><unit>` parts with units
/// `ms`, `s`, `m`, `h`, `d`, for example `"250ms"`, `"3s"`, `"10m"`, `"1h30m"`. Spaces
/// between parts are allowed. A bare number, an unknown unit, a fraction or an overflow
/// is an error saying so.
///
/// ```
/// use std::time::Duration;
/// use stickypool::config::parse_duration;
///
/// assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
/// assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
/// assert!(parse_duration("10").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration: write e.g. \"3s\" or \"250ms\"".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!(
                "invalid duration \"{text}\": expected a number at \"{rest}\" \
                 (e.g. \"250ms\", \"3s\", \"10m\", \"1h\")"
            ));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("invalid duration \"{text}\": number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(|b| b.is_ascii_alphabetic()).count();
        let unit = &rest[..unit_len];
        let part = match unit {
            "ms" => Some(Duration::from_millis(number)),
            "s" => Some(Duration::from_secs(number)),
            "m" => number.checked_mul(60).map(Duration::from_secs),
            "h" => number.checked_mul(3600).map(Duration::from_secs),
            "d" => number.checked_mul(86_400).map(Duration::from_secs),
            "" => {
                return Err(format!(
                    "invalid duration \"{text}\": missing unit after {number} \
                     (use ms, s, m, h or d)"
                ));
            }
            other => {
                return Err(format!(
                    "invalid duration \"{text}\": unknown unit \"{other}\" \
                     (use ms, s, m, h or d)"
                ));
            }
        };
        total = part
            .and_then(|p| total.checked_add(p))
            .ok_or_else(|| format!("invalid duration \"{text}\": too large"))?;
        rest = rest[unit_len..].trim_start();
    }
    Ok(total)
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
            "1.5s",
            "-1s",
            "3sec",
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
            parse_duration("3sec")
                .unwrap_err()
                .contains("unknown unit \"sec\"")
        );
    }
}
