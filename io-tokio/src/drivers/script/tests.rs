//! The exec driver's specification, as tests (they run `sh`).

use super::*;
use crate::drivers::verify_artifact;
use lifeboat_core::UtcMillis;
use std::path::Path;
use std::time::Instant;

const T0: i64 = 1_795_316_700_000;
const DB: DbId = DbId(0);

fn argv(parts: &[&str]) -> Option<CommandTemplate> {
    Some(CommandTemplate::Argv(
        parts.iter().map(|s| s.to_string()).collect(),
    ))
}

fn config() -> ExecConfig {
    ExecConfig {
        position: argv(&["sh", "-c", "echo 42"]),
        ..ExecConfig::default()
    }
}

fn driver(config: ExecConfig, target: &Path) -> ExecDriver {
    ExecDriver::new(
        config,
        vec![DatabaseSpec {
            name: "sales".into(),
            path: target.to_path_buf(),
        }],
    )
    .unwrap()
}

fn request(kind: ArtifactKind, outbox: &Path) -> BackupRequest {
    BackupRequest {
        db: DB,
        kind,
        epoch: Epoch(3),
        created_utc: UtcMillis(T0),
        outbox: outbox.to_path_buf(),
        progress: Default::default(),
    }
}

#[test]
fn exec_driver_passes_placeholders_as_single_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("my data dir");
    let outbox = dir.path().join("outbox");
    let args_file = dir.path().join("args.txt");
    let d = driver(
        ExecConfig {
            backup_log: argv(&[
                "sh",
                "-c",
                "printf 'log bytes' > \"$1\"; echo 5 9",
                "sh",
                "{path}",
            ]),
            restore: argv(&[
                "sh",
                "-c",
                "printf '%s\\n' \"$@\" > \"$LIFEBOAT_TARGET/../args.txt\"",
                "sh",
                "{db}",
                "{target}",
                "{kind}",
                "{lsn_start}..{lsn_end}",
                "{epoch}",
                "{base_full}",
            ]),
            ..config()
        },
        &target,
    );
    fs::create_dir_all(&target).unwrap();
    let log = d.take_backup(&request(ArtifactKind::Log, &outbox)).unwrap();
    let log = &log[0];
    assert_eq!(fs::read(&log.path).unwrap(), b"log bytes");
    assert_eq!(verify_artifact(&log.path).unwrap(), *log);
    assert_eq!(
        (log.manifest.lsn_start, log.manifest.lsn_end),
        (Lsn(5), Lsn(9))
    );
    assert_eq!(log.manifest.epoch, Epoch(3));
    assert!(log
        .path
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with("sales_2026_11_22_03_05_00_tlog_0"));

    assert_eq!(
        d.restore(log).unwrap(),
        Lsn(9),
        "no position printed: lsn_end"
    );
    let args = fs::read_to_string(&args_file).unwrap();
    assert_eq!(
        args.lines().collect::<Vec<_>>(),
        vec!["sales", target.to_str().unwrap(), "tlog", "5..9", "3", ""]
    );
}

#[test]
fn exec_driver_carries_exit_code_and_last_stderr_lines() {
    let dir = tempfile::tempdir().unwrap();
    let failing = argv(&[
        "sh",
        "-c",
        "echo one >&2; echo two >&2; echo 'disk full' >&2; exit 7",
    ]);
    let d = driver(
        ExecConfig {
            fence: failing.clone(),
            ..config()
        },
        dir.path(),
    );
    let e = d.fence(DB).unwrap_err();
    assert_eq!(
        (e.kind, e.code, e.permanent),
        (ErrorKind::CommandFailed, 7, false)
    );
    assert!(
        e.message.contains("status 7") && e.message.contains("`fence`"),
        "{e}"
    );
    assert!(e.message.ends_with("one; two; disk full"), "{e}");
    assert_eq!(e.to_failure().code, 7);

    let d = driver(
        ExecConfig {
            fence: failing,
            permanent_exit_codes: vec![7],
            ..config()
        },
        dir.path(),
    );
    assert!(d.fence(DB).unwrap_err().permanent);
    // An operation without a template says which key to add.
    let e = d.promote(DB, Epoch(2)).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unsupported);
    assert!(e.message.contains("promote = [...]"), "{e}");
}

#[test]
fn exec_backup_output_decides_the_range_and_none_means_no_artifact() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox");
    let d = driver(
        ExecConfig {
            backup_full: argv(&[
                "sh",
                "-c",
                "echo full > \"$1\"; echo progress; echo 12",
                "sh",
                "{path}",
            ]),
            backup_incremental: argv(&["sh", "-c", "echo i > \"$1\"; echo 12 20", "sh", "{path}"]),
            backup_log: argv(&["sh", "-c", "echo none"]),
            ..config()
        },
        dir.path(),
    );
    let full = d
        .take_backup(&request(ArtifactKind::Full, &outbox))
        .unwrap();
    assert_eq!(
        (full[0].manifest.lsn_start, full[0].manifest.lsn_end),
        (Lsn(12), Lsn(12))
    );
    let incr = d
        .take_backup(&request(ArtifactKind::Incremental, &outbox))
        .unwrap();
    assert_eq!(incr[0].manifest.base_full, Some(Lsn(12)));
    assert!(d
        .take_backup(&request(ArtifactKind::Log, &outbox))
        .unwrap()
        .is_empty());
    assert_eq!(d.discover(&outbox).unwrap().artifacts.len(), 2);

    let d = driver(
        ExecConfig {
            backup_log: argv(&["sh", "-c", "echo 'it went fine'"]),
            ..config()
        },
        dir.path(),
    );
    let e = d
        .take_backup(&request(ArtifactKind::Log, &outbox))
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::CommandFailed);
    assert!(e.message.contains("it went fine") && e.message.contains("<lsn_start> <lsn_end>"));
}

#[test]
fn exec_config_rejects_unknown_keys_placeholder_typos_and_a_missing_position() {
    let e = toml::from_str::<ExecConfig>("restor = \"x\"").unwrap_err();
    assert!(e.to_string().contains("restor"), "{e}");
    let parsed: ExecConfig = toml::from_str(
        "position = \"cat /data/lsn\"\nprobe = [\"pg_isready\", \"-d\", \"{target}\"]",
    )
    .unwrap();
    assert_eq!(parsed.timeout_secs, DEFAULT_TIMEOUT_SECS);
    assert!(ExecDriver::new(parsed, vec![]).is_ok());

    let dir = tempfile::tempdir().unwrap();
    let bad = ExecConfig {
        restore: Some(CommandTemplate::Line(
            "pg_restore {path} --upto {lsn_ned}".into(),
        )),
        ..config()
    };
    let e = ExecDriver::new(bad, vec![]).err().unwrap();
    assert_eq!(e.kind, ErrorKind::Config);
    assert!(
        e.message.contains("`restore`") && e.message.contains("{lsn_ned}"),
        "{e}"
    );
    let e = ExecDriver::new(
        ExecConfig {
            fence: Some(CommandTemplate::Line("fence {path}".into())),
            ..config()
        },
        vec![],
    )
    .err()
    .unwrap();
    assert!(e.message.contains("{path}"), "fence has no artifact: {e}");
    let e = ExecDriver::new(ExecConfig::default(), vec![])
        .err()
        .unwrap();
    assert!(e.message.contains("position"), "{e}");
    let _ = dir;
}

#[test]
fn exec_command_past_its_time_limit_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let d = driver(
        ExecConfig {
            probe: argv(&["sh", "-c", "sleep 30 & sleep 30"]),
            probe_timeout_secs: 1,
            ..config()
        },
        dir.path(),
    );
    let started = Instant::now();
    let e = d.probe(DB).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Timeout, "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn exec_promote_reports_the_position_and_drill_gets_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox");
    let d = driver(
        ExecConfig {
            promote: argv(&["true"]),
            backup_log: argv(&["sh", "-c", "echo x > \"$1\"; echo 1 2", "sh", "{path}"]),
            drill: argv(&[
                "sh",
                "-c",
                "for a in \"$@\"; do test -f \"$a\" || exit 3; done; test -d \"$LIFEBOAT_SCRATCH\" \
                 && echo $#",
                "sh",
                "{chain}",
            ]),
            ..config()
        },
        dir.path(),
    );
    assert_eq!(d.position(DB).unwrap(), Lsn(42));
    assert_eq!(
        d.promote(DB, Epoch(2)).unwrap(),
        Lsn(42),
        "falls back to `position`"
    );
    let mut chain = d.take_backup(&request(ArtifactKind::Log, &outbox)).unwrap();
    chain.extend(d.take_backup(&request(ArtifactKind::Log, &outbox)).unwrap());
    let outcome = d.drill(DB, &chain).unwrap();
    assert_eq!(
        outcome.position,
        Lsn(2),
        "the drill printed the number of artifacts"
    );
    assert_eq!(outcome.applied, 2);
}
