//! The point-in-time archive with real agents and real SQLite (issue 15): the recovery site
//! archives every verified artifact; after a bad `DELETE` reached it, `lifeboat restore --at`
//! builds the database as it was at a noted time into a new file, with exactly the rows
//! committed up to the last archived log at or before that time and none after.

mod common;
use common::*;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

fn insert(db: &Path, ids: std::ops::RangeInclusive<u64>) {
    let c = rusqlite::Connection::open(db).unwrap();
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    for id in ids {
        let _turn = sqlite_turn();
        c.execute(
            "INSERT INTO t(id, v) VALUES (?1, 'row ' || ?1)",
            [id as i64],
        )
        .unwrap();
        drop(_turn);
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn ids(db: &Path) -> Vec<u64> {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    let mut st = c.prepare("SELECT id, v FROM t ORDER BY id").unwrap();
    let rows: Vec<(i64, String)> = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for (id, v) in &rows {
        assert_eq!(v, &format!("row {id}"), "row {id} has the wrong contents");
    }
    rows.into_iter().map(|(id, _)| id as u64).collect()
}

fn listing(config: &str) -> Value {
    let (code, out, err) = lifeboat_cli(&["archive", "list", "-c", config, "--json"]);
    assert_eq!(code, 0, "archive list failed: {err}");
    serde_json::from_str(&out).unwrap()
}

/// The newest archived point's UTC time, as ISO text.
fn last_point(config: &str) -> Option<String> {
    let doc = listing(config);
    doc["databases"][0]["ranges"]
        .as_array()?
        .iter()
        .filter_map(|r| r["last_utc"].as_str().map(str::to_string))
        .max()
}

#[test]
fn a_restore_to_a_noted_time_brings_back_exactly_the_rows_committed_before_it() {
    let mut c = Cluster::start(Opts {
        recovery_extra: "\n[archive]\ndir = \"archive\"\nkeep = \"1h\"\nverify_every = \"4s\"\n"
            .into(),
        ..Opts::default()
    });
    let rec = c.path("recovery").to_str().unwrap().to_string();
    let out_dir = tempfile::tempdir().unwrap();
    wait_for("a first restore", Duration::from_secs(30), || {
        c.restored().is_some()
    });

    // Batch A, then a noted time well after its last commit (logs are taken every second).
    insert(&c.pri_db, 1..=50);
    std::thread::sleep(Duration::from_millis(2_500));
    let noted = utc_now_ms();
    std::thread::sleep(Duration::from_millis(1_500));
    // Batch B, then the bad write that removes everything.
    insert(&c.pri_db, 51..=100);
    std::thread::sleep(Duration::from_millis(2_500));
    let before_delete = utc_now_ms();
    std::thread::sleep(Duration::from_millis(500));
    {
        let _turn = sqlite_turn();
        let conn = rusqlite::Connection::open(&c.pri_db).unwrap();
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        conn.execute("DELETE FROM t", []).unwrap();
    }
    let after_delete = utc_now_ms();
    // The delete reached the recovery site and its archive.
    wait_for("the delete in the archive", Duration::from_secs(30), || {
        last_point(&rec).is_some_and(|t| t > after_delete)
    });
    wait_for("the delete at the standby", Duration::from_secs(30), || {
        try_rows(&c.rec_db).is_some_and(|r| r.0 == 0)
    });

    // /status shows the archive as the engine knows it.
    let st = status(c.rec_http).expect("the recovery site's status");
    let a = &st["archive"][0];
    assert_eq!(a["db"], "app", "{st}");
    assert!(
        a["artifacts"].as_u64() >= Some(3) && a["bytes"].as_u64() > Some(0),
        "{a}"
    );
    assert!(status(c.pri_http).unwrap()["archive"]
        .as_array()
        .is_some_and(Vec::is_empty));

    // The listing names a range that reaches past the delete, with its artifacts and bytes.
    let doc = listing(&rec);
    let ranges = doc["databases"][0]["ranges"].as_array().unwrap().clone();
    assert!(!ranges.is_empty(), "{doc}");
    assert!(ranges
        .iter()
        .all(|r| r["bytes"].as_u64() > Some(0) && r["artifacts"].as_u64() >= Some(1)));
    let (code, text, _) = lifeboat_cli(&["archive", "list", "-c", &rec]);
    assert_eq!(code, 0);
    assert!(
        text.contains("database app:") && text.contains("points"),
        "{text}"
    );
    // --artifacts names every artifact behind each range, as many as the range counts.
    let (code, out, _) = lifeboat_cli(&["archive", "list", "-c", &rec, "--json", "--artifacts"]);
    assert_eq!(code, 0);
    let doc: Value = serde_json::from_str(&out).unwrap();
    for r in doc["databases"][0]["ranges"].as_array().unwrap() {
        let list = r["artifact_list"].as_array().unwrap();
        assert_eq!(Some(list.len() as u64), r["artifacts"].as_u64(), "{r}");
        assert_eq!(list[0]["kind"], "full", "{r}");
        let bytes: u64 = list.iter().map(|a| a["bytes"].as_u64().unwrap()).sum();
        assert_eq!(Some(bytes), r["bytes"].as_u64());
        assert!(list
            .iter()
            .all(|a| a["file"].as_str().is_some_and(|f| f.starts_with("app_"))));
    }

    // To the noted time: batch A, none of batch B.
    let at_noted = out_dir.path().join("noted.db");
    let (code, out, err) = lifeboat_cli(&[
        "restore",
        "-c",
        &rec,
        "--db",
        "app",
        "--at",
        &noted,
        "--into",
        at_noted.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "restore failed: {err}");
    assert!(
        out.contains("restored database app") && out.contains("checked ok"),
        "{out}"
    );
    assert_eq!(ids(&at_noted), (1..=50).collect::<Vec<_>>());

    // Just before the delete: both batches.
    let at_before = out_dir.path().join("before.db");
    let (code, _, err) = lifeboat_cli(&[
        "restore",
        "-c",
        &rec,
        "--db",
        "app",
        "--at",
        &before_delete,
        "--into",
        at_before.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "restore failed: {err}");
    assert_eq!(ids(&at_before), (1..=100).collect::<Vec<_>>());

    // The newest point: the delete.
    let latest = out_dir.path().join("latest.db");
    let (code, _, err) = lifeboat_cli(&[
        "restore",
        "-c",
        &rec,
        "--db",
        "app",
        "--at",
        "latest",
        "--into",
        latest.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "restore failed: {err}");
    assert!(ids(&latest).is_empty());

    // Refusals name what is wrong and change nothing.
    let (code, _, err) = lifeboat_cli(&[
        "restore",
        "-c",
        &rec,
        "--db",
        "app",
        "--at",
        &noted,
        "--into",
        at_noted.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(ids(&at_noted), (1..=50).collect::<Vec<_>>());
    let early = out_dir.path().join("early.db");
    let (code, _, err) = lifeboat_cli(&[
        "restore",
        "-c",
        &rec,
        "--db",
        "app",
        "--at",
        "2001-01-01T00:00:00Z",
        "--into",
        early.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("no point at or before"), "{err}");
    assert!(!early.exists());
    let (code, _, err) = lifeboat_cli(&[
        "restore",
        "-c",
        &rec,
        "--db",
        "app",
        "--at",
        "yesterday",
        "--into",
        early.to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("2026-11-22T03:05:00Z"), "{err}");

    // A drill of the noted point, from the archive, without touching the standby.
    let (code, out, err) = lifeboat_cli(&["drill", "-c", &rec, "--at", &noted]);
    assert_eq!(code, 0, "drill --at failed: {err}");
    assert!(
        out.contains("drill of app at") && out.contains(": ok"),
        "{out}"
    );
    // …and the running agent shows it with its own reports.
    assert!(
        reports(c.rec_http, "drill").iter().any(|r| r["ok"] == true
            && r["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("drill of app at") && m.contains(": ok"))),
        "{:?}",
        reports(c.rec_http, "drill")
    );
    assert_eq!(
        try_rows(&c.rec_db).map(|r| r.0),
        Some(0),
        "the standby is untouched"
    );

    // The scheduled verification restored a kept point from the archive and reported it.
    wait_for(
        "a verification of the archive",
        Duration::from_secs(30),
        || {
            reports(c.rec_http, "drill").iter().any(|r| {
                r["ok"] == true
                    && r["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("archive point"))
            })
        },
    );
    assert!(!alert_kinds(c.rec_http).contains(&"archive_failed".to_string()));

    // The primary keeps no archive: asking it says so.
    let (code, _, err) =
        lifeboat_cli(&["archive", "list", "-c", c.path("primary").to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("no [archive] section"), "{err}");
    c.terminate("recovery", Duration::from_secs(10));
}

/// A standby that lags on purpose (`restore.apply_delay_ms`) is taken over at a point before a
/// bad write that it had received but not applied: `lifeboat failover --until` promotes it with
/// the rows committed before that time, and the report names what it left out.
#[test]
fn a_delayed_standby_taken_over_until_a_time_before_the_bad_write_keeps_the_rows() {
    let mut c = Cluster::start(Opts {
        failover: "automatic = false",
        restore: "apply_delay_ms = 6000",
        ..Opts::default()
    });
    let rec = c.path("recovery").to_str().unwrap().to_string();
    wait_for("a first restore", Duration::from_secs(40), || {
        c.restored().is_some()
    });
    insert(&c.pri_db, 1..=50);
    // Every row reaches the standby, a delay after it arrived.
    wait_for("batch A at the standby", Duration::from_secs(30), || {
        try_rows(&c.rec_db).is_some_and(|r| r.0 == 50)
    });
    let noted = utc_now_ms();
    std::thread::sleep(Duration::from_millis(1_500));
    {
        let _turn = sqlite_turn();
        let conn = rusqlite::Connection::open(&c.pri_db).unwrap();
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        conn.execute("DELETE FROM t", []).unwrap();
    }
    // The delete is received within a log period or two, but held back: the standby still
    // has A (it would apply the delete 6 s after it arrived).
    std::thread::sleep(Duration::from_millis(2_500));
    let st = status(c.rec_http).unwrap();
    let d = &st["databases"][0];
    assert!(
        d["known_produced_lsn"].as_u64() > d["restored_lsn"].as_u64(),
        "the delete was received and not applied: {d}"
    );
    assert_eq!(
        try_rows(&c.rec_db).map(|r| r.0),
        Some(50),
        "the delay holds the delete"
    );
    // The primary site is lost; the operator takes over before the delete.
    c.kill("primary");
    let (code, out, err) = lifeboat_cli(&[
        "failover", "-c", &rec, "--force", "--until", &noted, "--wait", "60",
    ]);
    assert_eq!(code, 0, "failover --until failed: {out}{err}");
    let report = reports(c.rec_http, "failover")
        .into_iter()
        .next()
        .expect("a failover report");
    let left = &report["left_out"][0];
    assert_eq!(left["db"], "app", "{report}");
    assert!(left["artifacts"].as_u64() >= Some(1), "{report}");
    assert!(
        report["rpo_lower"].as_u64() >= Some(1),
        "the delete is counted as lost: {report}"
    );
    // Writable, with exactly batch A.
    wait_for(
        "the recovery site writable",
        Duration::from_secs(20),
        || status(c.rec_http).is_some_and(|s| s["writable"] == true),
    );
    assert_eq!(ids(&c.rec_db), (1..=50).collect::<Vec<_>>());
    c.terminate("recovery", Duration::from_secs(10));
}
