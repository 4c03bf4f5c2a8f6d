//! Pods that did not answer the visits poller are asked less and less
//! often: the next round after a first failure, then skipping 1, 3, 7 and
//! so on up to `MOST_SKIPPED` rounds. A pod nobody can reach (a network
//! policy, a node apart) thus costs little, and at most `PARALLEL_ASKS`
//! slow pods do not hold up every app's count for their timeouts at each
//! round. A skipped pod keeps its last error in the status, so nothing
//! changes there. A pod that answers, or that goes away, is forgotten; a
//! pod asked again at a new address (a new pod) starts over.

use std::collections::{HashMap, HashSet};

use super::visits::Answer;

/// The most rounds skipped in a row (16 intervals between tries: 8 minutes
/// at the default 30 s).
const MOST_SKIPPED: u32 = 15;

/// A pod's failures in a row, and the rounds it is still skipped.
struct Silence {
    failures: u32,
    skip: u32,
    error: String,
}

/// The pods that did not answer, by name and address.
#[derive(Default)]
pub struct Unanswered {
    silent: HashMap<(String, String), Silence>,
    /// Pods looked at this round, so those gone are forgotten.
    seen: HashSet<(String, String)>,
}

impl Unanswered {
    /// The last error of the pod `name` at `address` while it is skipped
    /// this round; `None` when it is to be asked.
    pub fn skipped(&mut self, name: &str, address: &str) -> Option<String> {
        let key = (name.to_owned(), address.to_owned());
        let silence = self.silent.get_mut(&key);
        self.seen.insert(key);
        let silence = silence?;
        if silence.skip == 0 {
            return None;
        }
        silence.skip -= 1;
        Some(silence.error.clone())
    }

    /// Notes what the pod `name` at `address` answered when asked.
    pub fn note(&mut self, name: &str, address: &str, answer: &Answer) {
        let key = (name.to_owned(), address.to_owned());
        match answer {
            Ok(_) => {
                self.silent.remove(&key);
            }
            Err(error) => {
                let silence = self.silent.entry(key).or_insert(Silence {
                    failures: 0,
                    skip: 0,
                    error: String::new(),
                });
                silence.failures += 1;
                silence.skip = ((1u32 << (silence.failures - 1).min(4)) - 1).min(MOST_SKIPPED);
                silence.error = error.clone();
            }
        }
    }

    /// Ends a round: pods not looked at in it (gone, not ready, at a new
    /// address) are forgotten.
    pub fn end_round(&mut self) {
        let seen = std::mem::take(&mut self.seen);
        self.silent.retain(|key, _| seen.contains(key));
    }

    /// How many pods are remembered as silent.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.silent.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Which of `rounds` rounds ask a pod that never answers.
    fn asked_rounds(rounds: u32) -> Vec<u32> {
        let mut unanswered = Unanswered::default();
        let mut asked = Vec::new();
        for round in 0..rounds {
            if unanswered.skipped("web-0", "10.0.0.7").is_none() {
                asked.push(round);
                unanswered.note("web-0", "10.0.0.7", &Err("refused".into()));
            }
            unanswered.end_round();
        }
        asked
    }

    #[test]
    fn a_silent_pod_is_asked_after_twice_as_many_rounds_each_time_up_to_sixteen() {
        assert_eq!(asked_rounds(80), vec![0, 1, 3, 7, 15, 31, 47, 63, 79]);
    }

    #[test]
    fn a_skipped_pod_keeps_its_last_error() {
        let mut unanswered = Unanswered::default();
        assert_eq!(unanswered.skipped("web-0", "10.0.0.7"), None);
        unanswered.note("web-0", "10.0.0.7", &Err("refused".into()));
        unanswered.end_round();
        assert_eq!(
            unanswered.skipped("web-0", "10.0.0.7"),
            None,
            "asked again the next round"
        );
        unanswered.note("web-0", "10.0.0.7", &Err("timed out".into()));
        unanswered.end_round();
        assert_eq!(unanswered.skipped("web-0", "10.0.0.7").as_deref(), Some("timed out"));
    }

    #[test]
    fn an_answer_or_a_new_address_starts_over_and_a_gone_pod_is_forgotten() {
        let mut unanswered = Unanswered::default();
        for _ in 0..3 {
            unanswered.skipped("web-0", "10.0.0.7");
            unanswered.note("web-0", "10.0.0.7", &Err("refused".into()));
            unanswered.skipped("web-1", "10.0.0.8");
            unanswered.note("web-1", "10.0.0.8", &Err("refused".into()));
            unanswered.end_round();
        }
        unanswered.note("web-0", "10.0.0.7", &Ok(3));
        assert_eq!(unanswered.skipped("web-0", "10.0.0.7"), None);
        assert_eq!(
            unanswered.skipped("web-1", "10.0.0.9"),
            None,
            "a new address is a new pod"
        );
        unanswered.end_round();
        assert_eq!(unanswered.len(), 0, "web-1 at its old address was not seen this round");
    }
}
