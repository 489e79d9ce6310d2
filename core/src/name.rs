//! The recovery-location seed's artifact naming convention:
//! `<db>_<YYYY>_<MM>_<DD>_<hh>_<mm>_<ss>_<kind>_<retry>`, UTC, kind in `full`, `incr`, `tlog`.
//! Parsed from the right, because a database name may itself contain `_`.

use crate::artifact::ArtifactKind;
use crate::utc::{days_in_month, UtcDateTime};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A parsed artifact file name. It is a label: identity and checksum come from the manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactName {
    pub db: String,
    pub created: UtcDateTime,
    pub kind: ArtifactKind,
    pub retry: u32,
}

/// The part of a name that is wrong.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum NamePart {
    /// Fewer than nine `_`-separated fields.
    Fields,
    Database,
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
    Kind,
    Retry,
}

impl NamePart {
    fn what(self) -> &'static str {
        match self {
            NamePart::Fields => "number of `_`-separated fields (at least 9)",
            NamePart::Database => "database name (non-empty)",
            NamePart::Year => "year (4 digits, 1970-9999)",
            NamePart::Month => "month (2 digits, 01-12)",
            NamePart::Day => "day (2 digits, valid for the month)",
            NamePart::Hour => "hour (2 digits, 00-23)",
            NamePart::Minute => "minutes (2 digits, 00-59)",
            NamePart::Second => "seconds (2 digits, 00-59)",
            NamePart::Kind => "kind (one of full, incr, tlog)",
            NamePart::Retry => "retry count (decimal digits, no sign)",
        }
    }
}

/// A malformed artifact name: which part is wrong, and what was found there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameError {
    pub name: String,
    pub part: NamePart,
    pub found: String,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "artifact name {:?}: the {} is wrong (found {:?}); expected \
             <db>_<YYYY>_<MM>_<DD>_<hh>_<mm>_<ss>_<full|incr|tlog>_<retry>",
            self.name,
            self.part.what(),
            self.found
        )
    }
}

impl std::error::Error for NameError {}

fn digits(s: &str, width: Option<usize>) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if let Some(w) = width {
        if s.len() != w {
            return None;
        }
    }
    if s.len() > 10 {
        return None;
    }
    s.parse().ok()
}

impl ArtifactName {
    /// The name of an artifact of database `db` created at `created` (UTC), after `retry`
    /// failed reads.
    pub fn new(db: &str, created: crate::ids::UtcMillis, kind: ArtifactKind, retry: u32) -> Self {
        ArtifactName {
            db: db.to_string(),
            created: UtcDateTime::from_millis(created),
            kind,
            retry,
        }
    }

    /// The name an artifact's manifest gives it, for database `db`.
    pub fn of(meta: &crate::artifact::ArtifactMeta, db: &str) -> Self {
        ArtifactName::new(db, meta.created_utc, meta.key.kind, meta.retry)
    }

    /// Parse a name (without directory or extension).
    pub fn parse(name: &str) -> Result<ArtifactName, NameError> {
        let err = |part, found: &str| NameError {
            name: name.to_string(),
            part,
            found: found.to_string(),
        };
        // Split from the right: 8 fixed fields, the rest is the database name.
        let mut fields: [&str; 8] = [""; 8];
        let mut rest = name;
        for field in fields.iter_mut() {
            match rest.rfind('_') {
                Some(pos) => {
                    *field = &rest[pos + 1..];
                    rest = &rest[..pos];
                }
                None => return Err(err(NamePart::Fields, name)),
            }
        }
        let db = rest;
        let [retry, kind, second, minute, hour, day, month, year] = fields;
        if db.is_empty() {
            return Err(err(NamePart::Database, db));
        }
        let year_n = digits(year, Some(4))
            .filter(|y| (1970..=9999).contains(y))
            .ok_or_else(|| err(NamePart::Year, year))? as i32;
        let month_n = digits(month, Some(2))
            .filter(|m| (1..=12).contains(m))
            .ok_or_else(|| err(NamePart::Month, month))? as u8;
        let day_n = digits(day, Some(2))
            .filter(|d| *d >= 1 && *d <= u64::from(days_in_month(year_n, month_n)))
            .ok_or_else(|| err(NamePart::Day, day))? as u8;
        let hour_n = digits(hour, Some(2))
            .filter(|h| *h < 24)
            .ok_or_else(|| err(NamePart::Hour, hour))? as u8;
        let minute_n = digits(minute, Some(2))
            .filter(|m| *m < 60)
            .ok_or_else(|| err(NamePart::Minute, minute))? as u8;
        let second_n = digits(second, Some(2))
            .filter(|s| *s < 60)
            .ok_or_else(|| err(NamePart::Second, second))? as u8;
        let kind = ArtifactKind::from_name_word(kind).ok_or_else(|| err(NamePart::Kind, kind))?;
        let retry = digits(retry, None)
            .and_then(|r| u32::try_from(r).ok())
            .ok_or_else(|| err(NamePart::Retry, retry))?;
        Ok(ArtifactName {
            db: db.to_string(),
            created: UtcDateTime {
                year: year_n,
                month: month_n,
                day: day_n,
                hour: hour_n,
                minute: minute_n,
                second: second_n,
            },
            kind,
            retry,
        })
    }
}

impl fmt::Display for ArtifactName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.created;
        write!(
            f,
            "{}_{:04}_{:02}_{:02}_{:02}_{:02}_{:02}_{}_{}",
            self.db,
            c.year,
            c.month,
            c.day,
            c.hour,
            c.minute,
            c.second,
            self.kind.name_word(),
            self.retry
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_seed_example() {
        let n = ArtifactName::parse("sales_2026_11_22_03_05_00_tlog_2").unwrap();
        assert_eq!(n.db, "sales");
        assert_eq!(n.created.to_string(), "2026-11-22T03:05:00Z");
        assert_eq!(n.kind, ArtifactKind::Log);
        assert_eq!(n.retry, 2);
    }

    #[test]
    fn database_names_may_contain_underscores() {
        let n = ArtifactName::parse("my_sales_db_2026_01_31_23_59_59_full_0").unwrap();
        assert_eq!(n.db, "my_sales_db");
        assert_eq!(n.kind, ArtifactKind::Full);
    }

    #[test]
    fn malformed_names_say_which_part_is_wrong() {
        let cases = [
            ("sales_2026_11_22_03_05_00_tlog_x", NamePart::Retry),
            ("sales_2026_11_22_03_05_00_tlog_-1", NamePart::Retry),
            ("sales_2026_11_22_03_05_00_blob_0", NamePart::Kind),
            ("sales_2026_11_22_03_05_60_tlog_0", NamePart::Second),
            ("sales_2026_11_22_03_61_00_tlog_0", NamePart::Minute),
            ("sales_2026_11_22_24_05_00_tlog_0", NamePart::Hour),
            ("sales_2026_02_30_03_05_00_tlog_0", NamePart::Day),
            ("sales_2026_13_22_03_05_00_tlog_0", NamePart::Month),
            ("sales_26_11_22_03_05_00_tlog_0", NamePart::Year),
            ("_2026_11_22_03_05_00_tlog_0", NamePart::Database),
            ("2026_11_22_03_05_00_tlog_0", NamePart::Fields),
            ("tlog_0", NamePart::Fields),
            ("", NamePart::Fields),
        ];
        for (name, part) in cases {
            let e = ArtifactName::parse(name).unwrap_err();
            assert_eq!(e.part, part, "{name}: {e}");
            assert!(e.to_string().contains(e.part.what()));
        }
    }

    fn any_name() -> impl Strategy<Value = ArtifactName> {
        (
            "[a-zA-Z0-9_]{0,12}[a-zA-Z0-9]",
            0i64..(8000 * 365 * 86_400),
            prop_oneof![
                Just(ArtifactKind::Full),
                Just(ArtifactKind::Incremental),
                Just(ArtifactKind::Log)
            ],
            any::<u32>(),
        )
            .prop_map(|(db, secs, kind, retry)| ArtifactName {
                db,
                created: UtcDateTime::from_millis(crate::ids::UtcMillis(secs * 1000)),
                kind,
                retry,
            })
    }

    proptest! {
        #[test]
        fn format_then_parse_is_identity(n in any_name()) {
            let text = n.to_string();
            prop_assert_eq!(ArtifactName::parse(&text).unwrap(), n);
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,60}") {
            if let Ok(n) = ArtifactName::parse(&s) {
                prop_assert_eq!(ArtifactName::parse(&n.to_string()).unwrap(), n);
            }
        }
    }
}
