//! The watches' backoff after an error: doubling from half a second to four,
//! with jitter.
//!
//! kube's default (client-go's) doubles from 0.8 s to 30 s and starts again
//! only after an event arrives. Two faults in a row (an API server upgrade
//! just after a network blip) leave a watch waiting 10–30 s after the
//! server is back, while reconciles act on a cache that long behind. Four
//! seconds bounds that lag; a retry per watch every four seconds (the
//! operator has six) costs a struggling API server nothing.

use std::time::Duration;

use kube::runtime::utils::Backoff;

const FIRST: Duration = Duration::from_millis(500);
const LONGEST: Duration = Duration::from_secs(4);

/// Yields each wait: the current step, between half of it and all of it.
#[derive(Debug)]
pub struct WatchBackoff {
    step: Duration,
    /// xorshift state for the jitter; any non-zero seed does.
    seed: u64,
}

impl Default for WatchBackoff {
    fn default() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.subsec_nanos());
        Self::seeded(u64::from(nanos) | 1)
    }
}

impl WatchBackoff {
    fn seeded(seed: u64) -> Self {
        Self {
            step: FIRST,
            seed: seed.max(1),
        }
    }

    /// A fraction in [0, 1).
    fn jitter(&mut self) -> f64 {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        (self.seed >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let step = self.step;
        self.step = (step * 2).min(LONGEST);
        Some(step.mul_f64(0.5 + self.jitter() / 2.0))
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.step = FIRST;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_waits_double_from_half_a_second_up_to_four_seconds() {
        let waits: Vec<Duration> = WatchBackoff::seeded(7).take(8).collect();
        let steps = [500, 1000, 2000, 4000, 4000, 4000, 4000, 4000].map(Duration::from_millis);
        for (wait, step) in waits.iter().zip(steps) {
            assert!(*wait >= step / 2 && *wait <= step, "{wait:?} for a step of {step:?}");
        }
    }

    #[test]
    fn the_waits_are_jittered() {
        let waits: Vec<Duration> = WatchBackoff::seeded(7).skip(3).take(5).collect();
        assert!(waits.windows(2).any(|w| w[0] != w[1]), "{waits:?}");
    }

    #[test]
    fn an_event_starts_the_waits_again_from_the_first() {
        let mut backoff = WatchBackoff::seeded(7);
        backoff.by_ref().take(6).for_each(drop);
        backoff.reset();
        assert!(backoff.next().unwrap() <= FIRST);
    }
}
