use super::*;
use crate::reconcile::reconcile;
use crate::sync::SyncSpec;

fn explicit(durability: Durability) -> SyncPolicy {
    SyncPolicy::Explicit(SyncSpec {
        method: Method::Any,
        number: 1,
        max_standby_names_from_cluster: None,
        standby_names_pre: vec![],
        standby_names_post: vec![],
        durability,
        failover_quorum: false,
    })
}

fn sum(
    seeds: std::ops::Range<u64>,
    instances: u32,
    sync: &SyncPolicy,
    op: &mut dyn Operator,
) -> (SimReport, Vec<String>) {
    let mut tot = SimReport::default();
    let mut firsts = Vec::new();
    for seed in seeds {
        let r = run_with(&SimConfig::new(seed, instances, sync.clone()), op);
        tot.failovers += r.failovers;
        tot.acked += r.acked;
        tot.acked_lost += r.acked_lost;
        for (k, v) in &r.violations {
            *tot.violations.entry(*k).or_default() += v;
        }
        firsts.extend(r.first_violation);
    }
    (tot, firsts)
}

#[test]
fn rng_is_deterministic_and_spread() {
    let mut a = Rng::new(7);
    let mut b = Rng::new(7);
    let xs: Vec<u64> = (0..5).map(|_| a.next_u64()).collect();
    assert_eq!(xs, (0..5).map(|_| b.next_u64()).collect::<Vec<_>>());
    let mut r = Rng::new(1);
    let hits = (0..10_000).filter(|_| r.chance(0.25)).count();
    assert!((2_000..3_000).contains(&hits), "{hits}");
    assert!((0..1000).all(|_| r.below(3) < 3));
}

#[test]
fn without_faults_the_cluster_bootstraps_and_converges() {
    let mut cfg = SimConfig::new(1, 3, explicit(Durability::Required));
    cfg.faults = FaultMix::NONE;
    let r = run(&cfg);
    assert!(r.converged, "{r}");
    assert_eq!(r.total_violations(), 0, "{:?}", r.first_violation);
    assert!(r.acked > 500, "clients committed: {r}");
    assert_eq!(r.failovers, 0);
}

#[test]
fn same_seed_same_run() {
    let cfg = SimConfig::new(42, 3, SyncPolicy::Async);
    assert_eq!(format!("{:?}", run(&cfg)), format!("{:?}", run(&cfg)));
}

#[test]
fn safe_policies_hold_every_invariant() {
    for (instances, sync) in [
        (3, explicit(Durability::Required)),
        (5, explicit(Durability::Required)),
        (3, SyncPolicy::Async),
        (3, SyncPolicy::Legacy { min: 1, max: 1 }),
        (2, explicit(Durability::Preferred)),
    ] {
        let (tot, firsts) = sum(0..60, instances, &sync, &mut RealOperator);
        assert_eq!(
            tot.total_violations(),
            0,
            "{instances} instances {sync:?}: {tot}\n{}",
            firsts.join("\n")
        );
        assert!(
            tot.failovers > 20,
            "the faults must exercise failover: {tot}"
        );
    }
}

/// An old primary whose pg_rewind fails is cloned again from the new primary: never
/// started on its diverged data, and the cluster converges.
#[test]
fn failed_rewinds_end_in_a_new_clone_and_every_invariant_holds() {
    let (mut reclones, mut converged) = (0, 0);
    for seed in 0..60 {
        let mut cfg = SimConfig::new(seed, 3, explicit(Durability::Required));
        cfg.faults = FaultMix::parse("crash,kill,partition,rewind").expect("faults");
        let r = run(&cfg);
        assert_eq!(
            r.total_violations(),
            0,
            "seed {seed}: {:?}",
            r.first_violation
        );
        assert_eq!(r.acked_lost, 0, "seed {seed}: {r}");
        reclones += r.reclones;
        converged += u32::from(r.converged);
    }
    assert!(
        reclones > 5,
        "rewinds failed and were cloned again: {reclones}"
    );
    assert!(converged >= 55, "{converged} of 60 converged");
}

#[test]
fn required_loses_no_acknowledged_commit_and_async_does() {
    let (req, _) = sum(0..80, 3, &explicit(Durability::Required), &mut RealOperator);
    assert_eq!(req.acked_lost, 0, "{req}");
    let (asy, _) = sum(0..80, 3, &SyncPolicy::Async, &mut RealOperator);
    assert!(
        asy.acked_lost > 0,
        "asynchronous replication loses commits on failover: {asy}"
    );
}

/// Elects the *least* aligned replica instead of the most aligned one.
struct LeastAligned;
impl Operator for LeastAligned {
    fn reconcile(&mut self, policy: &Policy, observed: &Observed, now: Timestamp) -> Plan {
        let mut plan = reconcile(policy, observed, now);
        let elected = plan.state.target_primary.clone();
        let current = observed.state.current_primary.clone();
        if elected != observed.state.target_primary
            && elected.as_deref() != Some(PENDING)
            && elected != current
        {
            let worst = observed
                .instances
                .iter()
                .filter(|i| {
                    i.running
                        && i.status.is_reachable()
                        && !i.status.is_primary
                        && i.status.is_pod_ready
                })
                .filter(|i| Some(&i.name) != current.as_ref())
                .min_by_key(|i| i.status.wal_position())
                .map(|i| i.name.clone());
            if worst.is_some() {
                plan.state.target_primary = worst;
            }
        }
        plan
    }
}

/// Elects as soon as it marks `pending`, without waiting for WAL receivers to stop.
struct NoWait;
impl Operator for NoWait {
    fn reconcile(&mut self, policy: &Policy, observed: &Observed, now: Timestamp) -> Plan {
        let mut plan = reconcile(policy, observed, now);
        if plan.state.target_primary.as_deref() == Some(PENDING) {
            let statuses: Vec<InstanceStatus> = observed
                .instances
                .iter()
                .map(|i| i.status.clone())
                .collect();
            let current = observed.state.current_primary.as_deref();
            let mut candidates: Vec<&InstanceStatus> = statuses
                .iter()
                .filter(|s| s.is_reachable() && !s.is_primary && Some(s.name.as_str()) != current)
                .collect();
            candidates.sort_by_key(|s| std::cmp::Reverse(s.wal_position()));
            if let Some(best) = candidates.first() {
                plan.state.target_primary = Some(best.name.clone());
            }
        }
        plan
    }
}

/// Ignores the failover quorum: fails over even when R + W <= N.
struct IgnoreQuorum;
impl Operator for IgnoreQuorum {
    fn reconcile(&mut self, policy: &Policy, observed: &Observed, now: Timestamp) -> Plan {
        let plan = reconcile(policy, observed, now);
        if plan.events.iter().any(|e| e.reason == "FailoverRefused") {
            let mut unguarded = policy.clone();
            unguarded.sync = SyncPolicy::Async;
            let mut p = reconcile(&unguarded, observed, now);
            p.actions
                .retain(|a| !matches!(a, Action::ApplySyncStandbyNames { .. }));
            p.state.published_sync = plan.state.published_sync.clone();
            return p;
        }
        plan
    }
}

#[test]
fn broken_policies_are_caught() {
    let (t, _) = sum(0..40, 3, &SyncPolicy::Async, &mut LeastAligned);
    assert!(
        t.violations.get(&Invariant::Election).copied().unwrap_or(0) > 0,
        "least aligned: {t}"
    );
    let (t, firsts) = sum(0..40, 3, &SyncPolicy::Async, &mut NoWait);
    assert!(
        t.violations.get(&Invariant::Election).copied().unwrap_or(0) > 0,
        "no wait: {t}"
    );
    assert!(
        firsts.iter().any(|f| f.contains("still streamed")),
        "{firsts:?}"
    );
    let (t, firsts) = sum(
        0..150,
        3,
        &explicit(Durability::Required),
        &mut IgnoreQuorum,
    );
    assert!(
        t.violations
            .get(&Invariant::AckedCommitLost)
            .copied()
            .unwrap_or(0)
            > 0,
        "ignored quorum: {t}"
    );
    assert!(
        firsts
            .iter()
            .any(|f| f.contains("acknowledged commits were beyond it")),
        "{firsts:?}"
    );
}

/// Never relabels anything: the old primary keeps the `-rw` label and no new primary gets it.
struct NeverRelabels;
impl Operator for NeverRelabels {
    fn reconcile(&mut self, policy: &Policy, observed: &Observed, now: Timestamp) -> Plan {
        let mut plan = reconcile(policy, observed, now);
        if observed.instances.iter().any(|i| i.role.is_some()) {
            plan.actions
                .retain(|a| !matches!(a, Action::SetRole { .. }));
        }
        plan
    }
}

#[test]
fn a_cluster_that_cannot_heal_is_reported() {
    let (t, _) = sum(0..20, 3, &SyncPolicy::Async, &mut NeverRelabels);
    assert!(
        t.violations
            .get(&Invariant::Convergence)
            .copied()
            .unwrap_or(0)
            > 0,
        "{t}"
    );
}

use proptest::prelude::{ProptestConfig, any, prop_assert_eq, proptest};
proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// Invariants 1–6 hold for any seed and cluster size under `required`.
    #[test]
    fn any_seed_required_is_safe(seed in any::<u64>(), instances in 2u32..6) {
        let r = run(&SimConfig::new(seed, instances, explicit(Durability::Required)));
        prop_assert_eq!(r.total_violations(), 0, "{:?}", r.first_violation);
        prop_assert_eq!(r.acked_lost, 0);
    }
}

#[test]
fn crash_restarts_in_place_never_make_two_primaries() {
    for sync in [explicit(Durability::Required), SyncPolicy::Async] {
        let mut tot = SimReport::default();
        let mut firsts = Vec::new();
        for seed in 0..200 {
            let mut cfg = SimConfig::new(seed, 3, sync.clone());
            cfg.faults = FaultMix::parse("crash").expect("valid");
            let r = run(&cfg);
            assert!(r.converged, "seed {seed}: {r}");
            tot.failovers += r.failovers;
            for (k, v) in &r.violations {
                *tot.violations.entry(*k).or_default() += v;
            }
            firsts.extend(r.first_violation);
        }
        assert_eq!(tot.total_violations(), 0, "{sync:?}: {}", firsts.join("\n"));
        // Slow crash recoveries (longer than the operator waits) are failed over.
        assert!(tot.failovers > 0, "{tot}");
    }
}
