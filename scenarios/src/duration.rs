//! Durations in scenario files: an integer is milliseconds; a string carries units
//! (`"250ms"`, `"90s"`, `"15m"`, `"2h"`, `"1d"`, or a sum such as `"1h30m"`).

use lifeboat_core::Millis;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;

/// A span of simulated time in milliseconds.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span(pub Millis);

/// Parse `"1h30m"`, `"250ms"`, `"7"` (milliseconds) into milliseconds.
pub fn parse_span(text: &str) -> Result<Millis, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("an empty duration".into());
    }
    if let Ok(ms) = s.parse::<u64>() {
        return Ok(ms);
    }
    let mut total: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("duration {text:?}: expected a number at {rest:?}"));
        }
        let number: f64 = rest[..digits]
            .parse()
            .map_err(|_| format!("duration {text:?}: bad number {:?}", &rest[..digits]))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale: f64 = match unit.trim() {
            "ms" => 1.0,
            "s" => 1_000.0,
            "m" | "min" => 60_000.0,
            "h" => 3_600_000.0,
            "d" => 86_400_000.0,
            other => {
                return Err(format!(
                    "duration {text:?}: unknown unit {other:?} (use ms, s, m, h or d)"
                ))
            }
        };
        total = total.saturating_add((number * scale).round() as u64);
    }
    Ok(total)
}

/// Format milliseconds the way [`parse_span`] reads them back (`"1h30m"`, `"250ms"`).
pub fn format_span(ms: Millis) -> String {
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let mut rest = ms;
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        if rest >= size {
            out.push_str(&format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    out
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_span(self.0))
    }
}

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_span(self.0))
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Span;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("milliseconds as an integer, or a string such as \"90s\" or \"1h30m\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Span, E> {
                Ok(Span(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Span, E> {
                u64::try_from(v)
                    .map(Span)
                    .map_err(|_| E::custom("a duration cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Span, E> {
                parse_span(v).map(Span).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_parse_with_units_and_round_trip() {
        assert_eq!(parse_span("250ms"), Ok(250));
        assert_eq!(parse_span("90s"), Ok(90_000));
        assert_eq!(parse_span("1h30m"), Ok(5_400_000));
        assert_eq!(parse_span("1.5h"), Ok(5_400_000));
        assert_eq!(parse_span("42"), Ok(42));
        assert!(parse_span("3 fortnights").is_err());
        for ms in [1, 999, 1_000, 61_001, 90_061_001, 86_400_000] {
            assert_eq!(parse_span(&format_span(ms)), Ok(ms));
        }
    }
}
