//! `lifeboat wal-push %p --config <wal.toml>` (PostgreSQL's `archive_command`) and
//! `lifeboat wal-fetch %f %p --config <wal.toml>` (its `restore_command`). Both run as
//! PostgreSQL's user, in the data directory, and talk to the agent only through the spool.
//!
//! **wal-push** exits 0 only once the file is durable in the spool (written to a temporary name,
//! fsynced, renamed, directory fsynced): PostgreSQL may then recycle the segment. A segment
//! becomes a segment artifact (its timeline's `.history` inside) in `push/`, where the agent's
//! `take_backup(Log)` stamps it with the epoch and publishes it into the outbox. `.history`
//! files go to `history/` (they travel inside the segments of their timeline); `.partial` and
//! `.backup` files go to `aside/` (kept, never shipped: a `.partial` is the old timeline's tail
//! that the promoted site already replayed, a `.backup` file is informational).
//!
//! **wal-fetch** serves only what the agent made servable in `serve/`, after checking the whole
//! artifact against its manifest and the payload against the artifact's header; a damaged copy
//! is refused (exit 1, logged), never handed to PostgreSQL. A segment that is not there yet is
//! exit 1 ("not yet"), after waiting up to `fetch_wait_ms` when it is the one right after the
//! last served (the agent is about to serve it). Exit codes stay below 126: PostgreSQL treats a
//! higher one as fatal.

use super::config::WalConfig;
use super::segment::{self, HistoryFile, SegmentHeader, SEGMENT_FORMAT_VERSION};
use super::spool;
use super::wal::{
    scan_segment, segment_range, valid_segment_size, PgLsn, ScanError, SegmentScan, WalFile,
    Walker, MIN_SEGMENT,
};
use crate::drivers::manifest;
use crate::transport::direct::{ArtifactWriter, ALIGN};
use std::fmt;
use std::fs;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// File suffix of a segment artifact in `push/` and `serve/`.
pub const SEGMENT_SUFFIX: &str = ".lbwal";

/// Why wal-push or wal-fetch did not succeed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WalError {
    /// wal-fetch: the file is not servable (yet). PostgreSQL will ask again.
    NotThere(String),
    /// wal-fetch: the servable copy is damaged; it was not handed to PostgreSQL.
    Refused(String),
    /// Anything else (unreadable file, full disk, unknown file name, bad configuration).
    Failed(String),
}

impl fmt::Display for WalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalError::NotThere(m) => write!(f, "not available yet: {m}"),
            WalError::Refused(m) => write!(f, "refused: {m}"),
            WalError::Failed(m) => f.write_str(m),
        }
    }
}

fn io_err(what: impl fmt::Display) -> impl FnOnce(std::io::Error) -> WalError {
    move |e| WalError::Failed(format!("{what}: {e}"))
}

/// What wal-push did with a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pushed {
    /// A segment, now a segment artifact in `push/`.
    Segment(PathBuf),
    /// The same segment was already pushed (PostgreSQL repeats a push after a crash).
    AlreadyPushed(PathBuf),
    /// A `.history` file, kept in `history/`.
    History(PathBuf),
    /// A `.partial` or `.backup` file, kept in `aside/`.
    Aside(PathBuf),
}

/// Build the segment artifact for segment file `name` with `bytes`. `final_segment` cuts the
/// range at the end of valid WAL (a fenced primary's last, incomplete segment).
pub fn segment_artifact(
    name: &str,
    bytes: &[u8],
    segment_size: u64,
    history_dir: &Path,
    final_segment: bool,
) -> Result<(SegmentHeader, Vec<u8>), WalError> {
    let (header, mut out) = segment_prefix(name, bytes, segment_size, history_dir, final_segment)?;
    out.reserve_exact(bytes.len());
    out.extend_from_slice(bytes);
    Ok((header, out))
}

/// What goes before `bytes` in the segment artifact of `name` (see
/// [`segment::encode_prefix`]): the segment is scanned (every record header followed) and
/// hashed in memory, once each, and the artifact is this prefix followed by `bytes` as read.
pub fn segment_prefix(
    name: &str,
    bytes: &[u8],
    segment_size: u64,
    history_dir: &Path,
    final_segment: bool,
) -> Result<(SegmentHeader, Vec<u8>), WalError> {
    let seg = Seg::parse(name, segment_size)?;
    let scan = scan_segment(bytes, seg.segno, segment_size).map_err(|e| cannot_archive(name, e))?;
    let header = seg.header(&scan, seg.history(history_dir), final_segment)?;
    let (header, prefix) = segment::encode_prefix(header, bytes);
    header
        .check()
        .map_err(|e| WalError::Failed(e.to_string()))?;
    Ok((header, prefix))
}

/// Segment `name` of `size`-byte segments: `segno` on `timeline`.
struct Seg<'a> {
    name: &'a str,
    timeline: u32,
    segno: u64,
    size: u64,
}

impl<'a> Seg<'a> {
    fn parse(name: &'a str, size: u64) -> Result<Seg<'a>, WalError> {
        match WalFile::parse(name, size) {
            Some(WalFile::Segment { timeline, segno }) => Ok(Seg {
                name,
                timeline,
                segno,
                size,
            }),
            _ => Err(WalError::Failed(format!(
                "{name} is not a WAL segment name for {size}-byte segments"
            ))),
        }
    }

    /// The header of this segment's artifact from its walk (payload size and checksum not yet
    /// filled in), with its timeline's history when there is one.
    fn header(
        &self,
        scan: &SegmentScan,
        history: Vec<HistoryFile>,
        final_segment: bool,
    ) -> Result<SegmentHeader, WalError> {
        let (start, end) = segment_range(self.segno, self.size);
        let lsn_end = if final_segment { scan.valid_end } else { end };
        if lsn_end <= start {
            return Err(WalError::Failed(format!(
                "WAL segment {} holds no complete record yet",
                self.name
            )));
        }
        let replay_target = scan.last_record_end.map(|t| t.min(lsn_end));
        Ok(SegmentHeader {
            format_version: SEGMENT_FORMAT_VERSION,
            wal_file: self.name.to_string(),
            timeline: self.timeline,
            segno: self.segno,
            segment_size: self.size,
            lsn_start: start,
            lsn_end,
            replay_target,
            replay_floor: scan.last_record_start.filter(|_| replay_target.is_some()),
            final_segment,
            payload_size: 0,
            payload_xxh3: String::new(),
            history,
        })
    }

    /// The `.history` file of this segment's timeline, from `history_dir` (none on timeline 1).
    fn history(&self, history_dir: &Path) -> Vec<HistoryFile> {
        if self.timeline <= 1 {
            return Vec::new();
        }
        let hname = WalFile::History {
            timeline: self.timeline,
        }
        .name(self.size);
        match fs::read_to_string(history_dir.join(&hname)) {
            Ok(text) => vec![HistoryFile { name: hname, text }],
            Err(_) => Vec::new(),
        }
    }
}

fn cannot_archive(name: &str, e: ScanError) -> WalError {
    WalError::Failed(format!("WAL segment {name} cannot be archived: {e}"))
}

/// Bytes read, walked, hashed and written at a time by [`push_segment`]: small enough that
/// the walk and the hash find them in the cache the read left them in.
const PUSH_CHUNK: usize = 1 << 20;

/// Archive complete segment `name` from `src` (`segment_size` bytes) as the artifact `dest`,
/// in one pass: each chunk is read once, walked, hashed and written while it is in the cache,
/// the payload at a fixed offset (whole blocks, bypassing the page cache where the file system
/// allows) and the header before it once the walk is over; then one fsync of the file, the
/// rename and one fsync of the directory.
fn push_segment(
    name: &str,
    src: &Path,
    segment_size: u64,
    history_dir: &Path,
    dest: &Path,
) -> Result<(), WalError> {
    let id = Seg::parse(name, segment_size)?;
    let size = usize::try_from(segment_size)
        .map_err(|_| WalError::Failed(format!("{segment_size}-byte segments do not fit here")))?;
    let mut walker = Walker::new(id.segno, segment_size).map_err(|e| cannot_archive(name, e))?;
    // Room for the widest header this segment can get (its history is known before the walk).
    let history = id.history(history_dir);
    let empty = SegmentScan {
        last_record_end: None,
        last_record_start: None,
        valid_end: segment_range(id.segno, segment_size).1,
        switched: false,
        records: 0,
    };
    let room = segment::prefix_room(&id.header(&empty, history.clone(), false)?, ALIGN);
    let reading = format!("reading {}", src.display());
    let mut input = fs::File::open(src).map_err(io_err(&reading))?;
    let tmp = spool::temp_beside(dest);
    let written = (|| {
        let file = fs::File::create(&tmp).map_err(io_err(format!("creating {}", tmp.display())))?;
        let writing = format!("writing {}", tmp.display());
        let mut out = ArtifactWriter::new(
            file.try_clone().map_err(io_err(&writing))?,
            &tmp,
            room as u64,
            segment_size,
        );
        // The segment in memory at a block-aligned address, so whole chunks go to the device
        // from where they were read.
        let mut buf = vec![0u8; size + ALIGN];
        let at = buf.as_ptr().align_offset(ALIGN).min(ALIGN);
        let seg = &mut buf[at..at + size];
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        let mut read = 0;
        while read < size {
            let n = PUSH_CHUNK.min(size - read);
            let chunk = &mut seg[read..read + n];
            input.read_exact(chunk).map_err(|e| {
                WalError::Failed(format!(
                    "{reading}: {e} after {read} bytes (a segment is {segment_size}); was it \
                     truncated while it was archived?"
                ))
            })?;
            hasher.update(chunk);
            out.write(chunk).map_err(io_err(&writing))?;
            read += n;
            walker
                .advance(seg, read, &mut |_| {})
                .map_err(|e| cannot_archive(name, e))?;
        }
        let mut extra = [0u8; 1];
        if input.read(&mut extra).map_err(io_err(&reading))? != 0 {
            return Err(WalError::Failed(format!(
                "{} grew beyond {segment_size} bytes while it was archived",
                src.display()
            )));
        }
        let scan = walker
            .advance(seg, size, &mut |_| {})
            .map_err(|e| cannot_archive(name, e))?
            .expect("the whole segment ends the walk");
        let header = id.header(&scan, history, false)?;
        let (header, prefix) =
            segment::encode_prefix_in(header, segment_size, hasher.digest(), room).ok_or_else(
                || {
                    WalError::Failed(format!(
                        "the header of {name} does not fit its {room} bytes"
                    ))
                },
            )?;
        header
            .check()
            .map_err(|e| WalError::Failed(e.to_string()))?;
        file.write_all_at(&prefix, 0).map_err(io_err(&writing))?;
        out.finish().map_err(io_err(&writing))?;
        fs::rename(&tmp, dest).map_err(io_err(format!("renaming {}", tmp.display())))?;
        spool::sync_dir(dest.parent().unwrap_or(Path::new("."))).map_err(io_err(format!(
            "syncing the directory of {}",
            dest.display()
        )))
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// `archive_command`: make `segment_path` (`%p`) durable in the spool. Returns only when it is.
pub fn wal_push(segment_path: &Path, cfg: &WalConfig) -> Result<Pushed, WalError> {
    let name = segment_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| WalError::Failed(format!("{} names no file", segment_path.display())))?;
    let size = fs::metadata(segment_path)
        .map_err(io_err(format!("reading {}", segment_path.display())))?
        .len();
    let segment_size = if cfg.segment_size > 0 {
        cfg.segment_size
    } else if valid_segment_size(size) {
        size
    } else {
        MIN_SEGMENT
    };
    let keep = |dir: PathBuf| -> Result<PathBuf, WalError> {
        let bytes = fs::read(segment_path)
            .map_err(io_err(format!("reading {}", segment_path.display())))?;
        let dest = dir.join(&name);
        spool::write_durably(&dest, &bytes)
            .map_err(io_err(format!("writing {}", dest.display())))?;
        Ok(dest)
    };
    match WalFile::parse(&name, segment_size) {
        Some(WalFile::Segment { .. }) => {
            if size != segment_size {
                return Err(WalError::Failed(format!(
                    "{} is {size} bytes, this cluster's segments are {segment_size}",
                    segment_path.display()
                )));
            }
            let dest = cfg.push_dir().join(format!("{name}{SEGMENT_SUFFIX}"));
            if let Ok(old) = fs::read(&dest) {
                let bytes = fs::read(segment_path)
                    .map_err(io_err(format!("reading {}", segment_path.display())))?;
                // PostgreSQL pushes a segment again when it crashed before recording the
                // first push: the same bytes are fine, different bytes are never overwritten.
                let same = segment::decode(&old)
                    .map(|(_, p)| p == &bytes[..])
                    .unwrap_or(false);
                if same {
                    return Ok(Pushed::AlreadyPushed(dest));
                }
                return Err(WalError::Failed(format!(
                    "{} already holds a different {name}: two clusters share this spool, or \
                     the cluster was re-created; move the old file away",
                    dest.display()
                )));
            }
            push_segment(&name, segment_path, segment_size, &cfg.history_dir(), &dest)?;
            Ok(Pushed::Segment(dest))
        }
        Some(WalFile::History { .. }) => keep(cfg.history_dir()).map(Pushed::History),
        Some(WalFile::Partial { .. } | WalFile::BackupLabel { .. }) => {
            keep(cfg.aside_dir()).map(Pushed::Aside)
        }
        None => Err(WalError::Failed(format!(
            "{name} is not a file PostgreSQL archives (segment, .history, .partial, .backup)"
        ))),
    }
}

/// What wal-fetch handed to PostgreSQL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fetched {
    Segment { lsn_start: u64, lsn_end: u64 },
    History,
}

/// The highest segment number currently servable.
fn last_served_segno(serve: &Path, segment_size: u64) -> Option<u64> {
    spool::list(serve)
        .ok()?
        .into_iter()
        .filter_map(|(n, _)| {
            let wal = n.strip_suffix(SEGMENT_SUFFIX)?;
            match WalFile::parse(wal, segment_size)? {
                WalFile::Segment { segno, .. } => Some(segno),
                _ => None,
            }
        })
        .max()
}

/// `restore_command`: hand PostgreSQL the servable, verified copy of `name` (`%f`) at `dest`
/// (`%p`). Every call is recorded in `serve/requests.log`.
pub fn wal_fetch(name: &str, dest: &Path, cfg: &WalConfig) -> Result<Fetched, WalError> {
    let result = fetch(name, dest, cfg);
    let outcome = match &result {
        Ok(_) => "served".to_string(),
        Err(WalError::NotThere(_)) => "missing".to_string(),
        Err(WalError::Refused(why)) => format!("refused {}", why.replace('\n', " ")),
        Err(WalError::Failed(why)) => format!("failed {}", why.replace('\n', " ")),
    };
    let _ = spool::append_line(
        &cfg.request_log(),
        &format!("{} {name} {outcome}", spool::unix_ms()),
    );
    result
}

/// A marker in `serve/` while a promotion hands streamed WAL to `pg_wal`: `wal-fetch` then
/// never waits for a segment (a dot file: never served or listed).
pub const HANDING_OVER: &str = ".handing-over";

fn fetch(name: &str, dest: &Path, cfg: &WalConfig) -> Result<Fetched, WalError> {
    let serve = cfg.serve_dir();
    let segment_size = if cfg.segment_size > 0 {
        cfg.segment_size
    } else {
        MIN_SEGMENT
    };
    match WalFile::parse(name, segment_size) {
        Some(WalFile::History { .. }) => {
            let src = serve.join(name);
            match fs::read(&src) {
                Ok(bytes) => {
                    fs::write(dest, bytes)
                        .map_err(io_err(format!("writing {}", dest.display())))?;
                    Ok(Fetched::History)
                }
                Err(_) => Err(WalError::NotThere(name.to_string())),
            }
        }
        Some(WalFile::Segment { segno, .. }) => {
            let src = serve.join(format!("{name}{SEGMENT_SUFFIX}"));
            if !src.exists() {
                let next = last_served_segno(&serve, segment_size).map(|s| s + 1);
                if next != Some(segno) || cfg.fetch_wait_ms == 0 {
                    return Err(WalError::NotThere(name.to_string()));
                }
                let until = Instant::now() + Duration::from_millis(cfg.fetch_wait_ms);
                let handing_over = serve.join(HANDING_OVER);
                while !src.exists() {
                    // A promotion handed streamed WAL to pg_wal: PostgreSQL reads it as soon as
                    // this says "not there".
                    if Instant::now() >= until || handing_over.exists() {
                        return Err(WalError::NotThere(name.to_string()));
                    }
                    // The segment is due any moment (the agent serves in order): a short nap
                    // costs one stat per millisecond and saves a replay step its latency.
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            serve_segment(name, &src, dest)
        }
        _ => Err(WalError::NotThere(name.to_string())),
    }
}

fn serve_segment(name: &str, src: &Path, dest: &Path) -> Result<Fetched, WalError> {
    // One read: the whole artifact against its manifest, then the payload against the header.
    let artifact = manifest::read_manifest(src).map_err(|e| {
        let e = crate::drivers::DriverError::from(e);
        match e.kind {
            crate::drivers::ErrorKind::NotFound => WalError::NotThere(name.to_string()),
            _ => WalError::Refused(format!("{name}: {e}")),
        }
    })?;
    let bytes = match fs::read(&artifact.path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(WalError::NotThere(name.to_string()))
        }
        Err(e) => return Err(io_err(format!("reading {}", src.display()))(e)),
    };
    manifest::check_read(&artifact, &bytes)
        .map_err(|e| WalError::Refused(format!("{name}: {e}")))?;
    let (header, payload) =
        segment::decode(&bytes).map_err(|e| WalError::Refused(format!("{name}: {e}")))?;
    if header.wal_file != name
        || header.lsn_start != artifact.manifest.lsn_start.0
        || header.lsn_end != artifact.manifest.lsn_end.0
    {
        return Err(WalError::Refused(format!(
            "{name}: the artifact holds {} {}..{}, its manifest says {}..{}",
            header.wal_file,
            PgLsn(header.lsn_start),
            PgLsn(header.lsn_end),
            PgLsn(artifact.manifest.lsn_start.0),
            PgLsn(artifact.manifest.lsn_end.0)
        )));
    }
    fs::write(dest, payload).map_err(io_err(format!("writing {}", dest.display())))?;
    Ok(Fetched::Segment {
        lsn_start: header.lsn_start,
        lsn_end: header.lsn_end,
    })
}

const USAGE: &str = "usage: lifeboat wal-push <%p> --config <wal.toml>\n       \
                     lifeboat wal-fetch <%f> <%p> --config <wal.toml>";

/// Run `wal-push …` or `wal-fetch …` from command-line words (without the program name) and
/// return the exit code: 0 done, 1 not done (PostgreSQL retries), 2 bad usage. For binaries
/// that stand in for `lifeboat` (tests, benchmarks); the `lifeboat` binary wires the same
/// functions as clap subcommands.
pub fn run(args: &[String]) -> i32 {
    let mut words = Vec::new();
    let mut config = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--config" || a == "-c" {
            config = it.next().cloned();
        } else if let Some(v) = a.strip_prefix("--config=") {
            config = Some(v.to_string());
        } else {
            words.push(a.clone());
        }
    }
    let Some(config) = config else {
        eprintln!("{USAGE}");
        return 2;
    };
    let cfg = match WalConfig::load(Path::new(&config)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("lifeboat: {e}");
            return 2;
        }
    };
    match words.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["wal-push", path] => match wal_push(Path::new(path), &cfg) {
            Ok(_) => 0,
            Err(e) => {
                eprintln!("lifeboat wal-push {path}: {e}");
                1
            }
        },
        ["wal-fetch", name, dest] => match wal_fetch(name, Path::new(dest), &cfg) {
            Ok(_) => 0,
            Err(WalError::NotThere(_)) => 1,
            Err(e) => {
                eprintln!("lifeboat wal-fetch {name}: {e}");
                1
            }
        },
        _ => {
            eprintln!("{USAGE}");
            2
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::postgres::wal::tests::build;

    const MIB: u64 = 1 << 20;

    /// Push `bytes` as segment `name` and check the artifact against the in-memory encoder's.
    fn push_and_compare(name: &str, bytes: &[u8], size: u64, history: Option<&str>) {
        let t = tempfile::tempdir().unwrap();
        let hist = t.path().join("history");
        std::fs::create_dir_all(&hist).unwrap();
        if let Some(text) = history {
            std::fs::write(hist.join("00000002.history"), text).unwrap();
        }
        let src = t.path().join(name);
        std::fs::write(&src, bytes).unwrap();
        let dest = t.path().join(format!("{name}{SEGMENT_SUFFIX}"));
        push_segment(name, &src, size, &hist, &dest).unwrap();
        let artifact = std::fs::read(&dest).unwrap();
        let (header, payload) = segment::decode(&artifact).unwrap();
        assert!(
            payload == bytes,
            "the payload is the segment, byte for byte"
        );
        let (want, _) = segment_prefix(name, bytes, size, &hist, false).unwrap();
        assert_eq!(header, want, "the same header as the in-memory encoder's");
        assert_eq!(header.history.len(), usize::from(history.is_some()));
        assert_eq!(
            (artifact.len() - payload.len()) % ALIGN,
            0,
            "the payload starts on a block boundary"
        );
        assert_eq!(
            std::fs::read_dir(t.path()).unwrap().count(),
            3,
            "no temporary left"
        );
    }

    #[test]
    fn a_pushed_segment_is_the_artifact_the_in_memory_encoder_makes() {
        // 1 MiB: through the page cache.
        let mut recs = vec![(8000u32, 10u8, 0u8); 100];
        recs.push((24, 0, 0x40)); // a switch record
        let one = build(3, &recs, None);
        push_and_compare("000000010000000000000003", &one, MIB, None);
        // 16 MiB (segment 2 of them starts where segment 32 of 1 MiB does): whole blocks go
        // around the page cache where the file system allows, with a history in the header.
        let mut big = build(32, &[(20_000, 10, 0), (300, 10, 0)], Some(40));
        big.resize((16 * MIB) as usize, 0);
        push_and_compare(
            "000000020000000000000002",
            &big,
            16 * MIB,
            Some("1\t0/1FFFFA0\tno recovery target specified\n"),
        );
    }

    #[test]
    fn a_short_or_foreign_segment_is_refused_and_leaves_nothing_behind() {
        let t = tempfile::tempdir().unwrap();
        let name = "000000010000000000000003";
        let dest = t.path().join("out").join(format!("{name}{SEGMENT_SUFFIX}"));
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        let src = t.path().join(name);
        let seg = build(3, &[(100, 10, 0)], None);
        // Cut short while archived.
        std::fs::write(&src, &seg[..(MIB / 2) as usize]).unwrap();
        let e = push_segment(name, &src, MIB, t.path(), &dest).unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
        // Another segment's bytes (its page addresses say so).
        std::fs::write(&src, build(4, &[(100, 10, 0)], None)).unwrap();
        let e = push_segment(name, &src, MIB, t.path(), &dest).unwrap_err();
        assert!(e.to_string().contains("cannot be archived"), "{e}");
        // Longer than a segment.
        let mut long = seg.clone();
        long.push(0);
        std::fs::write(&src, &long).unwrap();
        let e = push_segment(name, &src, MIB, t.path(), &dest).unwrap_err();
        assert!(e.to_string().contains("grew beyond"), "{e}");
        assert_eq!(
            std::fs::read_dir(dest.parent().unwrap()).unwrap().count(),
            0,
            "neither an artifact nor a temporary file"
        );
    }
}
