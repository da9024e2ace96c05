//! Who may hold a `coordination.k8s.io` Lease: the instance about to promote itself (so
//! a stale primary is never promoted twice) and the active operator replica.
//!
//! Expiry is judged on the local clock, from when this process first saw the record as it
//! is now (as client-go does), never from the holder's `renewTime`: clocks of different
//! nodes need not agree.

use crate::time::Timestamp;
use std::time::Duration;

/// A Lease as one process sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseView {
    /// `spec.holderIdentity` (`None` or empty: released).
    pub holder: Option<String>,
    /// `spec.leaseDurationSeconds`.
    pub duration: Duration,
    /// When this process first saw the record unchanged (local clock).
    pub observed_since: Timestamp,
}

/// What to do about the Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseDecision {
    /// Nobody holds it (or the holder let it expire): take it.
    Take {
        /// Why, for people.
        reason: String,
    },
    /// We hold it: renew it.
    Renew,
    /// Someone else holds it: wait until `until` at least.
    Wait {
        /// The holder.
        holder: String,
        /// When it expires if not renewed.
        until: Timestamp,
    },
}

/// Decides whether `me` may take, must renew, or must wait for the Lease (`None`: it does
/// not exist yet).
///
/// ```
/// use cnpg_core::lease::{decide, LeaseDecision, LeaseView};
/// use cnpg_core::time::Timestamp;
/// use std::time::Duration;
/// let held = LeaseView { holder: Some("pg-1".into()), duration: Duration::from_secs(15), observed_since: Timestamp(1_000) };
/// assert!(matches!(decide(Some(&held), "pg-2", Timestamp(5_000)), LeaseDecision::Wait { .. }));
/// assert!(matches!(decide(Some(&held), "pg-2", Timestamp(16_000)), LeaseDecision::Take { .. }));
/// assert_eq!(decide(Some(&held), "pg-1", Timestamp(5_000)), LeaseDecision::Renew);
/// ```
pub fn decide(lease: Option<&LeaseView>, me: &str, now: Timestamp) -> LeaseDecision {
    let Some(l) = lease else {
        return LeaseDecision::Take {
            reason: "the lease does not exist yet".into(),
        };
    };
    match l.holder.as_deref().filter(|h| !h.is_empty()) {
        None => LeaseDecision::Take {
            reason: "the lease was released".into(),
        },
        Some(h) if h == me => LeaseDecision::Renew,
        Some(h) => {
            let until = l.observed_since.plus(l.duration);
            if now >= until {
                LeaseDecision::Take {
                    reason: format!("{h} did not renew the lease for {} s", l.duration.as_secs()),
                }
            } else {
                LeaseDecision::Wait {
                    holder: h.to_owned(),
                    until,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Two contenders never both get told to take a lease someone holds unexpired.
        #[test]
        fn a_live_holder_is_never_preempted(since in 0u64..1_000_000, dur in 1u64..60, dt in 0u64..120_000) {
            let l = LeaseView { holder: Some("a".into()), duration: Duration::from_secs(dur), observed_since: Timestamp(since) };
            let now = Timestamp(since + dt);
            let d = decide(Some(&l), "b", now);
            if dt < dur * 1000 {
                prop_assert!(matches!(d, LeaseDecision::Wait { .. }), "{:?}", d);
            } else {
                prop_assert!(matches!(d, LeaseDecision::Take { .. }), "{:?}", d);
            }
        }
    }

    #[test]
    fn released_or_missing_is_taken() {
        assert!(matches!(
            decide(None, "a", Timestamp(0)),
            LeaseDecision::Take { .. }
        ));
        let l = LeaseView {
            holder: Some(String::new()),
            duration: Duration::from_secs(15),
            observed_since: Timestamp(0),
        };
        assert!(matches!(
            decide(Some(&l), "a", Timestamp(0)),
            LeaseDecision::Take { .. }
        ));
    }
}
