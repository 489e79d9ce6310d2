//! The database model of a site: committed transactions as a position (LSN) on a lineage.
//!
//! A lineage is one history of one database. Writes extend the writer's own lineage; a site
//! that writes on a history it did not write itself (a promoted secondary, a returning old
//! primary) forks a new lineage at its position. Two databases hold the same content at
//! position `n` exactly when their lineages resolve to the same ancestor at `n`, so divergence
//! shows without storing transactions, and the content hash of a state is cheap.

/// A lineage's index in the database's [`Lineages`].
pub type LinId = u32;

/// The states (position, lineage) of every database of a site.
pub type States = Vec<(u64, LinId)>;

/// The owner of a lineage that nobody can extend (content made by applying an artifact on a
/// history it does not belong to).
pub const GARBAGE_OWNER: u8 = u8::MAX;

#[derive(Clone, Debug, Default)]
pub struct Lineages {
    parent: Vec<Option<LinId>>,
    /// Positions at or below this are the parent's content.
    fork: Vec<u64>,
    owner: Vec<u8>,
    /// The highest position written on this lineage.
    tip: Vec<u64>,
}

impl Lineages {
    /// A table with the root lineage, owned by `owner`, empty.
    pub fn new(owner: u8) -> Self {
        let mut l = Lineages::default();
        l.push(None, 0, owner, 0);
        l
    }

    fn push(&mut self, parent: Option<LinId>, fork: u64, owner: u8, tip: u64) -> LinId {
        self.parent.push(parent);
        self.fork.push(fork);
        self.owner.push(owner);
        self.tip.push(tip);
        (self.parent.len() - 1) as LinId
    }

    pub fn len(&self) -> usize {
        self.parent.len()
    }
    pub fn is_empty(&self) -> bool {
        self.parent.is_empty()
    }

    /// The lineage whose own content is at position `n` of lineage `l`.
    pub fn canonical(&self, mut l: LinId, n: u64) -> LinId {
        while let Some(p) = self.parent[l as usize] {
            if n <= self.fork[l as usize] {
                l = p;
            } else {
                break;
            }
        }
        l
    }

    /// Whether two states hold the same content up to position `n`.
    pub fn agree(&self, a: LinId, b: LinId, n: u64) -> bool {
        n == 0 || self.canonical(a, n) == self.canonical(b, n)
    }

    /// The longest common prefix of two states, in positions.
    pub fn common(&self, a: (u64, LinId), b: (u64, LinId)) -> u64 {
        let hi = a.0.min(b.0);
        if self.agree(a.1, b.1, hi) {
            return hi;
        }
        let (mut lo, mut hi) = (0, hi); // agree(lo), !agree(hi)
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.agree(a.1, b.1, mid) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// `site` commits `n` transactions on a database at `state`; returns the new state.
    pub fn write(&mut self, site: u8, state: (u64, LinId), n: u64) -> (u64, LinId) {
        let (pos, lin) = state;
        let i = lin as usize;
        if self.owner[i] == site && self.tip[i] == pos {
            self.tip[i] = pos + n;
            return (pos + n, lin);
        }
        let l = self.push(Some(lin), pos, site, pos + n);
        (pos + n, l)
    }

    /// Content that belongs to no history (an artifact applied where it does not fit).
    pub fn garbage(&mut self, pos: u64) -> (u64, LinId) {
        let l = self.push(None, 0, GARBAGE_OWNER, pos);
        (pos, l)
    }

    /// A content hash of a state (for the trace hash and reports).
    pub fn content_hash(&self, state: (u64, LinId)) -> u64 {
        crate::mix(&[u64::from(self.canonical(state.1, state.0)), state.0])
    }
}

/// One database at one site.
#[derive(Clone, Debug)]
pub struct DbModel {
    pub pos: u64,
    pub lin: LinId,
    /// Where the next transaction log starts (the end of the last log produced here).
    pub logged_upto: u64,
    /// The full backup incrementals are based on: the last full taken or restored here.
    pub base_full: Option<u64>,
    /// Fractional transactions carried between client commits.
    pub carry: f64,
}

impl DbModel {
    pub fn new() -> Self {
        DbModel {
            pos: 0,
            lin: 0,
            logged_upto: 0,
            base_full: Some(0),
            carry: 0.0,
        }
    }
    pub fn state(&self) -> (u64, LinId) {
        (self.pos, self.lin)
    }
}

impl Default for DbModel {
    fn default() -> Self {
        DbModel::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forks_diverge_after_their_fork_point_only() {
        let mut l = Lineages::new(0);
        let a = l.write(0, (0, 0), 100); // A writes 100 on the root
        let b = (60, a.1); // B restored A's first 60
        let b = l.write(1, b, 40); // B promoted, writes 40 more: forks at 60
        assert_ne!(a.1, b.1);
        assert!(l.agree(a.1, b.1, 60));
        assert!(!l.agree(a.1, b.1, 61));
        assert_eq!(l.common(a, b), 60);
        let a2 = l.write(0, a, 5); // A extends its own lineage
        assert_eq!(a2.1, a.1);
        let g = l.garbage(70);
        assert_eq!(l.common(g, a2), 0);
    }
}
