//! The CPU a process used over a window, and the times its threads ran.
//!
//! `/proc/PID/stat` gives a process's CPU time in clock ticks (10 ms here),
//! too coarse for a window at rest that costs a few milliseconds: two builds
//! that differ by half could both print 0.02 s. The process's CPU clock
//! (`clock_getcpuclockid`) gives it to the nanosecond, every thread's
//! included, those that ended too. Each thread's
//! `/proc/PID/task/TID/schedstat` gives the times it was put on a CPU: the
//! wake-ups the CPU went to. A thread that ended inside the window takes
//! its count of those with it, and the window says how many did.

use std::{collections::BTreeMap, time::Duration};

/// A process's CPU time and each thread's times run, at one moment.
pub struct Threads {
    cpu: Duration,
    runs: BTreeMap<u32, u64>,
}

/// What a process did between two moments.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ran {
    pub cpu: Duration,
    /// The times its threads were put on a CPU (each a wake-up, or a
    /// preemption while running).
    pub runs: u64,
    /// Threads that ended inside the window: their runs are not in `runs`
    /// (their CPU is in `cpu`).
    pub ended: usize,
}

impl Threads {
    /// The process `pid` now; nothing when it is gone.
    pub fn of(pid: u32) -> Self {
        let mut runs = BTreeMap::new();
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .flatten();
        for task in tasks {
            let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
                continue;
            };
            if let Some(ran) = std::fs::read_to_string(task.path().join("schedstat"))
                .ok()
                .and_then(|s| times_run(&s))
            {
                runs.insert(tid, ran);
            }
        }
        Self {
            cpu: process_cpu(pid).unwrap_or_default(),
            runs,
        }
    }

    /// What the process did since `before`.
    pub fn since(&self, before: &Threads) -> Ran {
        let runs = self
            .runs
            .iter()
            .map(|(tid, runs)| runs.saturating_sub(before.runs.get(tid).copied().unwrap_or(0)))
            .sum();
        Ran {
            cpu: self.cpu.saturating_sub(before.cpu),
            runs,
            ended: before.runs.keys().filter(|tid| !self.runs.contains_key(tid)).count(),
        }
    }
}

impl Ran {
    /// CPU seconds to the millisecond.
    pub fn seconds(&self) -> String {
        format!("{:.3}", self.cpu.as_secs_f64())
    }

    /// The times run, saying when threads ended in the window.
    pub fn runs(&self) -> String {
        match self.ended {
            0 => self.runs.to_string(),
            n => format!(
                "{} ({n} threads ended in the window, their runs not counted)",
                self.runs
            ),
        }
    }
}

/// The times a thread was put on a CPU, the third of its `schedstat`'s
/// three numbers.
fn times_run(schedstat: &str) -> Option<u64> {
    schedstat.split_whitespace().nth(2)?.parse().ok()
}

/// The CPU time (user and system) of every thread of `pid` so far, those
/// that ended included.
fn process_cpu(pid: u32) -> Option<Duration> {
    let mut clock: libc::clockid_t = 0;
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: each call writes only into the value it is given a pointer
    // to, and reports failure by its return.
    let read = unsafe {
        libc::clock_getcpuclockid(libc::pid_t::try_from(pid).ok()?, &mut clock) == 0
            && libc::clock_gettime(clock, &mut now) == 0
    };
    read.then(|| Duration::new(now.tv_sec as u64, now.tv_nsec as u32))
}
