//! The CPU a process used over a window, from its threads' own counts.
//!
//! `/proc/PID/stat` gives a process's CPU time in clock ticks (10 ms here),
//! too coarse for a window at rest that costs a few milliseconds: two builds
//! that differ by half could both print 0.02 s. Each thread's
//! `/proc/PID/task/TID/schedstat` gives the nanoseconds it ran and the times
//! it was put on a CPU, so a window is told to the microsecond, and so are
//! the wake-ups that cost it. A thread that ends inside the window takes its
//! count with it; the window says how many did, and then also gives the
//! ticks of `/proc/PID/stat`, which keep an ended thread's time.

use std::{collections::BTreeMap, time::Duration};

/// Each thread's run time and times run, at one moment.
pub struct Threads {
    ran: BTreeMap<u32, (Duration, u64)>,
    ticks: f64,
}

/// What a process's threads did between two moments.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ran {
    pub cpu: Duration,
    /// The times its threads were put on a CPU (each a wake-up, or a
    /// preemption while running).
    pub runs: u64,
    /// Threads that ended inside the window: their time is not in `cpu`.
    pub ended: usize,
    /// The CPU seconds of `/proc/PID/stat` over the window (in ticks).
    pub ticks: f64,
}

impl Threads {
    /// The threads of `pid` now; none when it is gone.
    pub fn of(pid: u32) -> Self {
        let mut ran = BTreeMap::new();
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .flatten();
        for task in tasks {
            let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
                continue;
            };
            if let Some(counts) = std::fs::read_to_string(task.path().join("schedstat"))
                .ok()
                .and_then(|s| schedstat(&s))
            {
                ran.insert(tid, counts);
            }
        }
        Self {
            ran,
            ticks: cpu_seconds(pid),
        }
    }

    /// What the threads did since `before`.
    pub fn since(&self, before: &Threads) -> Ran {
        let mut ran = Ran {
            ticks: self.ticks - before.ticks,
            ..Ran::default()
        };
        for (tid, (cpu, runs)) in &self.ran {
            let (cpu_before, runs_before) = before.ran.get(tid).copied().unwrap_or_default();
            ran.cpu += cpu.saturating_sub(cpu_before);
            ran.runs += runs.saturating_sub(runs_before);
        }
        ran.ended = before.ran.keys().filter(|tid| !self.ran.contains_key(tid)).count();
        ran
    }
}

impl Ran {
    /// CPU seconds to the millisecond, with the ticks' figure beside them
    /// when a thread ended in the window.
    pub fn seconds(&self) -> String {
        match self.ended {
            0 => format!("{:.3}", self.cpu.as_secs_f64()),
            n => format!(
                "{:.3} ({n} threads ended in the window; by /proc/PID/stat: {:.2})",
                self.cpu.as_secs_f64(),
                self.ticks
            ),
        }
    }
}

/// A thread's nanoseconds on a CPU and times run, from its `schedstat`
/// (the first and third of its three numbers).
fn schedstat(text: &str) -> Option<(Duration, u64)> {
    let mut fields = text.split_whitespace().map(|f| f.parse::<u64>().ok());
    let ran = fields.next()??;
    let _waited = fields.next()??;
    let runs = fields.next()??;
    Some((Duration::from_nanos(ran), runs))
}

/// User and system CPU seconds of `pid` so far, from `/proc/PID/stat`.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    // utime and stime: fields 14 and 15 of stat(5), 12 and 13 after the name.
    (ticks(11) + ticks(12)) as f64 / per_second
}
