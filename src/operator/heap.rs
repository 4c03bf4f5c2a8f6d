//! Giving the allocator's free memory back to the kernel.
//!
//! glibc's malloc keeps what is freed inside its heaps resident, in every
//! arena, until the top of a heap is free: with watch events replacing
//! cached objects one by one, that is rarely. `malloc_trim(0)` hands the
//! free pages of every arena back (`madvise`), so once in a while the
//! operator asks. At 1,000 apps without nodes (`cargo bench --bench
//! operator -- --apps 1000 --no-nodes`) the operator's peak RSS was 69.5
//! MiB without it (65.8 with two arenas, 65.4 with a fixed mmap threshold
//! too) and 57.6 MiB with it.
//!
//! A trim is not free: it walks every free chunk and advises the kernel of
//! each large one again, whether or not it was handed back before. So it
//! runs only after the operator worked (`worth_trimming`): at rest, with
//! nothing freed, there is nothing to give back.

use std::time::Duration;

/// How often the free pages are handed back (the 57.6 MiB above was
/// measured at this period).
const TRIM_EVERY: Duration = Duration::from_secs(5);

/// The CPU time the operator must have spent since the last trim for the
/// next one to be worth its own: a reconcile burst, a relist, a poll round
/// over many pods. At rest with nothing to poll, none comes.
const WORKED: Duration = Duration::from_millis(20);

/// Trims every `TRIM_EVERY` after work, for ever.
pub async fn trim_periodically() {
    let mut interval = tokio::time::interval(TRIM_EVERY);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut after_last = Duration::ZERO;
    loop {
        interval.tick().await;
        let Some(now) = cpu_time() else {
            trim();
            continue;
        };
        if worth_trimming(now.saturating_sub(after_last)) {
            trim();
            after_last = cpu_time().unwrap_or(now);
        }
    }
}

/// Whether `worked`, the CPU time spent since the last trim ended, is
/// enough for a trim to find something to give back.
fn worth_trimming(worked: Duration) -> bool {
    worked >= WORKED
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim only walks the allocator's own state, under its
    // locks; it is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Other allocators (musl's, macOS's) return memory their own way.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

/// The CPU time (user and system) this process has used.
#[cfg(unix)]
fn cpu_time() -> Option<Duration> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: getrusage writes a whole `rusage` into the pointer it is
    // given, which points to one, and reports failure by its return.
    let usage = unsafe {
        if libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) != 0 {
            return None;
        }
        usage.assume_init()
    };
    let seconds = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1_000);
    Some(seconds(usage.ru_utime) + seconds(usage.ru_stime))
}

#[cfg(not(unix))]
fn cpu_time() -> Option<Duration> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trim_waits_for_work() {
        assert!(!worth_trimming(Duration::ZERO), "nothing done since the last trim");
        assert!(!worth_trimming(Duration::from_millis(3)), "a quiet poll round");
        assert!(worth_trimming(WORKED), "a burst of reconciles");
    }

    #[test]
    fn the_cpu_time_is_read_and_grows_with_work() {
        let before = cpu_time().expect("getrusage answers on this system");
        let started = std::time::Instant::now();
        let mut spin = 0u64;
        while cpu_time().unwrap() < before + Duration::from_millis(10) && started.elapsed() < Duration::from_secs(5) {
            spin = std::hint::black_box(spin.wrapping_mul(31).wrapping_add(1));
        }
        let worked = cpu_time().unwrap() - before;
        assert!(
            worked >= Duration::from_millis(10),
            "5 s of spinning counted {worked:?} of CPU"
        );
    }
}
