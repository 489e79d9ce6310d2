//! `lifeboat archive list`, `lifeboat restore --at` and `lifeboat drill --at`: the
//! point-in-time archive, read straight from its directory (no agent needed). Which artifacts
//! make a point, and which chain restores it, is the core's rule
//! ([`lifeboat_core::archive`]); the drivers build the point into a new place and check it.

use super::exit;
use crate::archive::Archive;
use crate::config::{DriverConfig, SiteFile};
use crate::drivers::{self, manifest as dm, postgres::pitr, ArtifactFile, ErrorKind, Progress};
use crate::status::doc::ReportBody;
use lifeboat_core::archive::{self as ca, At, Point};
use lifeboat_core::utc::parse_iso;
use lifeboat_core::{ArtifactKey, ArtifactMeta, Lsn};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What `--action` asks of a restored PostgreSQL copy at its target.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PgAction {
    /// Stay in recovery, paused and read-only: look before you promote.
    Pause,
    /// End recovery and accept writes (a new timeline).
    Promote,
}

/// `--at`: `latest`, `lsn:N` (or a bare number), or a UTC time (`2026-11-22T03:05:00Z`).
pub fn parse_at(s: &str) -> Result<At, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("latest") {
        return Ok(At::Latest);
    }
    let n = t.strip_prefix("lsn:").unwrap_or(t);
    if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) {
        return n
            .parse()
            .map(|v| At::Lsn(Lsn(v)))
            .map_err(|_| format!("{s:?}: the position is too large"));
    }
    parse_iso(t)
        .map(At::Utc)
        .map_err(|e| format!("--at {e}; or give `latest`, or a position as `lsn:N`"))
}

fn describe_at(at: At) -> String {
    match at {
        At::Latest => "the newest point".into(),
        At::Utc(t) => utc_ms(t),
        At::Lsn(l) => format!("position {}", l.0),
    }
}

/// A UTC time with its milliseconds when it has any (`2026-11-22T03:05:00.250Z`).
fn utc_ms(t: lifeboat_core::UtcMillis) -> String {
    match t.0.rem_euclid(1000) {
        0 => t.to_string(),
        _ => lifeboat_core::utc::iso_ms(t),
    }
}

/// The site file and its archive, or the message to print.
fn open(config: &Path) -> Result<(SiteFile, Archive), String> {
    let file = SiteFile::load(config).map_err(|e| e.to_string())?;
    let Some(a) = &file.archive else {
        return Err(format!(
            "{} has no [archive] section: this site keeps no point-in-time archive (add \
             `[archive] dir = \"...\"` on the recovery site and restart its agent)",
            config.display()
        ));
    };
    let archive = Archive::new(&a.dir);
    Ok((file, archive))
}

/// One database's archive: its artifacts and their files.
struct DbArchive {
    name: String,
    entries: Vec<ArtifactMeta>,
    files: BTreeMap<ArtifactKey, PathBuf>,
}

fn read_db(archive: &Archive, name: &str) -> DbArchive {
    let mut entries = Vec::new();
    let mut files = BTreeMap::new();
    for (m, p) in archive.scan(name) {
        entries.push(m);
        files.insert(m.key, p);
    }
    DbArchive {
        name: name.to_string(),
        entries,
        files,
    }
}

fn databases<'a>(file: &'a SiteFile, db: Option<&str>) -> Result<Vec<&'a String>, String> {
    match db {
        None => Ok(file.engine.databases.iter().collect()),
        Some(d) => match file.engine.databases.iter().find(|n| *n == d) {
            Some(n) => Ok(vec![n]),
            None => Err(format!(
                "no database {d:?}; the configured ones are: {}",
                file.engine.databases.join(", ")
            )),
        },
    }
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / 1_048_576.0)
}

/// `lifeboat archive list` (`artifacts`: also name every artifact behind each range).
pub fn list(config: &Path, db: Option<&str>, json: bool, artifacts: bool) -> i32 {
    let (file, archive) = match open(config) {
        Ok(x) => x,
        Err(e) => return fail("archive list", &e, exit::USAGE),
    };
    let names = match databases(&file, db) {
        Ok(n) => n,
        Err(e) => return fail("archive list", &e, exit::USAGE),
    };
    let mut docs = Vec::new();
    let mut text = String::new();
    for name in names {
        let d = read_db(&archive, name);
        let points = ca::points(&d.entries);
        let ranges = ca::ranges(&points);
        let bytes: u64 = d.entries.iter().map(|m| m.size).sum();
        text.push_str(&format!(
            "database {}: {} artifacts, {} in {}\n",
            d.name,
            d.entries.len(),
            mib(bytes),
            archive.db_dir(&d.name).display()
        ));
        if ranges.is_empty() {
            text.push_str("  no restorable point yet (a full backup must be archived first)\n");
        }
        let mut rdocs = Vec::new();
        for r in &ranges {
            text.push_str(&format!(
                "  {} .. {}  positions {}..{}  {} points from the full of {}  ({} artifacts, {})\n",
                r.first.1,
                r.last.1,
                r.first.0 .0,
                r.last.0 .0,
                r.points,
                r.full.created_utc,
                r.artifacts,
                mib(r.bytes)
            ));
            let members: Vec<serde_json::Value> = if artifacts {
                r.members
                    .iter()
                    .map(|m| {
                        let name = crate::transport::inbox::artifact_file_name(m, &d.name);
                        text.push_str(&format!(
                            "    {name}  {} {}..{}  {}\n",
                            m.key.kind.name_word(),
                            m.key.lsn_start.0,
                            m.key.lsn_end.0,
                            mib(m.size)
                        ));
                        serde_json::json!({
                            "file": d.files.get(&m.key).and_then(|p| p.file_name()).map(|f| f.to_string_lossy().into_owned()).unwrap_or(name),
                            "kind": m.key.kind.name_word(),
                            "lsn_start": m.key.lsn_start.0,
                            "lsn_end": m.key.lsn_end.0,
                            "epoch": m.key.epoch.0,
                            "created_utc": m.created_utc.to_string(),
                            "bytes": m.size,
                        })
                    })
                    .collect()
            } else {
                Vec::new()
            };
            rdocs.push(serde_json::json!({
                "artifact_list": members,
                "full": {
                    "created_utc": r.full.created_utc.to_string(),
                    "position": r.full.key.lsn_end.0,
                    "epoch": r.full.key.epoch.0,
                },
                "first_utc": r.first.1.to_string(),
                "first_position": r.first.0 .0,
                "last_utc": r.last.1.to_string(),
                "last_position": r.last.0 .0,
                "points": r.points,
                "artifacts": r.artifacts,
                "bytes": r.bytes,
            }));
        }
        docs.push(serde_json::json!({
            "db": d.name,
            "dir": archive.db_dir(&d.name),
            "artifacts": d.entries.len(),
            "bytes": bytes,
            "ranges": rdocs,
        }));
    }
    if json {
        println!(
            "{}",
            serde_json::json!({ "archive": archive.root, "databases": docs })
        );
    } else {
        print!("{text}");
    }
    exit::OK
}

/// A chain as artifact files, each read with its manifest.
fn chain_files(d: &DbArchive, chain: &[ArtifactMeta]) -> Result<Vec<ArtifactFile>, String> {
    chain
        .iter()
        .map(|m| {
            let p = d
                .files
                .get(&m.key)
                .ok_or_else(|| format!("the archive lost {:?} while it was read", m.key))?;
            dm::read_manifest(p).map_err(|e| e.to_string())
        })
        .collect()
}

/// Draw a progress bar on stderr while `work` runs, for copies of at least 64 MiB.
fn with_progress<T>(progress: &Progress, work: impl FnOnce() -> T) -> T {
    let done = Arc::new(AtomicBool::new(false));
    let (p, d) = (progress.clone(), done.clone());
    let bar = std::thread::spawn(move || {
        let mut drawn = false;
        while !d.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(250));
            let (n, total) = p.get();
            if total < 64 << 20 {
                continue;
            }
            let pct = (n as f64 / total as f64 * 100.0).min(100.0);
            let filled = (pct / 5.0) as usize;
            eprint!(
                "\r[{}{}] {pct:5.1}% {} / {}",
                "#".repeat(filled),
                " ".repeat(20 - filled.min(20)),
                mib(n),
                mib(total)
            );
            drawn = true;
        }
        if drawn {
            eprintln!();
        }
    });
    let out = work();
    done.store(true, Ordering::Relaxed);
    let _ = bar.join();
    out
}

/// What one restore built, for the operator.
struct Built {
    position: Lsn,
    time: Option<lifeboat_core::UtcMillis>,
    applied: usize,
    bytes: u64,
}

impl Built {
    /// ", the database as of <time>" when the last artifact applied told its time.
    fn as_of(&self) -> String {
        self.time
            .map(|t| format!(", the database as of {}", utc_ms(t)))
            .unwrap_or_default()
    }
}

/// Build the point `at` of `db` into `into` with the site's driver.
fn build(
    file: &SiteFile,
    d: &DbArchive,
    at: At,
    into: &Path,
    action: PgAction,
    port: Option<u16>,
) -> Result<Built, String> {
    let progress = Progress::default();
    match &file.driver {
        DriverConfig::Sqlite {
            drill_check_sql, ..
        } => {
            let points = ca::points(&d.entries);
            let Some(point) = ca::point_at(points.all(), at) else {
                return Err(no_point(d, at, points.all()));
            };
            let chain = chain_files(d, &points.chain(point))?;
            let r = with_progress(&progress, || {
                drivers::sqlite::restore_point(
                    &d.name,
                    &chain,
                    into,
                    drill_check_sql.as_deref(),
                    &progress,
                )
            })
            .map_err(|e| e.to_string())?;
            Ok(Built {
                position: r.position,
                time: Some(point.utc),
                applied: r.applied,
                bytes: r.bytes,
            })
        }
        DriverConfig::Postgres(cfg) => {
            let target = match at {
                At::Latest => pitr::Target::Latest,
                At::Utc(t) => pitr::Target::Time(t),
                At::Lsn(l) => pitr::Target::Lsn(l.0),
            };
            let action = match action {
                PgAction::Pause => pitr::Action::Pause,
                PgAction::Promote => pitr::Action::Promote,
            };
            let port = port.unwrap_or_else(|| {
                cfg.databases
                    .iter()
                    .find(|x| x.name == d.name)
                    .map_or(5432, |x| x.port)
                    .wrapping_add(2000)
            });
            // A time target's covering point may have been finished after commits that landed
            // in the next segment: when PostgreSQL says the WAL ended before the target, the
            // chain grows (1, 2, 4... points further on) until it reaches the target or holds
            // every archived segment.
            let newest = ca::points(&d.entries).all().last().map(|p| p.lsn);
            let mut later = 0usize;
            loop {
                let Some((point, chain)) = ca::covering(&d.entries, at, later) else {
                    return Err(no_point(d, at, ca::points(&d.entries).all()));
                };
                let newest = newest == Some(point.lsn);
                let chain = chain_files(d, &chain)?;
                let bytes = chain.iter().map(|a| a.manifest.size).sum();
                let r = with_progress(&progress, || {
                    pitr::restore_point(
                        cfg, &d.name, &chain, &target, action, into, port, &progress,
                    )
                });
                match r {
                    Ok(r) if r.check != "ok" => {
                        return Err(format!(
                            "database {} was restored to position {} into {}, but its check \
                             failed: {}; the copy is left there for inspection, do not put it \
                             in service",
                            d.name,
                            r.position.0,
                            into.display(),
                            r.check
                        ))
                    }
                    Ok(r) => {
                        return Ok(Built {
                            position: r.position,
                            time: r.replayed_to_utc,
                            applied: r.applied,
                            bytes,
                        })
                    }
                    Err(e)
                        if e.kind == ErrorKind::BeyondChain
                            && matches!(at, At::Utc(_))
                            && !newest =>
                    {
                        tracing::info!(db = %d.name, later, why = %e,
                            "the WAL ended before the target; trying with more segments");
                        later = later.saturating_mul(2).max(1);
                    }
                    Err(e) => return Err(e.to_string()),
                }
            }
        }
        DriverConfig::Exec { .. } => Err(format!(
            "restore --at builds SQLite and PostgreSQL points; with the exec driver the archived \
             artifacts of {} are in {} for your own restore tools",
            d.name,
            file.archive
                .as_ref()
                .map_or_else(PathBuf::new, |a| a.dir.join(&d.name))
                .display()
        )),
    }
}

fn no_point(d: &DbArchive, at: At, points: &[Point]) -> String {
    match (points.first(), points.last()) {
        (Some(a), Some(b)) => format!(
            "the archive of {} has no point at or before {}: it holds {} (position {}) to {} \
             (position {})",
            d.name,
            describe_at(at),
            a.utc,
            a.lsn.0,
            b.utc,
            b.lsn.0
        ),
        _ => format!(
            "the archive of {} has no restorable point yet ({} artifacts, no full backup \
             archived)",
            d.name,
            d.entries.len()
        ),
    }
}

/// `lifeboat restore --db D --at T --into P`.
pub fn restore(
    config: &Path,
    db: &str,
    at: &str,
    into: &Path,
    action: PgAction,
    port: Option<u16>,
) -> i32 {
    let at = match parse_at(at) {
        Ok(a) => a,
        Err(e) => return fail("restore", &e, exit::USAGE),
    };
    let (file, archive) = match open(config) {
        Ok(x) => x,
        Err(e) => return fail("restore", &e, exit::USAGE),
    };
    if let Err(e) = databases(&file, Some(db)) {
        return fail("restore", &e, exit::USAGE);
    }
    let d = read_db(&archive, db);
    match build(&file, &d, at, into, action, port) {
        Ok(b) => {
            println!(
                "restored database {db} to {} (position {}{}) from {} artifacts ({}) into {}; \
                 checked ok",
                describe_at(at),
                b.position.0,
                b.as_of(),
                b.applied,
                mib(b.bytes),
                into.display()
            );
            exit::OK
        }
        Err(e) => fail("restore", &e, exit::FAILED),
    }
}

/// `lifeboat drill --at T`: a restore of that point into scratch, checked, then removed.
pub fn drill_at(config: &Path, db: Option<&str>, at: &str, port: Option<u16>) -> i32 {
    let at = match parse_at(at) {
        Ok(a) => a,
        Err(e) => return fail("drill", &e, exit::USAGE),
    };
    let (file, archive) = match open(config) {
        Ok(x) => x,
        Err(e) => return fail("drill", &e, exit::USAGE),
    };
    let names = match databases(&file, db) {
        Ok(n) => n,
        Err(e) => return fail("drill", &e, exit::USAGE),
    };
    let mut code = exit::OK;
    for name in names {
        let d = read_db(&archive, name);
        let scratch = file
            .data_dir
            .join(format!("drill-at-{}-{name}", std::process::id()));
        let into = match &file.driver {
            DriverConfig::Postgres(_) => scratch.join("data"),
            _ => scratch.join(format!("{name}.sqlite")),
        };
        let res = std::fs::create_dir_all(&scratch)
            .map_err(|e| format!("creating {}: {e}", scratch.display()))
            .and_then(|_| build(&file, &d, at, &into, PgAction::Promote, port));
        let _ = std::fs::remove_dir_all(&scratch);
        let body = match res {
            Ok(b) => {
                let what = format!(
                    "drill of {name} at {}: ok (position {}{}, {} artifacts, {})",
                    describe_at(at),
                    b.position.0,
                    b.as_of(),
                    b.applied,
                    mib(b.bytes)
                );
                println!("{what}");
                ReportBody::Drill {
                    db: name.to_string(),
                    upto_lsn: b.position.0,
                    ok: true,
                    message: what,
                }
            }
            Err(e) => {
                eprintln!("lifeboat drill: {name}: FAILED: {e}");
                code = exit::FAILED;
                ReportBody::Drill {
                    db: name.to_string(),
                    upto_lsn: 0,
                    ok: false,
                    message: format!("drill of {name} at {}: FAILED: {e}", describe_at(at)),
                }
            }
        };
        // Shown with the agent's own reports in `/status` (and `lifeboat status`).
        if let Err(e) = crate::status::append_report(&file.data_dir, body) {
            eprintln!(
                "lifeboat drill: the result of {name} could not be recorded in {}: {e}",
                file.data_dir.join("reports.jsonl").display()
            );
        }
    }
    code
}

fn fail(cmd: &str, e: &str, code: i32) -> i32 {
    eprintln!("lifeboat {cmd}: {e}");
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_takes_latest_a_position_or_a_utc_time_and_names_what_it_refuses() {
        assert_eq!(parse_at("latest"), Ok(At::Latest));
        assert_eq!(parse_at("lsn:42"), Ok(At::Lsn(Lsn(42))));
        assert_eq!(parse_at("42"), Ok(At::Lsn(Lsn(42))));
        assert_eq!(
            parse_at("2026-11-23T00:00:00Z"),
            Ok(At::Utc(lifeboat_core::UtcMillis(1_795_392_000_000)))
        );
        let e = parse_at("2026-11-23 00:00").unwrap_err();
        assert!(
            e.contains("lsn:N") && e.contains("2026-11-22T03:05:00Z"),
            "{e}"
        );
    }
}
