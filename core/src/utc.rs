//! UTC civil time as pure arithmetic (no clock): the date parts used by artifact names and the
//! ISO 8601 timestamps in alert texts.

use crate::ids::UtcMillis;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A UTC date and time to the second, as written in artifact names and alert texts.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct UtcDateTime {
    pub year: i32,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
}

/// Days from 1970-01-01 to the given civil date (proleptic Gregorian; H. Hinnant's algorithm).
pub fn days_from_civil(year: i32, month: u8, day: u8) -> i64 {
    let y = i64::from(year) - i64::from(month <= 2);
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count from 1970-01-01.
pub fn civil_from_days(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = y + i64::from(m <= 2);
    (year as i32, m as u8, d as u8)
}

/// Number of days in a month of a year.
pub fn days_in_month(year: i32, month: u8) -> u8 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 0,
    }
}

impl UtcDateTime {
    /// The date-time of a UTC instant, truncated to the second.
    pub fn from_millis(t: UtcMillis) -> Self {
        let secs = t.0.div_euclid(1000);
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        UtcDateTime {
            year,
            month,
            day,
            hour: (rem / 3600) as u8,
            minute: (rem % 3600 / 60) as u8,
            second: (rem % 60) as u8,
        }
    }

    /// The UTC instant at the start of this second.
    pub fn to_millis(self) -> UtcMillis {
        let days = days_from_civil(self.year, self.month, self.day);
        let secs = days * 86_400
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second);
        UtcMillis(secs * 1000)
    }
}

/// ISO 8601 UTC, e.g. `2026-11-22T03:05:00Z`, as used in every alert text.
impl fmt::Display for UtcDateTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

/// ISO 8601 UTC with milliseconds, e.g. `2026-11-22T03:05:00.250Z` (restore targets and the
/// points they reach are often less than a second apart).
pub fn iso_ms(t: UtcMillis) -> String {
    let d = UtcDateTime::from_millis(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        d.year,
        d.month,
        d.day,
        d.hour,
        d.minute,
        d.second,
        t.0.rem_euclid(1000)
    )
}

/// Parse an ISO 8601 UTC time: `2026-11-22T03:05:00Z`, with optional fractions of a second
/// (`03:05:00.250Z`) and `+00:00` for `Z`. Any other offset, or none, is refused: a restore
/// target must never depend on the machine's time zone.
pub fn parse_iso(s: &str) -> Result<UtcMillis, String> {
    let bad = |why: &str| {
        Err(format!(
            "{s:?} is not a UTC time like 2026-11-22T03:05:00Z: {why}"
        ))
    };
    let t = s.trim();
    let body = if let Some(b) = t.strip_suffix('Z').or_else(|| t.strip_suffix('z')) {
        b
    } else if let Some(b) = t.strip_suffix("+00:00") {
        b
    } else {
        return bad("it must end in Z (UTC)");
    };
    let Some((date, time)) = body.split_once(['T', 't', ' ']) else {
        return bad("no T between the date and the time");
    };
    let num = |x: &str| -> Option<i64> {
        (!x.is_empty() && x.bytes().all(|b| b.is_ascii_digit()))
            .then(|| x.parse().ok())
            .flatten()
    };
    let d: Vec<&str> = date.split('-').collect();
    let (sec_part, frac) = match time.split_once('.') {
        Some((a, f)) => (a, Some(f)),
        None => (time, None),
    };
    let h: Vec<&str> = sec_part.split(':').collect();
    if d.len() != 3 || h.len() != 3 || d[0].len() != 4 {
        return bad("expected YYYY-MM-DDTHH:MM:SS");
    }
    let (Some(y), Some(mo), Some(da), Some(hh), Some(mi), Some(ss)) = (
        num(d[0]),
        num(d[1]),
        num(d[2]),
        num(h[0]),
        num(h[1]),
        num(h[2]),
    ) else {
        return bad("a field is not a number");
    };
    if !(1..=12).contains(&mo) || hh > 23 || mi > 59 || ss > 59 {
        return bad("a field is out of range");
    }
    if da < 1 || da > i64::from(days_in_month(y as i32, mo as u8)) {
        return bad("no such day in that month");
    }
    let ms = match frac {
        None => 0,
        Some(f) if f.len() <= 9 && num(f).is_some() => {
            let f3: String = f.chars().chain("000".chars()).take(3).collect();
            num(&f3).unwrap_or(0)
        }
        Some(_) => return bad("the fraction of a second is not a number"),
    };
    let t = UtcDateTime {
        year: y as i32,
        month: mo as u8,
        day: da as u8,
        hour: hh as u8,
        minute: mi as u8,
        second: ss as u8,
    };
    Ok(UtcMillis(t.to_millis().0 + ms))
}

impl fmt::Display for UtcMillis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        UtcDateTime::from_millis(*self).fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_times_parse_back_and_anything_not_utc_is_refused() {
        let t = UtcMillis(1_795_392_000_000 + 3_723_250);
        assert_eq!(parse_iso("2026-11-23T01:02:03.250Z"), Ok(t));
        assert_eq!(
            parse_iso("2026-11-23T01:02:03+00:00"),
            Ok(UtcMillis(t.0 - 250))
        );
        assert_eq!(
            parse_iso(&UtcMillis(1_795_392_000_000).to_string()),
            Ok(UtcMillis(1_795_392_000_000))
        );
        for s in [
            "2026-11-23T01:02:03",
            "2026-11-23T01:02:03+01:00",
            "2026-02-30T00:00:00Z",
            "2026-11-23T24:00:00Z",
            "yesterday",
            "2026-11-23T01:02:0xZ",
        ] {
            assert!(parse_iso(s).is_err(), "{s}");
        }
    }

    #[test]
    fn iso_text_of_a_known_instant() {
        let t = UtcDateTime {
            year: 2026,
            month: 11,
            day: 22,
            hour: 3,
            minute: 5,
            second: 0,
        };
        assert_eq!(t.to_string(), "2026-11-22T03:05:00Z");
        assert_eq!(UtcDateTime::from_millis(t.to_millis()), t);
        assert_eq!(UtcMillis(0).to_string(), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn civil_round_trip_over_four_centuries() {
        for d in (-200_000i64..200_000).step_by(7) {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
            assert!(dd >= 1 && dd <= days_in_month(y, m));
        }
    }
}
