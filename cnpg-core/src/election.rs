//! Who should be primary: upstream's ordering of instances, and the choice of the most
//! aligned ready replica, with a reason a person can read for every candidate.
//!
//! Ordering (upstream `pkg/postgres/status.go`): reachable before unreachable; primaries
//! first (by name); then replicas by received LSN, then replayed LSN, both descending; then
//! by name. The head of the list is "the instance that should be primary".
//!
//! On top of upstream, a replica is only electable when it is on the highest timeline seen
//! among candidates: a replica still on an older timeline missed a promotion and may hold a
//! history the cluster abandoned.

use crate::fencing::Fencing;
use crate::lsn::Lsn;
use crate::status::InstanceStatus;
use std::cmp::Ordering;
use std::fmt;

/// Upstream's comparison of two instances (smaller sorts first).
pub fn compare(a: &InstanceStatus, b: &InstanceStatus) -> Ordering {
    b.is_reachable()
        .cmp(&a.is_reachable())
        .then_with(|| b.is_primary.cmp(&a.is_primary))
        .then_with(|| {
            if a.is_primary && b.is_primary {
                Ordering::Equal
            } else {
                b.wal_position().cmp(&a.wal_position())
            }
        })
        .then_with(|| b.replay_lsn.cmp(&a.replay_lsn))
        .then_with(|| crate::naming_order(&a.name).cmp(&crate::naming_order(&b.name)))
}

/// The instances in upstream's order.
pub fn sorted(statuses: &[InstanceStatus]) -> Vec<&InstanceStatus> {
    let mut v: Vec<&InstanceStatus> = statuses.iter().collect();
    v.sort_by(|a, b| compare(a, b));
    v
}

/// Why a replica could not be elected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exclusion {
    /// Its status could not be read.
    Unreachable(String),
    /// The platform says it is not ready.
    NotReady,
    /// The user fenced it.
    Fenced,
    /// It reports being a primary (the old primary, or a stale one).
    IsPrimary,
    /// Its WAL disk is full: promoted, it could not write.
    WalDiskFull,
    /// It is on an older timeline than another candidate.
    OlderTimeline {
        /// Its timeline.
        timeline: u32,
        /// The newest timeline among candidates.
        newest: u32,
    },
    /// It was the one failed over from.
    FailedPrimary,
}

impl fmt::Display for Exclusion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exclusion::Unreachable(why) => write!(f, "unreachable ({why})"),
            Exclusion::NotReady => f.write_str("not ready"),
            Exclusion::Fenced => f.write_str("fenced"),
            Exclusion::IsPrimary => f.write_str("reports being a primary"),
            Exclusion::WalDiskFull => f.write_str("WAL disk full"),
            Exclusion::OlderTimeline { timeline, newest } => {
                write!(f, "on timeline {timeline}, older than {newest}")
            }
            Exclusion::FailedPrimary => f.write_str("the failed primary"),
        }
    }
}

/// One instance's place in an election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Instance name.
    pub name: String,
    /// Its WAL position (received or replayed, whichever is further).
    pub wal_position: Lsn,
    /// How far it has replayed (the tie-break at equal positions).
    pub replay_lsn: Lsn,
    /// Its timeline.
    pub timeline: u32,
    /// Why it cannot be elected, if it cannot.
    pub excluded: Option<Exclusion>,
}

/// The outcome of an election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Election {
    /// The most aligned electable replica, if any.
    pub elected: Option<String>,
    /// Every instance, in upstream's order, with why it lost.
    pub candidates: Vec<Candidate>,
}

impl Election {
    /// A sentence with the winner and why each other instance lost.
    pub fn reason(&self) -> String {
        let mut parts = Vec::new();
        let winner = self
            .candidates
            .iter()
            .find(|c| Some(&c.name) == self.elected.as_ref());
        match winner {
            Some(w) => parts.push(format!(
                "{} is the most aligned ready replica (WAL at {}, timeline {})",
                w.name, w.wal_position, w.timeline
            )),
            None => parts.push("no replica can be elected".to_owned()),
        }
        for c in &self.candidates {
            if Some(&c.name) == self.elected.as_ref() {
                continue;
            }
            match (&c.excluded, winner) {
                (Some(why), _) => parts.push(format!("{}: {why}", c.name)),
                (None, Some(w)) => parts.push(format!("{}: {}", c.name, lost_to(c, w))),
                (None, None) => parts.push(format!("{}: WAL at {}", c.name, c.wal_position)),
            }
        }
        parts.join("; ")
    }
}

/// What decided between an electable loser and the winner (same timeline: an older one
/// is excluded before).
fn lost_to(c: &Candidate, w: &Candidate) -> String {
    if c.wal_position < w.wal_position {
        format!(
            "behind (WAL at {}, {} at {})",
            c.wal_position, w.name, w.wal_position
        )
    } else if c.replay_lsn < w.replay_lsn {
        format!(
            "same WAL position as {} ({}), replayed less ({} < {})",
            w.name, c.wal_position, c.replay_lsn, w.replay_lsn
        )
    } else {
        format!(
            "same WAL position as {} ({}): the tie goes to the lower serial",
            w.name, c.wal_position
        )
    }
}

/// Elects the most aligned ready replica. `failed_primary` (the instance being failed over
/// from) is never elected, even if it still answers.
pub fn elect(
    statuses: &[InstanceStatus],
    fencing: &Fencing,
    failed_primary: Option<&str>,
) -> Election {
    let order = sorted(statuses);
    let exclusion = |s: &InstanceStatus| -> Option<Exclusion> {
        if let Some(e) = &s.error {
            Some(Exclusion::Unreachable(e.clone()))
        } else if Some(s.name.as_str()) == failed_primary {
            Some(Exclusion::FailedPrimary)
        } else if s.is_primary {
            Some(Exclusion::IsPrimary)
        } else if fencing.is_fenced(&s.name) {
            Some(Exclusion::Fenced)
        } else if !s.is_pod_ready {
            Some(Exclusion::NotReady)
        } else if s.wal_disk_full {
            Some(Exclusion::WalDiskFull)
        } else {
            None
        }
    };
    let newest = order
        .iter()
        .filter(|s| exclusion(s).is_none())
        .map(|s| s.timeline)
        .max()
        .unwrap_or(0);
    let candidates: Vec<Candidate> = order
        .iter()
        .map(|s| Candidate {
            name: s.name.clone(),
            wal_position: s.wal_position(),
            replay_lsn: s.replay_lsn,
            timeline: s.timeline,
            excluded: exclusion(s).or_else(|| {
                (s.timeline < newest).then_some(Exclusion::OlderTimeline {
                    timeline: s.timeline,
                    newest,
                })
            }),
        })
        .collect();
    let elected = candidates
        .iter()
        .find(|c| c.excluded.is_none())
        .map(|c| c.name.clone());
    Election {
        elected,
        candidates,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::InstanceStatus as S;

    fn lsn(n: u64) -> Lsn {
        Lsn(n)
    }

    #[test]
    fn upstream_ordering() {
        let mut dead = S::unreachable("pg-1", "connection refused");
        dead.is_primary = true;
        let list = vec![
            S::replica("pg-3", 1, lsn(100)),
            dead,
            S::replica("pg-2", 1, lsn(200)),
            S::primary("pg-4", 1, lsn(50)),
            S::replica("pg-10", 1, lsn(100)),
        ];
        let names: Vec<&str> = sorted(&list).iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["pg-4", "pg-2", "pg-3", "pg-10", "pg-1"]);
    }

    #[test]
    fn replay_breaks_received_ties_and_counts_when_ahead() {
        let mut a = S::replica("pg-2", 1, lsn(100));
        a.replay_lsn = lsn(90);
        let mut b = S::replica("pg-3", 1, lsn(100));
        b.replay_lsn = lsn(100);
        let mut c = S::replica("pg-4", 1, lsn(10));
        c.replay_lsn = lsn(150); // restored from archive: replayed more than it received
        let names: Vec<String> = sorted(&[a, b, c]).iter().map(|s| s.name.clone()).collect();
        assert_eq!(names, ["pg-4", "pg-3", "pg-2"]);
    }

    #[test]
    fn elects_most_aligned_ready_replica_and_explains() {
        let mut not_ready = S::replica("pg-5", 1, lsn(900));
        not_ready.is_pod_ready = false;
        let mut full = S::replica("pg-6", 1, lsn(950));
        full.wal_disk_full = true;
        let list = vec![
            S::unreachable("pg-1", "postmaster is down"),
            S::replica("pg-2", 1, lsn(300)),
            S::replica("pg-3", 1, lsn(500)),
            S::replica("pg-4", 1, lsn(999)),
            not_ready,
            full,
        ];
        let fencing = Fencing::parse(Some("[\"pg-4\"]")).expect("valid");
        let e = elect(&list, &fencing, Some("pg-1"));
        assert_eq!(e.elected.as_deref(), Some("pg-3"));
        let reason = e.reason();
        for needle in [
            "pg-3 is the most aligned ready replica (WAL at 0/1F4, timeline 1)",
            "pg-4: fenced",
            "pg-6: WAL disk full",
            "pg-5: not ready",
            "pg-2: behind (WAL at 0/12C, pg-3 at 0/1F4)",
            "pg-1: unreachable (postmaster is down)",
        ] {
            assert!(reason.contains(needle), "{needle:?} not in {reason}");
        }
    }

    #[test]
    fn older_timeline_is_not_elected_even_if_ahead() {
        let list = vec![
            S::replica("pg-2", 1, lsn(900)),
            S::replica("pg-3", 2, lsn(500)),
        ];
        let e = elect(&list, &Fencing::None, None);
        assert_eq!(e.elected.as_deref(), Some("pg-3"));
        assert!(e.reason().contains("pg-2: on timeline 1, older than 2"));
    }

    #[test]
    fn a_tie_says_what_broke_it() {
        let mut slow = S::replica("pg-3", 1, lsn(500));
        slow.replay_lsn = lsn(400);
        let list = vec![
            S::replica("pg-2", 1, lsn(500)),
            slow,
            S::replica("pg-4", 1, lsn(500)),
        ];
        let reason = elect(&list, &Fencing::None, None).reason();
        assert!(reason.starts_with("pg-2 is the most aligned"), "{reason}");
        assert!(
            reason
                .contains("pg-3: same WAL position as pg-2 (0/1F4), replayed less (0/190 < 0/1F4)"),
            "{reason}"
        );
        assert!(
            reason.contains(
                "pg-4: same WAL position as pg-2 (0/1F4): the tie goes to the lower serial"
            ),
            "{reason}"
        );
        assert!(!reason.contains("behind"), "{reason}");
    }

    #[test]
    fn nobody_electable() {
        let e = elect(&[S::unreachable("pg-1", "x")], &Fencing::None, None);
        assert_eq!(e.elected, None);
        assert!(e.reason().starts_with("no replica can be elected"));
    }

    use proptest::prelude::*;

    fn arb_status() -> impl Strategy<Value = S> {
        (
            1u32..8,
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            1u32..3,
            0u64..1000,
            any::<bool>(),
        )
            .prop_map(|(i, reachable, ready, primary, tl, l, full)| {
                let mut s = if primary {
                    S::primary(&format!("pg-{i}"), tl, Lsn(l))
                } else {
                    S::replica(&format!("pg-{i}"), tl, Lsn(l))
                };
                s.is_pod_ready = ready;
                s.wal_disk_full = full;
                if !reachable {
                    s.error = Some("down".into());
                }
                s
            })
    }

    proptest! {
        /// Invariant 2 (the choice half): the elected instance is a reachable, ready,
        /// unfenced replica on the newest timeline, and no such replica is further ahead.
        #[test]
        fn elected_is_the_most_aligned_eligible_replica(list in prop::collection::vec(arb_status(), 0..7), fence in 0u32..8) {
            let mut seen = std::collections::BTreeSet::new();
            let list: Vec<S> = list.into_iter().filter(|s| seen.insert(s.name.clone())).collect();
            let fencing = Fencing::parse(Some(&format!("[\"pg-{fence}\"]"))).expect("valid");
            let e = elect(&list, &fencing, None);
            let eligible: Vec<&S> = list.iter().filter(|s| s.is_reachable() && !s.is_primary && s.is_pod_ready && !s.wal_disk_full && !fencing.is_fenced(&s.name)).collect();
            match &e.elected {
                None => prop_assert!(eligible.is_empty()),
                Some(w) => {
                    let w = list.iter().find(|s| &s.name == w).expect("winner is listed");
                    prop_assert!(eligible.iter().any(|s| s.name == w.name));
                    let newest = eligible.iter().map(|s| s.timeline).max().unwrap_or(0);
                    prop_assert_eq!(w.timeline, newest);
                    for s in eligible.iter().filter(|s| s.timeline == newest) {
                        prop_assert!(s.wal_position() <= w.wal_position());
                    }
                }
            }
            prop_assert_eq!(e.candidates.len(), list.len());
        }

        /// The ordering is a total order: sorting is deterministic whatever the input order.
        #[test]
        fn ordering_is_deterministic(mut list in prop::collection::vec(arb_status(), 0..7)) {
            let mut seen = std::collections::BTreeSet::new();
            list.retain(|s| seen.insert(s.name.clone()));
            let a: Vec<String> = sorted(&list).iter().map(|s| s.name.clone()).collect();
            list.reverse();
            let b: Vec<String> = sorted(&list).iter().map(|s| s.name.clone()).collect();
            prop_assert_eq!(a, b);
        }
    }
}
