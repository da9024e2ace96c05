//! The instance manager's decision: given its PostgreSQL (is PGDATA a primary or a
//! standby? is it running?) and what the cluster status says (target and current primary,
//! fencing), what should it do now?
//!
//! The rules that keep a cluster from split brain live here (reference §3.7–§3.8):
//! * a PGDATA that is a primary only runs as primary while the cluster's target is this
//!   instance; otherwise it stops, and comes back only through `pg_rewind` as a standby of
//!   the new primary — never as a diverged primary;
//! * a standby promotes only when it is the target and its WAL receiver has stopped, so it
//!   has everything the old primary streamed;
//! * when the cluster status cannot be read, nothing is promoted and a stopped primary is
//!   not started (it could be stale); a standby may start, as it accepts no writes;
//! * data that pg_rewind could not bring back (or a re-clone cut off mid-way) is never
//!   started: it is cloned again from the primary once one is published. That loses
//!   nothing pg_rewind would have kept: what diverged from the primary is discarded either
//!   way, and the rest is on the primary.

use crate::time::Timestamp;

/// What PGDATA is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgData {
    /// No data directory yet (bootstrap is the platform's job).
    Missing,
    /// A primary (no `standby.signal`).
    Primary,
    /// A standby (`standby.signal` present).
    Standby,
}

/// The instance manager's view of its own PostgreSQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalState {
    /// This instance's name.
    pub name: String,
    /// What PGDATA is.
    pub pgdata: PgData,
    /// Whether the postmaster runs.
    pub running: bool,
    /// Whether a WAL receiver is streaming.
    pub wal_receiver_active: bool,
    /// The standby cannot follow the primary's timeline (its history diverged).
    pub diverged: bool,
    /// `pg_rewind` was tried and cannot work (no common ancestor, missing WAL, cut off
    /// mid-way), or a re-clone is unfinished: PGDATA may only be replaced by a new clone.
    pub rewind_failed: bool,
}

/// What the cluster status says, as the instance manager last read it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClusterView {
    /// Whether the status could be read just now.
    pub readable: bool,
    /// `status.currentPrimary`.
    pub current_primary: Option<String>,
    /// `status.targetPrimary`.
    pub target_primary: Option<String>,
    /// Whether this instance is fenced.
    pub fenced: bool,
}

/// What the instance manager does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceAction {
    /// Nothing to do.
    Nothing,
    /// Start the postmaster as PGDATA says.
    Start,
    /// Fast shutdown (then immediate if it does not finish): fencing or demotion.
    Stop,
    /// Wait for the WAL receiver to stop before promoting.
    WaitForWalReceiver,
    /// `pg_ctl promote`, then CHECKPOINT.
    Promote,
    /// Write `currentPrimary = self` in the cluster status.
    PublishCurrentPrimary,
    /// `pg_rewind` against the new primary, write `standby.signal`, start as its standby.
    Rewind {
        /// The primary to rewind against.
        source: String,
    },
    /// Rewinding cannot work: clone the data again from the primary (replacing PGDATA),
    /// then start as its standby. The instance stays stopped until the clone is complete.
    NeedsReclone {
        /// The primary to clone from.
        source: String,
    },
}

/// A decision and the reason for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// What to do.
    pub action: InstanceAction,
    /// Why, for logs and status.
    pub reason: String,
}

fn d(action: InstanceAction, reason: impl Into<String>) -> Decision {
    Decision {
        action,
        reason: reason.into(),
    }
}

/// Decides what the instance manager does now.
///
/// ```
/// use cnpg_core::instance::{decide, ClusterView, InstanceAction, LocalState, PgData};
/// use cnpg_core::time::Timestamp;
///
/// // The old primary comes back after a failover to pg-3: it must rewind, not serve.
/// let local = LocalState {
///     name: "pg-1".into(), pgdata: PgData::Primary, running: false,
///     wal_receiver_active: false, diverged: false, rewind_failed: false,
/// };
/// let view = ClusterView {
///     readable: true, fenced: false,
///     current_primary: Some("pg-3".into()), target_primary: Some("pg-3".into()),
/// };
/// let d = decide(&local, &view, Timestamp(0));
/// assert_eq!(d.action, InstanceAction::Rewind { source: "pg-3".into() });
/// ```
pub fn decide(local: &LocalState, view: &ClusterView, _now: Timestamp) -> Decision {
    use InstanceAction as A;
    let me = local.name.as_str();
    if view.fenced {
        return if local.running {
            d(
                A::Stop,
                "fenced: stopping PostgreSQL and keeping it stopped",
            )
        } else {
            d(A::Nothing, "fenced: PostgreSQL stays stopped")
        };
    }
    if local.rewind_failed && !local.running {
        let target = view.target_primary.as_deref();
        return match (target, view.current_primary.as_deref()) {
            _ if !view.readable => d(
                A::Nothing,
                "cluster status unreadable; the re-clone waits to know the primary",
            ),
            (Some(t), Some(c)) if t == c && t != me && t != crate::naming::PENDING => d(
                A::NeedsReclone {
                    source: t.to_owned(),
                },
                format!(
                    "pg_rewind against {t} cannot work (or an earlier re-clone was cut off): cloning {t} again"
                ),
            ),
            _ => d(
                A::Nothing,
                format!(
                    "the data must be cloned again; waiting for {} to be published as primary",
                    target.unwrap_or("a primary")
                ),
            ),
        };
    }
    if local.pgdata == PgData::Missing {
        return d(
            A::Nothing,
            "no data directory yet: waiting for initdb or join",
        );
    }
    if !view.readable {
        return match (local.pgdata, local.running) {
            (PgData::Standby, false) => d(
                A::Start,
                "cluster status unreadable; starting as a standby, which accepts no writes",
            ),
            (PgData::Primary, false) => d(
                A::Nothing,
                "cluster status unreadable; not starting a primary that may be stale",
            ),
            _ => d(
                A::Nothing,
                "cluster status unreadable; keeping the current state",
            ),
        };
    }
    let target = view.target_primary.as_deref();
    let current = view.current_primary.as_deref();
    let i_am_target = target == Some(me);
    match local.pgdata {
        PgData::Primary if i_am_target => {
            if !local.running {
                d(A::Start, "this instance is the target primary")
            } else if current != Some(me) {
                d(
                    A::PublishCurrentPrimary,
                    "running as the target primary; publishing currentPrimary",
                )
            } else {
                d(A::Nothing, "primary")
            }
        }
        PgData::Primary => {
            let target = target.unwrap_or("nobody");
            if local.running {
                return d(
                    A::Stop,
                    format!(
                        "the target primary is {target}, not this instance: shutting down to demote"
                    ),
                );
            }
            match (target, current) {
                (t, Some(c)) if t == c && t != me && t != crate::naming::PENDING => d(
                    A::Rewind {
                        source: t.to_owned(),
                    },
                    format!("{t} is the new primary: rejoining it through pg_rewind"),
                ),
                _ => d(
                    A::Nothing,
                    format!(
                        "stopped old primary: waiting for {target} to become primary before rewinding"
                    ),
                ),
            }
        }
        PgData::Standby if i_am_target => {
            if !local.running {
                d(
                    A::Start,
                    "target primary, but PostgreSQL is stopped: starting it to promote it",
                )
            } else if local.wal_receiver_active {
                d(
                    A::WaitForWalReceiver,
                    "target primary: waiting for the WAL receiver to stop so every streamed WAL record is in",
                )
            } else {
                d(A::Promote, "target primary with no WAL receiver: promoting")
            }
        }
        PgData::Standby => {
            let primary = current.unwrap_or("the primary");
            if local.diverged {
                if local.running {
                    d(
                        A::Stop,
                        format!(
                            "this standby's history diverged from {primary}: stopping to rewind"
                        ),
                    )
                } else {
                    d(
                        A::Rewind {
                            source: primary.to_owned(),
                        },
                        format!("diverged from {primary}: rewinding"),
                    )
                }
            } else if !local.running {
                d(A::Start, format!("standby of {primary}: starting"))
            } else {
                d(A::Nothing, format!("standby of {primary}"))
            }
        }
        PgData::Missing => unreachable!("handled above"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use InstanceAction as A;

    fn local(pgdata: PgData, running: bool) -> LocalState {
        LocalState {
            name: "pg-2".into(),
            pgdata,
            running,
            wal_receiver_active: false,
            diverged: false,
            rewind_failed: false,
        }
    }
    fn view(current: &str, target: &str) -> ClusterView {
        ClusterView {
            readable: true,
            current_primary: Some(current.into()),
            target_primary: Some(target.into()),
            fenced: false,
        }
    }
    fn act(l: &LocalState, v: &ClusterView) -> InstanceAction {
        decide(l, v, Timestamp(0)).action
    }

    #[test]
    fn the_reference_decision_table() {
        // First bootstrap: primary PGDATA, target is self, current empty → publish.
        let mut v = view("", "pg-2");
        v.current_primary = None;
        assert_eq!(
            act(&local(PgData::Primary, true), &v),
            A::PublishCurrentPrimary
        );
        // Promotion: standby, target self → wait for WAL receiver, then promote.
        let mut l = local(PgData::Standby, true);
        l.wal_receiver_active = true;
        assert_eq!(act(&l, &view("pg-1", "pg-2")), A::WaitForWalReceiver);
        l.wal_receiver_active = false;
        assert_eq!(act(&l, &view("pg-1", "pg-2")), A::Promote);
        // After promotion: primary, target self, current other → publish.
        assert_eq!(
            act(&local(PgData::Primary, true), &view("pg-1", "pg-2")),
            A::PublishCurrentPrimary
        );
        // Old primary, target elsewhere → stop; once the new one published → rewind.
        assert_eq!(
            act(&local(PgData::Primary, true), &view("pg-2", "pg-3")),
            A::Stop
        );
        assert_eq!(
            act(&local(PgData::Primary, false), &view("pg-2", "pg-3")),
            A::Nothing
        );
        assert_eq!(
            act(&local(PgData::Primary, false), &view("pg-3", "pg-3")),
            A::Rewind {
                source: "pg-3".into()
            }
        );
        assert_eq!(
            act(&local(PgData::Primary, false), &view("pg-1", "pending")),
            A::Nothing
        );
        let mut l = local(PgData::Primary, false);
        l.rewind_failed = true;
        assert_eq!(
            act(&l, &view("pg-3", "pg-3")),
            A::NeedsReclone {
                source: "pg-3".into()
            }
        );
        // Fencing wins over everything.
        let mut v = view("pg-2", "pg-2");
        v.fenced = true;
        assert_eq!(act(&local(PgData::Primary, true), &v), A::Stop);
        assert_eq!(act(&local(PgData::Primary, false), &v), A::Nothing);
    }

    #[test]
    fn unreadable_status_never_starts_or_promotes_a_primary() {
        let v = ClusterView {
            readable: false,
            ..Default::default()
        };
        assert_eq!(act(&local(PgData::Primary, false), &v), A::Nothing);
        assert_eq!(act(&local(PgData::Standby, false), &v), A::Start);
        assert_eq!(act(&local(PgData::Standby, true), &v), A::Nothing);
        assert_eq!(act(&local(PgData::Primary, true), &v), A::Nothing);
    }

    #[test]
    fn data_to_clone_again_never_starts_and_clones_only_a_published_primary() {
        for pgdata in [PgData::Missing, PgData::Primary, PgData::Standby] {
            let mut l = local(pgdata, false);
            l.rewind_failed = true;
            assert_eq!(
                act(&l, &view("pg-3", "pg-3")),
                A::NeedsReclone {
                    source: "pg-3".into()
                },
                "{pgdata:?}"
            );
            for (current, target) in [("pg-1", "pg-3"), ("pg-1", "pending"), ("pg-2", "pg-2")] {
                assert_eq!(
                    act(&l, &view(current, target)),
                    A::Nothing,
                    "{current} {target}"
                );
            }
            let unreadable = ClusterView::default();
            assert_eq!(act(&l, &unreadable), A::Nothing);
        }
    }

    #[test]
    fn diverged_standby_rewinds() {
        let mut l = local(PgData::Standby, true);
        l.diverged = true;
        assert_eq!(act(&l, &view("pg-3", "pg-3")), A::Stop);
        l.running = false;
        assert_eq!(
            act(&l, &view("pg-3", "pg-3")),
            A::Rewind {
                source: "pg-3".into()
            }
        );
        let r = decide(&l, &view("pg-3", "pg-3"), Timestamp(0));
        assert!(r.reason.contains("diverged"));
    }

    use proptest::prelude::*;
    proptest! {
        /// Invariant 1 (instance half): an instance whose PGDATA is a primary keeps
        /// PostgreSQL running or starts it only when it is the target; a standby is
        /// promoted only when it is the target and its WAL receiver is down.
        #[test]
        fn only_the_target_runs_or_becomes_primary(
            primary in any::<bool>(), running in any::<bool>(), wal in any::<bool>(),
            readable in any::<bool>(), fenced in any::<bool>(),
            target in prop_oneof![Just("pg-2"), Just("pg-3"), Just("pending")],
            current in prop_oneof![Just("pg-1"), Just("pg-2"), Just("pg-3")],
        ) {
            let mut l = local(if primary { PgData::Primary } else { PgData::Standby }, running);
            l.wal_receiver_active = wal;
            let v = ClusterView { readable, current_primary: Some(current.into()), target_primary: Some(target.into()), fenced };
            let a = act(&l, &v);
            let is_target = readable && target == "pg-2";
            if primary && a == A::Start { prop_assert!(is_target && !fenced); }
            if primary && running && !is_target { prop_assert!(matches!(a, A::Stop | A::Nothing)); if readable || fenced { prop_assert_eq!(&a, &A::Stop); } }
            if a == A::Promote { prop_assert!(is_target && !wal && !primary && !fenced); }
            if fenced { prop_assert!(matches!(a, A::Stop | A::Nothing)); }
        }
    }
}
