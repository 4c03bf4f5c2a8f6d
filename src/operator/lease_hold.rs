//! How long the leader may still act on the Lease it holds.
//!
//! kube-lease-manager reports a lost Lease only once it reads the Lease
//! naming another holder. While its requests fail (the API server out of
//! reach, the Lease's requests refused), it goes on reporting the lead past
//! the Lease's expiry, when another replica may already have taken it over:
//! two leaders, writing the same children. So the leader also watches the
//! Lease, and steps down by itself once the last renewal it saw is about to
//! run out, as client-go's leader election does with its renew deadline.

use std::time::{Duration, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::{
    Api,
    runtime::{WatchStreamExt, watcher},
};

/// Why the leader may no longer act.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lapse {
    /// No renewal was seen in time: the Lease may have run out.
    NotRenewed { since: Duration },
    /// The Lease names another holder, or none, or is gone.
    Taken { holder: Option<String> },
}

impl std::fmt::Display for Lapse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lapse::NotRenewed { since } => write!(
                f,
                "no renewal of the Lease was seen for {:.1} s, so it may have run out",
                since.as_secs_f64()
            ),
            Lapse::Taken { holder: Some(holder) } => write!(f, "the Lease names {holder} as its holder"),
            Lapse::Taken { holder: None } => write!(f, "the Lease no longer names a holder"),
        }
    }
}

/// Until when `identity` may act as the leader by `lease` as last seen: its
/// last renewal plus its duration, less `margin`. A Lease held by another,
/// or by nobody, is a lapse at once.
pub fn held_until(lease: &Lease, identity: &str, margin: Duration) -> Result<Option<SystemTime>, Lapse> {
    let Some(spec) = &lease.spec else {
        return Err(Lapse::Taken { holder: None });
    };
    let holder = spec.holder_identity.as_deref().filter(|h| !h.is_empty());
    if holder != Some(identity) {
        return Err(Lapse::Taken {
            holder: holder.map(str::to_owned),
        });
    }
    let (Some(renewed), Some(seconds)) = (&spec.renew_time, spec.lease_duration_seconds) else {
        return Ok(None);
    };
    let duration = Duration::from_secs(u64::try_from(seconds).unwrap_or(0));
    let renewed: SystemTime = renewed.0.into();
    Ok(Some(renewed + duration.saturating_sub(margin)))
}

/// Resolves once the leader `identity` may no longer act: the Lease shows
/// another holder, or no renewal was seen before the last one seen (the
/// acquisition, at first: `until`) ran out. Watching the one Lease costs one
/// watch and no request per renewal.
pub async fn lapse(api: Api<Lease>, name: &str, identity: &str, margin: Duration, mut until: SystemTime) -> Lapse {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let events = watcher(api, config).default_backoff();
    futures::pin_mut!(events);
    let mut last_seen = SystemTime::now();
    loop {
        let left = until.duration_since(SystemTime::now()).unwrap_or_default();
        tokio::select! {
            () = tokio::time::sleep(left) => {
                return Lapse::NotRenewed { since: last_seen.elapsed().unwrap_or_default() };
            }
            event = events.next() => match event {
                Some(Ok(watcher::Event::Apply(lease) | watcher::Event::InitApply(lease))) => {
                    match held_until(&lease, identity, margin) {
                        Ok(Some(renewed_until)) => {
                            until = until.max(renewed_until);
                            last_seen = SystemTime::now();
                        }
                        Ok(None) => {}
                        Err(lapse) => return lapse,
                    }
                }
                Some(Ok(watcher::Event::Delete(_))) => return Lapse::Taken { holder: None },
                // A failed watch is retried with a back-off; the deadline stands.
                Some(Ok(watcher::Event::Init | watcher::Event::InitDone)) | Some(Err(_)) => {}
                None => return Lapse::Taken { holder: None },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{
        api::coordination::v1::LeaseSpec, apimachinery::pkg::apis::meta::v1::MicroTime, jiff::Timestamp,
    };

    use super::*;

    fn lease(holder: Option<&str>, renewed: Option<Timestamp>, seconds: Option<i32>) -> Lease {
        Lease {
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_owned),
                renew_time: renewed.map(MicroTime),
                lease_duration_seconds: seconds,
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        }
    }

    #[test]
    fn held_until_the_renewal_plus_the_duration_less_the_margin() {
        let renewed = Timestamp::from_second(1_000_000).unwrap();
        let until = held_until(
            &lease(Some("a"), Some(renewed), Some(15)),
            "a",
            Duration::from_millis(2500),
        );
        let expected = SystemTime::UNIX_EPOCH + Duration::from_millis(1_000_000_000 + 12_500);
        assert_eq!(until, Ok(Some(expected)));
    }

    #[test]
    fn another_holder_or_none_is_a_lapse() {
        let renewed = Some(Timestamp::from_second(1_000_000).unwrap());
        let margin = Duration::from_secs(1);
        assert_eq!(
            held_until(&lease(Some("b"), renewed, Some(15)), "a", margin),
            Err(Lapse::Taken {
                holder: Some("b".into())
            })
        );
        for released in [lease(None, None, None), lease(Some(""), None, None), Lease::default()] {
            assert_eq!(held_until(&released, "a", margin), Err(Lapse::Taken { holder: None }));
        }
    }

    #[test]
    fn a_lease_without_a_renewal_moves_no_deadline() {
        assert_eq!(
            held_until(&lease(Some("a"), None, Some(15)), "a", Duration::from_secs(1)),
            Ok(None)
        );
    }

    #[test]
    fn the_lapse_says_why() {
        let late = Lapse::NotRenewed {
            since: Duration::from_millis(12_500),
        };
        assert_eq!(
            late.to_string(),
            "no renewal of the Lease was seen for 12.5 s, so it may have run out"
        );
        let taken = Lapse::Taken {
            holder: Some("other".into()),
        };
        assert_eq!(taken.to_string(), "the Lease names other as its holder");
    }
}
