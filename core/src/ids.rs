//! Small value types shared by every engine: time, identities, positions.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Monotonic time in milliseconds on the caller's scale. The core never reads a clock: every
/// `handle` call brings `now`, and `poll_timeout` answers on the same scale.
pub type Millis = u64;

/// One minute in [`Millis`].
pub const MINUTE: Millis = 60_000;

/// Wall-clock UTC in milliseconds since the Unix epoch. It appears only as data inside inputs
/// (an artifact's creation time, a probe result's timestamp), never as the engine's notion of now.
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct UtcMillis(pub i64);

/// A database, as a dense index into the configured database list. Names live at the edges.
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct DbId(pub u32);

/// A site (primary or recovery location), as a dense index into the configured site list.
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct SiteId(pub u16);

/// A term of leadership. Only the arbiter starts a new epoch; everything a primary produces is
/// stamped with its epoch, and every engine refuses anything older than the highest it has seen.
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Epoch(pub u64);

/// An opaque, monotonically increasing log position of one database.
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Lsn(pub u64);

/// The identity of one command. Executors may run a command twice; the core re-issues
/// outstanding operations after a timeout or a restart with the same id.
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct OpId(pub u64);

/// The checksum of an artifact's bytes (xxh3-64, computed by the adapter).
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Checksum(pub u64);

impl fmt::Display for DbId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "db#{}", self.0)
    }
}
impl fmt::Display for SiteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "site#{}", self.0)
    }
}
impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}
impl fmt::Display for OpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "op{}", self.0)
    }
}
