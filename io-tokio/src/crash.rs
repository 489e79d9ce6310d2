//! Named crash points: fault injection for the end-to-end tests, in the spirit of
//! FoundationDB's `BUGGIFY`. With `LIFEBOAT_CRASH_AT=<point>:<n>` in its environment, the
//! process aborts (no destructors, no flush: as `kill -9` would) the `n`-th time it passes
//! `<point>` (counting from 1). Unset, each point costs one relaxed atomic load.
//!
//! Every point is a place where a crash leaves the agent's files between two steps. Each is
//! safe by construction, for the reason given beside it; `io-tokio/tests/crash_points.rs`
//! crashes a real agent at every point under a write load and checks the claim (the recovery
//! copy equals the primary's rows, no `missing_log`, no reseed, and it catches up).
//!
//! | point | between | why it is safe |
//! |---|---|---|
//! | `publish_before_journal` | the driver published a backup into the outbox (fsynced, renamed) and the engine journalled its discovery | at start the agent announces every outbox artifact of the held epoch that the engine does not hold (`agent::unannounced_outbox`) |
//! | `journal_before_effects` | an input is journalled (fsynced) and the commands it caused are executed | the replay reproduces the state; the engine re-issues outstanding operations after its restart (idempotent by operation id), and messages are re-sent by their timers |
//! | `receive_before_fsync` | every byte of a received artifact is written to its partial file, not yet fsynced | nothing is renamed or acknowledged; the sender ships again and the partial file is resumed from what is there (its prefix is checked by the whole artifact's checksum) or rewritten |
//! | `receive_before_rename` | a received artifact is fsynced under its partial name and renamed into the inbox | the sender has no acknowledgement and ships again; the partial file is resumed or rewritten |
//! | `receive_before_report` | a received artifact is renamed into the inbox and the engine is told | the sender has no acknowledgement (the engine acknowledges only what it journalled) and ships again; receiving the same artifact again replaces the file |
//! | `restore_before_report` | the driver applied an artifact and the engine is told | the engine re-issues the restore after its restart; restores are idempotent (an artifact already applied is skipped by the driver) |
//! | `promote_before_report` | the databases were promoted and the engine is told | the engine re-issues the promotion; promoting a promoted database is a no-op |
//! | `mid_reseed` | the new full backup is installed in place of the database and the driver's chain state is reset | the engine re-issues the reseed after its restart; installing the same full again is idempotent, and the chain state is reset then |
//! | `snapshot_before_journal` | a new snapshot is renamed into place and the fresh journal that continues it | the old journal ends where the snapshot continues: its records are all in the snapshot, so the store starts a fresh journal (`journal_store`) |
//! | `capture_mid_shadow` | a WAL-mode primary's captured page images are in its shadow copy (not yet fsynced) and `chain.state` records the new position | the shadow's page 1 is stamped with the new position before any other image (and synced first when the file was synced before), so the shadow says another position than `chain.state`; images of earlier captures not yet synced sit in the page cache, which the agent's crash leaves (after a crash of the machine, `chain.state` names where the file was last synced and the first capture writes every frame since again); the next capture reads the same frames from the saved cursor again (the driver's pin kept SQLite from restarting the WAL past them) and writes the same images, or, if they are gone, carries every page (`drivers/sqlite/capture.rs`) |

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// Every named point, in the order of the table above.
pub const POINTS: &[&str] = &[
    "publish_before_journal",
    "journal_before_effects",
    "receive_before_fsync",
    "receive_before_rename",
    "receive_before_report",
    "restore_before_report",
    "promote_before_report",
    "mid_reseed",
    "snapshot_before_journal",
    "capture_mid_shadow",
];

/// The environment variable that arms one point.
pub const ENV: &str = "LIFEBOAT_CRASH_AT";

struct Armed {
    point: String,
    at: u64,
    passed: AtomicU64,
}

fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let v = std::env::var(ENV).ok()?;
            let (point, n) = v.rsplit_once(':').unwrap_or((v.as_str(), "1"));
            if !POINTS.contains(&point) {
                eprintln!("lifeboat: {ENV}={v:?} names no crash point; known: {POINTS:?}");
                return None;
            }
            Some(Armed {
                point: point.to_string(),
                at: n.parse().unwrap_or(1).max(1),
                passed: AtomicU64::new(0),
            })
        })
        .as_ref()
}

/// Pass the crash point `name`: abort here if it is armed and this is its `n`-th pass.
pub fn point(name: &'static str) {
    debug_assert!(POINTS.contains(&name), "unlisted crash point {name}");
    let Some(a) = armed() else {
        return;
    };
    if a.point == name && a.passed.fetch_add(1, Ordering::Relaxed) + 1 == a.at {
        eprintln!(
            "lifeboat: crash point {name} reached (pass {}): aborting",
            a.at
        );
        std::process::abort();
    }
}
