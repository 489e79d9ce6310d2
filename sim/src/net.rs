//! Links between every pair of nodes (both sites and the arbiter), one per direction, and the
//! network faults active on them. Probabilities of overlapping faults combine.

use lifeboat_core::Millis;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

pub const NODES: usize = 3;
pub const ARBITER: usize = 2;

#[derive(Clone, Debug, Default)]
pub struct Net {
    /// Active cuts per direction (from, to); overlapping partitions count.
    cut: [[u16; NODES]; NODES],
    pub base_latency: Millis,
    /// Active faults: (fault index, value...).
    pub latency: Vec<(usize, Millis, Millis)>,
    pub loss: Vec<(usize, f64)>,
    pub duplication: Vec<(usize, f64)>,
    pub reorder: Vec<(usize, f64, Millis)>,
    pub corrupt: Vec<(usize, f64)>,
    pub truncate: Vec<(usize, f64)>,
    /// When the last message on each directed link is delivered (in-order delivery).
    pub last_at: [[Millis; NODES]; NODES],
}

fn combine(ps: impl Iterator<Item = f64>) -> f64 {
    1.0 - ps.fold(1.0, |acc, p| acc * (1.0 - p))
}

impl Net {
    pub fn new(base_latency: Millis) -> Self {
        Net {
            base_latency,
            ..Default::default()
        }
    }
    pub fn up(&self, from: usize, to: usize) -> bool {
        self.cut[from][to] == 0
    }
    pub fn cut(&mut self, from: usize, to: usize) {
        self.cut[from][to] += 1;
    }
    pub fn heal(&mut self, from: usize, to: usize) {
        self.cut[from][to] = self.cut[from][to].saturating_sub(1);
    }
    pub fn any_cut(&self) -> bool {
        self.cut.iter().flatten().any(|c| *c > 0)
    }
    pub fn p_loss(&self) -> f64 {
        combine(self.loss.iter().map(|x| x.1))
    }
    pub fn p_dup(&self) -> f64 {
        combine(self.duplication.iter().map(|x| x.1))
    }
    pub fn p_corrupt(&self) -> f64 {
        combine(self.corrupt.iter().map(|x| x.1))
    }
    pub fn p_truncate(&self) -> f64 {
        combine(self.truncate.iter().map(|x| x.1))
    }
    /// Whether any probabilistic network fault is active (the quiet path skips the RNG).
    pub fn faulty(&self) -> bool {
        !(self.latency.is_empty()
            && self.loss.is_empty()
            && self.duplication.is_empty()
            && self.reorder.is_empty())
    }

    /// One-way delay of a message sent now.
    pub fn delay(&self, rng: &mut ChaCha8Rng) -> Millis {
        let base = self.base_latency.max(1);
        let mut d = base + rng.gen_range(0..=base / 2);
        for &(_, lat, jitter) in &self.latency {
            d += lat;
            if jitter > 0 {
                d += rng.gen_range(0..=jitter);
            }
        }
        for &(_, p, hold) in &self.reorder {
            if hold > 0 && rng.gen_bool(p) {
                d += rng.gen_range(1..=hold);
            }
        }
        d
    }

    pub fn remove_fault(&mut self, idx: usize) {
        self.latency.retain(|x| x.0 != idx);
        self.loss.retain(|x| x.0 != idx);
        self.duplication.retain(|x| x.0 != idx);
        self.reorder.retain(|x| x.0 != idx);
        self.corrupt.retain(|x| x.0 != idx);
        self.truncate.retain(|x| x.0 != idx);
    }
}
