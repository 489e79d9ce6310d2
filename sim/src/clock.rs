//! A node's monotonic clock on the real (simulated) time scale: an offset, a rate error within
//! the drift bound, and forward steps. `local` never goes backwards, across restarts too (the
//! node's clock keeps running while its process is down: "the last journaled now plus the
//! downtime").

use lifeboat_core::Millis;

#[derive(Clone, Debug)]
pub struct Clock {
    /// Real time and local time at the last rate change or step.
    anchor_real: Millis,
    anchor_local: Millis,
    /// Rate error in parts per million (positive runs fast).
    rate_ppm: i64,
}

impl Clock {
    pub fn new(offset: Millis) -> Self {
        Clock {
            anchor_real: 0,
            anchor_local: offset,
            rate_ppm: 0,
        }
    }

    pub fn rate_ppm(&self) -> i64 {
        self.rate_ppm
    }

    /// Local time at real time `real` (`real` must not be before the last change).
    pub fn local(&self, real: Millis) -> Millis {
        let dt = real.saturating_sub(self.anchor_real);
        if self.rate_ppm == 0 {
            return self.anchor_local + dt;
        }
        // |dt × rate| stays far below i64::MAX for any simulated span (years at 50%).
        let skew = dt as i64 * self.rate_ppm / 1_000_000;
        (self.anchor_local as i64 + dt as i64 + skew).max(self.anchor_local as i64) as Millis
    }

    /// The earliest real time at or after `now` when local time reaches `deadline`.
    pub fn real_at(&self, now: Millis, deadline: Millis) -> Millis {
        let here = self.local(now);
        if deadline <= here {
            return now;
        }
        if deadline - here > 1 << 50 {
            // Centuries away: never, for a simulation.
            return Millis::MAX;
        }
        let ahead = (deadline - here) as i64;
        if self.rate_ppm == 0 {
            return now + ahead as Millis;
        }
        let mut t = now + ((ahead * 1_000_000) / (1_000_000 + self.rate_ppm)).max(0) as Millis;
        while t > now && self.local(t - 1) >= deadline {
            t -= 1;
        }
        while self.local(t) < deadline {
            t += 1;
        }
        t
    }

    /// Change the rate from real time `now` on; local time stays continuous.
    pub fn set_rate(&mut self, now: Millis, ppm: i64) {
        self.anchor_local = self.local(now);
        self.anchor_real = now;
        self.rate_ppm = ppm;
    }

    /// Jump forward by `ms` at real time `now`.
    pub fn step(&mut self, now: Millis, ms: Millis) {
        self.anchor_local = self.local(now) + ms;
        self.anchor_real = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drifting_clock_is_monotonic_and_inverts_exactly() {
        for ppm in [-50_000, -1, 0, 7, 50_000] {
            let mut c = Clock::new(1_000);
            c.set_rate(10, ppm);
            let mut last = 0;
            for real in (10..100_000).step_by(997) {
                let l = c.local(real);
                assert!(l >= last);
                last = l;
                let d = l + 1_234;
                let t = c.real_at(real, d);
                assert!(c.local(t) >= d && (t == real || c.local(t - 1) < d));
            }
            c.step(100_000, 500);
            assert!(c.local(100_000) >= last + 500);
        }
    }
}
