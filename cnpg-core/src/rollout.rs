//! Rolling updates: which instance to restart next when the image, a restart-requiring
//! parameter or the pod template changed.
//!
//! Upstream's order (`cluster_upgrade.go`): only when every instance is ready; replicas one
//! at a time, least advanced first (the tail of the election order); the primary last, by
//! switchover or restart as `primaryUpdateMethod` says, or not before the user acts when
//! `primaryUpdateStrategy: supervised`. Fenced instances are skipped.

use crate::fencing::Fencing;
use crate::policy::{UpdateMethod, UpdateStrategy};
use std::collections::BTreeMap;

/// What a rolling update does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RolloutStep {
    /// Nothing is outdated.
    Done,
    /// Not now (an instance is not ready, or one is already restarting).
    Wait(String),
    /// Restart this replica (recreate its pod on its storage).
    RestartReplica {
        /// The replica.
        name: String,
        /// Why it is outdated.
        reason: String,
    },
    /// Replicas are done; the primary waits for the user.
    WaitForUser(String),
    /// Switch over to this replica, then the old primary restarts as a replica.
    SwitchoverTo {
        /// The most aligned replica.
        name: String,
        /// Why the primary is outdated.
        reason: String,
    },
    /// Restart the primary's PostgreSQL in place (a parameter needs a restart).
    RestartPrimaryInPlace(String),
    /// Recreate the primary's pod without a switchover (image or pod change).
    RecreatePrimary(String),
}

/// One instance as the rollout sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutInstance {
    /// Name.
    pub name: String,
    /// Ready now.
    pub ready: bool,
    /// Only a PostgreSQL restart is needed (parameters); otherwise the pod must be recreated.
    pub restart_only: bool,
}

/// Picks the next rollout step.
///
/// * `order`: every instance in election order (primary first, most aligned replicas next);
/// * `outdated`: why each outdated instance must be updated;
/// * `primary`: the current primary.
pub fn next_step(
    order: &[RolloutInstance],
    outdated: &BTreeMap<String, String>,
    primary: &str,
    fencing: &Fencing,
    strategy: UpdateStrategy,
    method: UpdateMethod,
) -> RolloutStep {
    let pending: Vec<&RolloutInstance> = order
        .iter()
        .filter(|i| outdated.contains_key(&i.name) && !fencing.is_fenced(&i.name))
        .collect();
    if pending.is_empty() {
        return RolloutStep::Done;
    }
    if let Some(i) = order
        .iter()
        .find(|i| !i.ready && !fencing.is_fenced(&i.name))
    {
        return RolloutStep::Wait(format!(
            "{} is not ready; a rolling update touches one ready instance at a time",
            i.name
        ));
    }
    // Replicas first, least advanced first: the tail of the election order.
    if let Some(r) = order.iter().rev().find(|i| {
        i.name != primary && outdated.contains_key(&i.name) && !fencing.is_fenced(&i.name)
    }) {
        return RolloutStep::RestartReplica {
            name: r.name.clone(),
            reason: outdated[&r.name].clone(),
        };
    }
    let Some(reason) = outdated
        .get(primary)
        .filter(|_| !fencing.is_fenced(primary))
    else {
        return RolloutStep::Done;
    };
    if strategy == UpdateStrategy::Supervised {
        return RolloutStep::WaitForUser(format!(
            "the replicas are updated; the primary {primary} needs an update ({reason}): \
             switch over with `kubectl cnpg promote` or restart it with `kubectl cnpg restart`"
        ));
    }
    let restart_only = order
        .iter()
        .find(|i| i.name == primary)
        .is_some_and(|i| i.restart_only);
    let replica = order
        .iter()
        .find(|i| i.name != primary && !fencing.is_fenced(&i.name));
    match (method, replica) {
        (UpdateMethod::Switchover, Some(target)) => RolloutStep::SwitchoverTo {
            name: target.name.clone(),
            reason: reason.clone(),
        },
        _ if restart_only => RolloutStep::RestartPrimaryInPlace(reason.clone()),
        _ => RolloutStep::RecreatePrimary(reason.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(name: &str) -> RolloutInstance {
        RolloutInstance {
            name: name.into(),
            ready: true,
            restart_only: false,
        }
    }

    fn all_outdated(names: &[&str]) -> BTreeMap<String, String> {
        names
            .iter()
            .map(|n| ((*n).to_owned(), "image changed".to_owned()))
            .collect()
    }

    #[test]
    fn replicas_least_advanced_first_then_primary_by_method() {
        let order = vec![inst("pg-1"), inst("pg-3"), inst("pg-2")];
        let mut outdated = all_outdated(&["pg-1", "pg-2", "pg-3"]);
        let step = |o: &BTreeMap<String, String>, m| {
            next_step(
                &order,
                o,
                "pg-1",
                &Fencing::None,
                UpdateStrategy::Unsupervised,
                m,
            )
        };
        assert_eq!(
            step(&outdated, UpdateMethod::Restart),
            RolloutStep::RestartReplica {
                name: "pg-2".into(),
                reason: "image changed".into()
            }
        );
        outdated.remove("pg-2");
        assert!(
            matches!(step(&outdated, UpdateMethod::Restart), RolloutStep::RestartReplica { ref name, .. } if name == "pg-3")
        );
        outdated.remove("pg-3");
        assert_eq!(
            step(&outdated, UpdateMethod::Restart),
            RolloutStep::RecreatePrimary("image changed".into())
        );
        assert_eq!(
            step(&outdated, UpdateMethod::Switchover),
            RolloutStep::SwitchoverTo {
                name: "pg-3".into(),
                reason: "image changed".into()
            }
        );
        outdated.remove("pg-1");
        assert_eq!(step(&outdated, UpdateMethod::Restart), RolloutStep::Done);
    }

    #[test]
    fn waits_for_readiness_skips_fenced_and_supervised_waits() {
        let mut order = vec![inst("pg-1"), inst("pg-2"), inst("pg-3")];
        order[1].ready = false;
        let outdated = all_outdated(&["pg-1", "pg-3"]);
        assert!(matches!(
            next_step(
                &order,
                &outdated,
                "pg-1",
                &Fencing::None,
                UpdateStrategy::Unsupervised,
                UpdateMethod::Restart
            ),
            RolloutStep::Wait(_)
        ));
        order[1].ready = true;
        let fenced = Fencing::parse(Some("[\"pg-3\"]")).expect("valid");
        let s = next_step(
            &order,
            &outdated,
            "pg-1",
            &fenced,
            UpdateStrategy::Supervised,
            UpdateMethod::Restart,
        );
        assert!(
            matches!(s, RolloutStep::WaitForUser(ref r) if r.contains("kubectl cnpg promote")),
            "{s:?}"
        );
        order[0].restart_only = true;
        let s = next_step(
            &order,
            &all_outdated(&["pg-1"]),
            "pg-1",
            &Fencing::None,
            UpdateStrategy::Unsupervised,
            UpdateMethod::Restart,
        );
        assert_eq!(
            s,
            RolloutStep::RestartPrimaryInPlace("image changed".into())
        );
    }

    use proptest::prelude::*;
    proptest! {
        /// Invariant 5: a rollout touches one instance at a time, replicas before the primary,
        /// and every instance exactly once.
        #[test]
        fn one_at_a_time_primary_last(n in 1usize..7, outdated_mask in any::<u8>(), method_switch in any::<bool>()) {
            let order: Vec<RolloutInstance> = (1..=n).map(|i| inst(&format!("pg-{i}"))).collect();
            let mut outdated: BTreeMap<String, String> = order.iter().enumerate()
                .filter(|(i, _)| outdated_mask & (1 << i) != 0)
                .map(|(_, r)| (r.name.clone(), "changed".into())).collect();
            let method = if method_switch { UpdateMethod::Switchover } else { UpdateMethod::Restart };
            let mut touched = Vec::new();
            for _ in 0..20 {
                match next_step(&order, &outdated, "pg-1", &Fencing::None, UpdateStrategy::Unsupervised, method) {
                    RolloutStep::Done => break,
                    RolloutStep::RestartReplica { name, .. } => { prop_assert_ne!(&name, "pg-1"); outdated.remove(&name); touched.push(name); }
                    RolloutStep::SwitchoverTo { .. } | RolloutStep::RecreatePrimary(_) | RolloutStep::RestartPrimaryInPlace(_) => {
                        prop_assert!(outdated.len() == 1 && outdated.contains_key("pg-1"), "primary before replicas: {outdated:?}");
                        outdated.remove("pg-1"); touched.push("pg-1".into());
                    }
                    other => prop_assert!(false, "unexpected {other:?}"),
                }
            }
            prop_assert!(outdated.is_empty());
            if let Some(pos) = touched.iter().position(|t| t == "pg-1") { prop_assert_eq!(pos, touched.len() - 1); }
            let mut dedup = touched.clone(); dedup.sort(); dedup.dedup();
            prop_assert_eq!(dedup.len(), touched.len());
        }
    }
}
