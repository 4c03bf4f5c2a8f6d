//! The open-file limit. The visits poller holds one connection open per pod
//! it follows (`controller::observe::follow`): 2,000 at 1,000 apps of two
//! pods, past a soft limit of 1,024. As Go programs do at start, the poller
//! raises the soft limit to the hard one when it starts, and follows at most
//! half as many pods as the limit allows, so the API server's watches and
//! the pods it asks always have descriptors left.

/// Raises the soft limit on open files to the hard limit; the soft limit
/// now, or `None` when it cannot be read.
pub fn raise() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    Some(limit.rlim_cur)
}

/// The most pods to follow under a soft limit of `soft` open files
/// (`None`: unknown, the common default of 1,024).
pub fn most_followed(soft: Option<u64>) -> usize {
    usize::try_from(soft.unwrap_or(1024) / 2).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_the_descriptors_go_to_followed_pods() {
        assert_eq!(most_followed(Some(20_000)), 10_000);
        assert_eq!(most_followed(None), 512);
        assert_eq!(
            most_followed(Some(u64::MAX)),
            usize::try_from(u64::MAX / 2).unwrap_or(usize::MAX)
        );
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let soft = raise().expect("the limit can be read");
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the struct we own.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) }, 0);
        assert_eq!((soft, limit.rlim_cur), (limit.rlim_max, limit.rlim_max));
    }
}
