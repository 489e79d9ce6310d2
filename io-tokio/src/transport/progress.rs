//! Byte progress of the artifact transfers under way, for `/status` and the CLI's progress bars.
//!
//! A sender or receiver registers a transfer and moves its counter after every chunk; the guard
//! removes it when the transfer ends, however it ends. Reading is a snapshot in start order.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Which way the bytes go, from this site's point of view.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Send,
    Receive,
}

/// One transfer as `/status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    pub direction: Direction,
    /// The artifact's file name.
    pub file: String,
    /// Bytes of the whole artifact.
    pub size: u64,
    /// Bytes this site holds (receive) or the peer was sent (send), counting a resumed prefix.
    pub done: u64,
    /// Where a resumed transfer started.
    pub resumed_from: u64,
}

#[derive(Default)]
struct Table {
    next: u64,
    live: BTreeMap<u64, Transfer>,
}

/// The transfers under way. Cloning shares the table.
#[derive(Clone, Default)]
pub struct Transfers(Arc<Mutex<Table>>);

impl std::fmt::Debug for Transfers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.snapshot()).finish()
    }
}

impl Transfers {
    fn table(&self) -> MutexGuard<'_, Table> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Register a transfer that already holds `done` bytes; it stays listed until the guard drops.
    pub fn start(&self, direction: Direction, file: String, size: u64, done: u64) -> Progress {
        let mut t = self.table();
        let id = t.next;
        t.next += 1;
        t.live.insert(
            id,
            Transfer {
                direction,
                file,
                size,
                done,
                resumed_from: done,
            },
        );
        Progress {
            table: self.clone(),
            id,
        }
    }

    /// The transfers under way, oldest first.
    pub fn snapshot(&self) -> Vec<Transfer> {
        self.table().live.values().cloned().collect()
    }
}

/// One registered transfer; dropping it unregisters it.
pub struct Progress {
    table: Transfers,
    id: u64,
}

impl Progress {
    /// The transfer now holds `done` bytes.
    pub fn set(&self, done: u64) {
        if let Some(t) = self.table.table().live.get_mut(&self.id) {
            t.done = done;
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.table.table().live.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transfer_is_listed_with_its_bytes_until_its_guard_drops() {
        let t = Transfers::default();
        let a = t.start(Direction::Send, "a".into(), 100, 0);
        let b = t.start(Direction::Receive, "b".into(), 50, 20);
        a.set(40);
        let snap = t.snapshot();
        assert_eq!(snap.len(), 2);
        assert_eq!((snap[0].file.as_str(), snap[0].done), ("a", 40));
        assert_eq!((snap[1].done, snap[1].resumed_from), (20, 20));
        drop(a);
        assert_eq!(t.snapshot().len(), 1);
        drop(b);
        assert!(t.snapshot().is_empty());
    }
}
