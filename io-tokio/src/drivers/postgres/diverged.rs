//! The writes a former primary took that the new primary never received, found when the
//! former primary is rebuilt, counted and kept.
//!
//! A failover's report can only bound the loss: nobody at the recovery site knows what the
//! lost primary wrote after the last byte it sent. Its data directory knows. When the site
//! comes back and is reseeded from the new primary's base backup, the old directory is moved
//! aside; before it is removed, this module compares the two:
//!
//! - the new base backup's newest `.history` file says where the new timeline left each older
//!   one (its switch point, where the promoted standby's replay ended);
//! - the old directory's newest timeline is the one the former primary wrote on. If the new
//!   history left it at `from` and the old WAL runs on to `to`, the bytes `[from, to)` are the
//!   writes lost in the failover: the exact loss, where the report could give only bounds.
//!
//! The segments holding `[from, to)` are copied durably to the database's spool under
//! `diverged/<timeline>-<from>/`, with `loss.json` saying what they hold (positions, commits
//! counted by walking the records, the first and last commit times), so an operator can read
//! them with `pg_waldump` and re-apply what matters. Nothing removes that directory.

use super::spool;
use super::wal::{scan_commits, segment_of, PgLsn, WalFile};
use lifeboat_core::protocol::LostWrites;
use lifeboat_core::{DbId, Lsn, UtcMillis};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// What `loss.json` records.
#[derive(Serialize)]
struct LossFile<'a> {
    database: &'a str,
    timeline: u32,
    from: String,
    to: String,
    bytes: u64,
    transactions: u64,
    first_commit: Option<String>,
    last_commit: Option<String>,
    last_kept_commit: Option<String>,
    segments: Vec<String>,
}

/// The switch points of the newest history in `pg_wal` (timeline → where it was left), or
/// an empty map when the directory has no history file (timeline 1).
fn switch_points(pg_wal: &Path) -> Result<BTreeMap<u32, u64>, String> {
    let newest = spool::list(pg_wal)
        .map_err(|e| format!("listing {}: {e}", pg_wal.display()))?
        .into_iter()
        .filter_map(|(name, path)| match WalFile::parse(&name, 1 << 24) {
            Some(WalFile::History { timeline }) => Some((timeline, path)),
            _ => None,
        })
        .max_by_key(|(t, _)| *t);
    let Some((_, path)) = newest else {
        return Ok(BTreeMap::new());
    };
    let text = fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let mut points = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut f = line.split_whitespace();
        let (Some(tli), Some(lsn)) = (f.next(), f.next()) else {
            return Err(format!("{}: malformed line {line:?}", path.display()));
        };
        let (Ok(tli), Some(lsn)) = (tli.parse::<u32>(), PgLsn::parse(lsn)) else {
            return Err(format!("{}: malformed line {line:?}", path.display()));
        };
        points.insert(tli, lsn.0);
    }
    Ok(points)
}

/// Compare the old data directory with the new one (a base backup of the new primary, just
/// extracted); keep and describe what the old one wrote beyond the new history. `None` when it
/// holds nothing the new history lacks (a standby, or a primary that lost nothing).
pub fn find_and_keep(
    db: DbId,
    name: &str,
    old_data: &Path,
    new_data: &Path,
    segment_size: u64,
    keep_root: &Path,
) -> Result<Option<LostWrites>, String> {
    let points = switch_points(&new_data.join("pg_wal"))?;
    let old_wal = old_data.join("pg_wal");
    let mut by_timeline: BTreeMap<u32, BTreeMap<u64, PathBuf>> = BTreeMap::new();
    for (file, path) in
        spool::list(&old_wal).map_err(|e| format!("listing {}: {e}", old_wal.display()))?
    {
        if let Some(WalFile::Segment { timeline, segno }) = WalFile::parse(&file, segment_size) {
            by_timeline.entry(timeline).or_default().insert(segno, path);
        }
    }
    let Some((&timeline, segments)) = by_timeline.iter().next_back() else {
        return Ok(None);
    };
    let Some(&from) = points.get(&timeline) else {
        // The new history did not leave this timeline: the old copy followed it.
        return Ok(None);
    };
    // Walk the old timeline from the segment holding the switch point while it is whole.
    let mut to = from;
    let mut commits = Vec::new();
    let mut kept = Vec::new();
    let mut segno = segment_of(from, segment_size);
    while let Some(path) = segments.get(&segno) {
        let bytes = fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        let Ok((scan, c)) = scan_commits(&bytes, segno, segment_size, from) else {
            break; // recycled or never written: the old WAL ended before it
        };
        if scan.valid_end <= to {
            break;
        }
        to = scan.valid_end;
        commits.push(c);
        kept.push((path.clone(), bytes));
        if scan.valid_end < (segno + 1) * segment_size {
            break;
        }
        segno += 1;
    }
    if to <= from {
        return Ok(None);
    }
    let transactions = commits.iter().map(|c| c.count).sum();
    let first_ms = commits.iter().filter_map(|c| c.first_ms).min();
    let last_ms = commits.iter().filter_map(|c| c.last_ms).max();
    // Only the first segment holds records before the switch point.
    let kept_ms = commits.first().and_then(|c| c.before_ms);
    let dir = keep_root.join(format!("{timeline:08X}-{from:016X}"));
    fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let mut names = Vec::new();
    for (path, bytes) in &kept {
        let file = path
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        let target = dir.join(&file);
        spool::write_durably(&target, bytes)
            .map_err(|e| format!("keeping {} in {}: {e}", path.display(), dir.display()))?;
        names.push(file.to_string_lossy().into_owned());
    }
    let iso = |ms: Option<i64>| ms.map(|t| lifeboat_core::utc::iso_ms(UtcMillis(t)));
    let loss = LossFile {
        database: name,
        timeline,
        from: PgLsn(from).to_string(),
        to: PgLsn(to).to_string(),
        bytes: to - from,
        transactions,
        first_commit: iso(first_ms),
        last_commit: iso(last_ms),
        last_kept_commit: iso(kept_ms),
        segments: names,
    };
    let json = serde_json::to_vec_pretty(&loss).expect("the loss description encodes");
    spool::write_durably(&dir.join("loss.json"), &json)
        .and_then(|_| spool::sync_dir(keep_root))
        .map_err(|e| format!("writing {}: {e}", dir.join("loss.json").display()))?;
    Ok(Some(LostWrites {
        db,
        from: Lsn(from),
        to: Lsn(to),
        transactions: Some(transactions),
        first_commit: first_ms.map(UtcMillis),
        last_commit: last_ms.map(UtcMillis),
        last_kept_commit: kept_ms.map(UtcMillis),
        kept: dir.display().to_string(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::postgres::wal::tests::{build, SEG};

    const COMMIT: (u32, u8, u8) = (40, 1, 0x00);
    const INSERT: (u32, u8, u8) = (100, 10, 0);

    fn segment(dir: &Path, timeline: u32, segno: u64, records: &[(u32, u8, u8)]) {
        let name = WalFile::Segment { timeline, segno }.name(SEG);
        fs::write(dir.join(name), build(segno, records, None)).unwrap();
    }

    fn dirs() -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let (old, new, keep) = (
            t.path().join("old"),
            t.path().join("new"),
            t.path().join("keep"),
        );
        for d in [&old, &new] {
            fs::create_dir_all(d.join("pg_wal")).unwrap();
        }
        (t, old, new, keep)
    }

    #[test]
    fn a_former_primarys_writes_past_the_switch_point_are_counted_and_kept() {
        let (_t, old, new, keep) = dirs();
        // The old primary wrote 3 transactions on timeline 1 in segment 3.
        let recs = [INSERT, COMMIT, INSERT, COMMIT, INSERT, COMMIT];
        segment(&old.join("pg_wal"), 1, 3, &recs);
        // The new primary left timeline 1 after the first transaction.
        let switch = 3 * SEG + 40 + 104 + 40;
        fs::write(
            new.join("pg_wal/00000002.history"),
            format!("1\t{}\tno recovery target specified\n", PgLsn(switch)),
        )
        .unwrap();
        let lost = find_and_keep(DbId(0), "app", &old, &new, SEG, &keep)
            .unwrap()
            .expect("writes lost");
        let end = 3 * SEG + 40 + 3 * (104 + 40);
        assert_eq!((lost.from, lost.to), (Lsn(switch), Lsn(end)));
        assert_eq!(lost.transactions, Some(2));
        let dir = PathBuf::from(&lost.kept);
        assert!(dir.starts_with(&keep));
        let kept = fs::read(dir.join("000000010000000000000003")).unwrap();
        assert_eq!(kept, build(3, &recs, None));
        let loss: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.join("loss.json")).unwrap()).unwrap();
        assert_eq!(loss["bytes"], end - switch);
        assert_eq!(loss["transactions"], 2);
        assert_eq!(loss["segments"][0], "000000010000000000000003");
    }

    #[test]
    fn a_copy_that_followed_the_new_history_or_stopped_at_its_switch_point_lost_nothing() {
        let (_t, old, new, keep) = dirs();
        segment(&old.join("pg_wal"), 2, 3, &[INSERT, COMMIT]);
        fs::write(new.join("pg_wal/00000002.history"), "1\t0/3000100\tx\n").unwrap();
        // On the new timeline already: nothing diverged.
        assert_eq!(
            find_and_keep(DbId(0), "app", &old, &new, SEG, &keep),
            Ok(None)
        );
        // On the old timeline, ending exactly at the switch point.
        let (_t, old, new, keep) = dirs();
        segment(&old.join("pg_wal"), 1, 3, &[INSERT, COMMIT]);
        let end = 3 * SEG + 40 + 104 + 40;
        fs::write(
            new.join("pg_wal/00000002.history"),
            format!("1\t{}\tx\n", PgLsn(end)),
        )
        .unwrap();
        assert_eq!(
            find_and_keep(DbId(0), "app", &old, &new, SEG, &keep),
            Ok(None)
        );
        assert!(!keep.exists(), "nothing kept when nothing was lost");
        // No history at all (the new primary never promoted): nothing to compare.
        fs::remove_file(new.join("pg_wal/00000002.history")).unwrap();
        assert_eq!(
            find_and_keep(DbId(0), "app", &old, &new, SEG, &keep),
            Ok(None)
        );
    }

    #[test]
    fn a_malformed_history_is_an_error_naming_the_file() {
        let (_t, old, new, keep) = dirs();
        segment(&old.join("pg_wal"), 1, 3, &[INSERT, COMMIT]);
        fs::write(new.join("pg_wal/00000002.history"), "1\tnot-a-position\n").unwrap();
        let e = find_and_keep(DbId(0), "app", &old, &new, SEG, &keep).unwrap_err();
        assert!(
            e.contains("00000002.history") && e.contains("malformed"),
            "{e}"
        );
    }
}
