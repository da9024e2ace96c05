use super::*;
use crate::lsn::Lsn;
use crate::sync::{Durability, Method, SyncPolicy, SyncSpec, SyncStandbys};

fn inst(name: &str, primary: bool, lsn: u64) -> ObservedInstance {
    let mut status = if primary {
        InstanceStatus::primary(name, 1, Lsn(lsn))
    } else {
        InstanceStatus::replica(name, 1, Lsn(lsn))
    };
    status.is_pod_ready = true;
    ObservedInstance {
        name: name.into(),
        running: true,
        role: Some(if primary {
            Role::Primary
        } else {
            Role::Replica
        }),
        status,
        outdated: None,
        restart_only: false,
        creating: false,
    }
}

/// A healthy 3-instance cluster, pg-1 primary, asynchronous and in effect.
fn healthy() -> (Policy, Observed) {
    let policy = Policy::new("pg", 3);
    let observed = Observed {
        instances: vec![
            inst("pg-1", true, 500),
            inst("pg-2", false, 400),
            inst("pg-3", false, 450),
        ],
        state: ClusterState {
            current_primary: Some("pg-1".into()),
            target_primary: Some("pg-1".into()),
            ..Default::default()
        },
        sync_in_effect: Some(String::new()),
    };
    (policy, observed)
}

fn now() -> Timestamp {
    Timestamp(1_000_000)
}

fn kill_primary(o: &mut Observed) {
    o.instances[0].status = InstanceStatus::unreachable("pg-1", "postmaster is down");
}

fn stop_receivers(o: &mut Observed) {
    for i in &mut o.instances[1..] {
        i.status.is_wal_receiver_active = false;
    }
}

#[test]
fn a_new_cluster_starts_with_initdb() {
    let p = reconcile(&Policy::new("pg", 3), &Observed::default(), now());
    assert_eq!(
        p.actions,
        vec![Action::CreateInstance {
            name: "pg-1".into(),
            bootstrap: Bootstrap::Initdb
        }]
    );
    assert_eq!(p.state.target_primary.as_deref(), Some("pg-1"));
    assert_eq!(p.phase, ClusterPhase::FirstPrimary);
    let mut o = Observed {
        instances: vec![inst("pg-1", true, 10)],
        state: p.state,
        sync_in_effect: None,
    };
    let p = reconcile(&Policy::new("pg", 3), &o, now());
    assert_eq!(p.phase, ClusterPhase::FirstPrimary);
    assert!(
        p.phase_reason
            .contains("Waiting for pg-1 to become primary")
    );
    // What holds it up, as its platform says, is in the reason.
    let mut failing = o.clone();
    failing.instances[0].status = InstanceStatus::unreachable(
        "pg-1",
        "being created: its bootstrap step failed (exit 1, tried 2 times): error: no backup",
    );
    let p = reconcile(&Policy::new("pg", 3), &failing, now());
    assert!(
        p.phase_reason.contains("its bootstrap step failed")
            && p.phase_reason.contains("no backup"),
        "{}",
        p.phase_reason
    );
    o.state.current_primary = Some("pg-1".into());
    o.sync_in_effect = Some(String::new());
    let p = reconcile(&Policy::new("pg", 3), &o, now());
    assert_eq!(
        p.actions,
        vec![Action::CreateInstance {
            name: "pg-2".into(),
            bootstrap: Bootstrap::Join {
                source: "pg-1".into()
            }
        }]
    );
    assert_eq!(p.phase, ClusterPhase::CreatingReplica);
}

#[test]
fn healthy_cluster_is_a_fixpoint() {
    let (policy, o) = healthy();
    let p = reconcile(&policy, &o, now());
    assert!(p.is_noop(&o.state), "{p:#?}");
    assert_eq!(p.phase, ClusterPhase::Healthy);
    assert_eq!(p.requeue, None);
}

#[test]
fn labels_follow_the_current_primary() {
    let (policy, mut o) = healthy();
    o.instances[0].role = None;
    o.instances[2].role = Some(Role::Unhealthy);
    let p = reconcile(&policy, &o, now());
    assert_eq!(
        p.actions,
        vec![
            Action::SetRole {
                name: "pg-1".into(),
                role: Role::Primary
            },
            Action::SetRole {
                name: "pg-3".into(),
                role: Role::Replica
            }
        ]
    );
}

#[test]
fn failover_marks_pending_waits_for_wal_receivers_then_elects() {
    let (policy, mut o) = healthy();
    kill_primary(&mut o);
    let p = reconcile(&policy, &o, now());
    assert_eq!(p.state.target_primary.as_deref(), Some(PENDING));
    assert!(p.actions.contains(&Action::SetRole {
        name: "pg-1".into(),
        role: Role::Unhealthy
    }));
    assert_eq!(p.phase, ClusterPhase::FailOver);
    assert!(
        p.phase_reason
            .contains("waiting for the WAL receivers of pg-2, pg-3"),
        "{}",
        p.phase_reason
    );
    assert!(
        p.events
            .iter()
            .any(|e| e.reason == "FailingOver" && e.message.contains("postmaster is down"))
    );

    o.state = p.state;
    o.instances[0].role = Some(Role::Unhealthy);
    let p = reconcile(&policy, &o, now());
    assert_eq!(
        p.state.target_primary.as_deref(),
        Some(PENDING),
        "still streaming: no election"
    );

    stop_receivers(&mut o);
    let p = reconcile(&policy, &o, now());
    assert_eq!(
        p.state.target_primary.as_deref(),
        Some("pg-3"),
        "pg-3 has the most WAL"
    );
    let ev = p
        .events
        .iter()
        .find(|e| e.reason == "FailoverTarget")
        .expect("event");
    assert!(
        ev.message
            .contains("pg-3 is the most aligned ready replica")
            && ev.message.contains("pg-2: behind"),
        "{}",
        ev.message
    );
    assert_eq!(p.phase_reason, "Failing over from pg-1 to pg-3");
}

#[test]
fn failover_completes_in_one_loop_when_receivers_are_already_down() {
    let (policy, mut o) = healthy();
    kill_primary(&mut o);
    stop_receivers(&mut o);
    let p = reconcile(&policy, &o, now());
    assert_eq!(p.state.target_primary.as_deref(), Some("pg-3"));
}

#[test]
fn promoted_target_then_labels_move() {
    let (policy, mut o) = healthy();
    kill_primary(&mut o);
    o.state.target_primary = Some("pg-3".into());
    let p = reconcile(&policy, &o, now());
    assert_eq!(p.phase, ClusterPhase::FailOver);
    assert!(p.phase_reason.contains("waiting for pg-3 to be promoted"));
    // pg-3's instance manager promoted it and published itself.
    o.state.current_primary = Some("pg-3".into());
    o.instances[2].status = InstanceStatus::primary("pg-3", 2, Lsn(450));
    o.instances[0].running = false;
    let p = reconcile(&policy, &o, now());
    assert!(p.actions.contains(&Action::StartInstance {
        name: "pg-1".into()
    }));
    assert!(p.actions.contains(&Action::SetRole {
        name: "pg-3".into(),
        role: Role::Primary
    }));
}

#[test]
fn no_failover_on_a_status_hiccup_a_fenced_primary_or_a_planned_restart() {
    let (policy, mut o) = healthy();
    o.instances[0].status.error = Some("timeout".into()); // still pod-ready
    let p = reconcile(&policy, &o, now());
    assert_eq!(p.state.target_primary.as_deref(), Some("pg-1"));
    assert!(
        p.events
            .iter()
            .any(|e| e.reason == "PrimaryStatusCheckFailed")
    );

    let (mut policy, mut o) = healthy();
    kill_primary(&mut o);
    policy.fencing.fence("pg-1");
    let p = reconcile(&policy, &o, now());
    assert_eq!(p.state.target_primary.as_deref(), Some("pg-1"));
    assert!(p.phase_reason.contains("fenced: no failover"));

    let (policy, mut o) = healthy();
    o.instances[0].status.is_primary = false;
    o.instances[0].status.might_be_unavailable = true;
    let p = reconcile(&policy, &o, now());
    assert_eq!(p.state.target_primary.as_deref(), Some("pg-1"));
}

#[test]
fn failover_delay_is_stamped_and_respected() {
    let (mut policy, mut o) = healthy();
    policy.failover_delay = Duration::from_secs(30);
    kill_primary(&mut o);
    let p = reconcile(&policy, &o, now());
    assert_eq!(p.state.failing_since, Some(now()));
    assert_eq!(p.state.target_primary.as_deref(), Some("pg-1"));
    o.state = p.state.clone();
    let p = reconcile(&policy, &o, now().plus(Duration::from_secs(10)));
    assert!(
        p.phase_reason.contains("failing over in 20s"),
        "{}",
        p.phase_reason
    );
    let p = reconcile(&policy, &o, now().plus(Duration::from_secs(30)));
    assert_eq!(p.state.target_primary.as_deref(), Some(PENDING));
    // A primary that recovers clears the stamp.
    let (policy2, mut o2) = healthy();
    o2.state.failing_since = Some(now());
    let p = reconcile(&policy2, &o2, now());
    assert_eq!(p.state.failing_since, None);
    o2.state.failing_since = None;
}

#[test]
fn a_failing_stamp_from_a_clock_that_went_back_counts_from_now() {
    let (mut policy, mut o) = healthy();
    policy.failover_delay = Duration::from_secs(30);
    kill_primary(&mut o);
    // Stamped an hour ahead of the clock the host now reads (its clock stepped back).
    o.state.failing_since = Some(now().plus(Duration::from_secs(3600)));
    let p = reconcile(&policy, &o, now());
    assert_eq!(p.state.failing_since, Some(now()));
    o.state = p.state.clone();
    let p = reconcile(&policy, &o, now().plus(Duration::from_secs(30)));
    assert_eq!(p.state.target_primary.as_deref(), Some(PENDING));
    // The same for a crashed primary restarting in place: its bound counts from now.
    let (policy, mut o) = healthy();
    crash_primary(&mut o, 1);
    o.state.failing_since = Some(now().plus(Duration::from_secs(3600)));
    let p = reconcile(&policy, &o, now().plus(policy.crash_restart_bound));
    assert_eq!(p.state.target_primary.as_deref(), Some("pg-1"));
    o.state = p.state.clone();
    let p = reconcile(&policy, &o, now().plus(policy.crash_restart_bound * 2));
    assert_eq!(p.state.target_primary.as_deref(), Some(PENDING));
}

fn crash_primary(o: &mut Observed, crashes: u32) {
    let mut s = InstanceStatus::unreachable("pg-1", "postmaster killed by signal 9");
    s.restarting_after_crash = true;
    s.recent_crashes = crashes;
    s.decision = "this instance is the target primary".into();
    o.instances[0].status = s;
}

#[test]
fn a_crashed_primary_restarting_in_place_gets_its_bound_then_is_failed_over() {
    let (policy, mut o) = healthy();
    crash_primary(&mut o, 1);
    let p = reconcile(&policy, &o, now());
    assert_eq!(p.state.target_primary.as_deref(), Some("pg-1"));
    assert_eq!(p.phase, ClusterPhase::InplacePrimaryRestart);
    assert!(
        p.events.iter().any(|e| e.reason == "PrimaryCrashed"),
        "{:?}",
        p.events
    );
    assert!(
        !p.actions
            .iter()
            .any(|a| matches!(a, Action::SetRole { .. }))
    );
    o.state = p.state.clone();
    // Back within the bound: no failover, and it says so.
    let mut back = o.clone();
    back.instances[0].status = InstanceStatus::primary("pg-1", 1, Lsn(500));
    let p = reconcile(&policy, &back, now().plus(Duration::from_secs(1)));
    assert_eq!(p.state.failing_since, None);
    assert!(p.events.iter().any(|e| e.reason == "PrimaryRecovered"));
    // Not back: failover once the bound has passed.
    let p = reconcile(&policy, &o, now().plus(Duration::from_secs(4)));
    assert_eq!(p.state.target_primary.as_deref(), Some("pg-1"));
    let p = reconcile(&policy, &o, now().plus(policy.crash_restart_bound));
    assert_eq!(p.state.target_primary.as_deref(), Some(PENDING));
    assert!(p.events.iter().any(|e| e.reason == "CrashRestartTooSlow"));
    // While its manager still tries, nobody is elected; once it stopped trying, the
    // election runs.
    o.state = p.state.clone();
    stop_receivers(&mut o);
    let p = reconcile(&policy, &o, now().plus(Duration::from_secs(6)));
    assert_eq!(p.state.target_primary.as_deref(), Some(PENDING));
    assert!(
        p.phase_reason.contains("stop restarting it"),
        "{}",
        p.phase_reason
    );
    o.instances[0].status.restarting_after_crash = false;
    let p = reconcile(&policy, &o, now().plus(Duration::from_secs(6)));
    assert_eq!(p.state.target_primary.as_deref(), Some("pg-3"));
}

#[test]
fn a_crash_loop_or_a_dead_manager_is_failed_over_at_once() {
    let (policy, mut o) = healthy();
    crash_primary(&mut o, crate::policy::CRASH_LOOP);
    let p = reconcile(&policy, &o, now());
    assert_eq!(p.state.target_primary.as_deref(), Some(PENDING));
    assert!(p.events.iter().any(|e| e.reason == "CrashLoop"));
    let (policy, mut o) = healthy();
    kill_primary(&mut o);
    let p = reconcile(&policy, &o, now());
    assert_eq!(p.state.target_primary.as_deref(), Some(PENDING));
    // A longer failoverDelay also bounds the wait for a restart in place.
    let (mut policy, mut o) = healthy();
    policy.failover_delay = Duration::from_secs(30);
    crash_primary(&mut o, 1);
    let p = reconcile(&policy, &o, now());
    o.state = p.state;
    let p = reconcile(&policy, &o, now().plus(Duration::from_secs(10)));
    assert_eq!(p.state.target_primary.as_deref(), Some("pg-1"));
    let p = reconcile(&policy, &o, now().plus(Duration::from_secs(30)));
    assert_eq!(p.state.target_primary.as_deref(), Some(PENDING));
}

fn required(number: u32) -> SyncPolicy {
    SyncPolicy::Explicit(SyncSpec {
        method: Method::Any,
        number,
        max_standby_names_from_cluster: None,
        standby_names_pre: vec![],
        standby_names_post: vec![],
        durability: Durability::Required,
        failover_quorum: false,
    })
}

#[test]
fn an_unconfirmed_synchronous_configuration_is_looked_at_again_soon() {
    let (mut policy, mut o) = healthy();
    policy.sync = required(1);
    // The primary has not applied the value yet (just promoted, say).
    o.sync_in_effect = Some(String::new());
    let p = reconcile(&policy, &o, now());
    assert!(p.state.published_sync.is_none());
    assert!(p.requeue.is_some_and(|r| r <= SOON), "{:?}", p.requeue);
    // Confirmed: the healthy cadence again.
    o.sync_in_effect = Some(r#"ANY 1 ("pg-2","pg-3","pg-1")"#.into());
    let p = reconcile(&policy, &o, now());
    assert!(p.state.published_sync.is_some());
    assert!(p.requeue.is_none_or(|r| r > SOON), "{:?}", p.requeue);
}

#[test]
fn required_durability_gates_failover_on_the_quorum() {
    let (mut policy, mut o) = healthy();
    policy.sync = required(1);
    // Steady state publishes what the primary confirmed.
    o.sync_in_effect = Some(r#"ANY 1 ("pg-2","pg-3","pg-1")"#.into());
    let p = reconcile(&policy, &o, now());
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    assert_eq!(p.state.published_sync.as_ref().map(|s| s.number), Some(1));
    o.state = p.state;

    // The primary and pg-2 are lost: R + W > N is 1 + 1 > 2, false: refused.
    kill_primary(&mut o);
    o.instances[1].status = InstanceStatus::unreachable("pg-2", "node lost");
    stop_receivers(&mut o);
    let p = reconcile(&policy, &o, now());
    assert_eq!(p.state.target_primary.as_deref(), Some("pg-1"));
    assert!(
        p.events
            .iter()
            .any(|e| e.reason == "FailoverRefused" && e.message.contains("1 + 1 > 2"))
    );

    // pg-2 comes back: 2 + 1 > 2, failover allowed.
    o.instances[1] = inst("pg-2", false, 400);
    stop_receivers(&mut o);
    let p = reconcile(&policy, &o, now());
    assert_eq!(p.state.target_primary.as_deref(), Some("pg-3"));
}

#[test]
fn quorum_is_checked_again_at_election_time() {
    // Simulator seed 1355: the quorum held when the failover started; while the WAL
    // receivers timed out, pg-2 (holding the acknowledged commits) was lost too.
    let (mut policy, mut o) = healthy();
    policy.sync = required(1);
    o.state.published_sync = Some(SyncStandbys {
        method: Method::Any,
        number: 1,
        names: vec!["pg-2".into(), "pg-3".into(), "pg-1".into()],
    });
    o.state.target_primary = Some(PENDING.into());
    o.instances[0].status = InstanceStatus::unreachable("pg-1", "node unreachable");
    o.instances[1].status = InstanceStatus::unreachable("pg-2", "node unreachable");
    stop_receivers(&mut o);
    let p = reconcile(&policy, &o, now());
    assert!(
        p.events.iter().any(|e| e.reason == "FailoverRefused"),
        "{:?}",
        p.events
    );
    assert_eq!(
        p.state.target_primary.as_deref(),
        Some("pg-1"),
        "cancelled: pg-1's instance is still there"
    );
    assert!(
        p.phase_reason.contains("failover cancelled"),
        "{}",
        p.phase_reason
    );
    // Its pod is gone too: the failover stays pending rather than electing pg-3.
    o.instances[0].running = false;
    let p = reconcile(&policy, &o, now());
    assert_eq!(p.state.target_primary.as_deref(), Some(PENDING));
}

#[test]
fn changing_sync_names_unpublishes_until_confirmed() {
    let (mut policy, mut o) = healthy();
    policy.sync = required(1);
    let p = reconcile(&policy, &o, now());
    assert!(
        matches!(&p.actions[..], [Action::ApplySyncStandbyNames { value, config: Some(c) }]
            if value == r#"ANY 1 ("pg-2","pg-3","pg-1")"# && c.number == 1),
        "{:?}",
        p.actions
    );
    assert_eq!(p.state.published_sync, None);
    // A failover now is refused: nothing is known to be in effect.
    o.state = p.state;
    kill_primary(&mut o);
    stop_receivers(&mut o);
    let p = reconcile(&policy, &o, now());
    assert!(
        p.events.iter().any(|e| e.reason == "FailoverRefused"),
        "{:?}",
        p.events
    );
}

#[test]
fn reordering_the_same_standbys_keeps_the_failover_quorum() {
    // Found on a real API server: pg-2 not ready lists it last; once it is ready the
    // names are re-ordered, and a primary lost before it applied the new order could
    // not be failed over from. The standbys and their number are the same: the
    // configuration in effect still answers the quorum question.
    let (mut policy, mut o) = healthy();
    policy.sync = required(1);
    let before = SyncStandbys {
        method: Method::Any,
        number: 1,
        names: vec!["pg-3".into(), "pg-2".into(), "pg-1".into()],
    };
    o.state.published_sync = Some(before.clone());
    o.sync_in_effect = Some(sync::render(Some(&before)));
    let p = reconcile(&policy, &o, now());
    assert!(
        matches!(&p.actions[..], [Action::ApplySyncStandbyNames { value, .. }]
            if value == r#"ANY 1 ("pg-2","pg-3","pg-1")"#),
        "{:?}",
        p.actions
    );
    assert_eq!(p.state.published_sync, Some(before.clone()));
    o.state = p.state;
    kill_primary(&mut o);
    stop_receivers(&mut o);
    let p = reconcile(&policy, &o, now());
    assert_eq!(p.state.target_primary.as_deref(), Some("pg-3"), "{p:#?}");

    // A different set of standbys is another matter: nothing is confirmed until applied.
    let (mut policy, mut o) = healthy();
    policy.sync = required(1);
    let other = SyncStandbys {
        method: Method::Any,
        number: 1,
        names: vec!["pg-3".into(), "pg-1".into()],
    };
    o.state.published_sync = Some(other.clone());
    o.sync_in_effect = Some(sync::render(Some(&other)));
    let p = reconcile(&policy, &o, now());
    assert_eq!(p.state.published_sync, None);
}

#[test]
fn a_primary_that_does_not_answer_keeps_the_confirmed_quorum() {
    // The loop that first finds the primary silent (its node just crashed) fails over on
    // the configuration confirmed before, which it still runs.
    let (mut policy, mut o) = healthy();
    policy.sync = required(1);
    o.sync_in_effect = Some(r#"ANY 1 ("pg-2","pg-3","pg-1")"#.into());
    let p = reconcile(&policy, &o, now());
    assert!(p.state.published_sync.is_some());
    o.state = p.state;
    o.instances[0].status = InstanceStatus::unreachable("pg-1", "connection refused");
    o.sync_in_effect = None;
    let p = reconcile(&policy, &o, now());
    assert!(p.state.published_sync.is_some(), "{p:#?}");
    o.state = p.state;
    kill_primary(&mut o);
    stop_receivers(&mut o);
    let p = reconcile(&policy, &o, now());
    assert!(
        !p.events.iter().any(|e| e.reason == "FailoverRefused"),
        "{:?}",
        p.events
    );
}

#[test]
fn an_instance_being_created_is_in_no_synchronous_configuration() {
    // A replica copying the primary has never streamed: listing it would make a failover
    // during the copy wait for a quorum it can never be part of.
    let (mut policy, mut o) = healthy();
    policy.sync = required(1);
    policy.instances = 4;
    o.sync_in_effect = Some(r#"ANY 1 ("pg-2","pg-3","pg-1")"#.into());
    let mut joining = inst("pg-4", false, 0);
    joining.status = InstanceStatus::unreachable("pg-4", "being created (join in progress)");
    joining.creating = true;
    o.instances.push(joining);
    let p = reconcile(&policy, &o, now());
    assert!(
        !p.actions
            .iter()
            .any(|a| matches!(a, Action::ApplySyncStandbyNames { .. })),
        "{:?}",
        p.actions
    );
    assert!(p.state.published_sync.is_some());
    o.state = p.state;
    kill_primary(&mut o);
    stop_receivers(&mut o);
    o.instances[3].status = InstanceStatus::unreachable("pg-4", "being created (join in progress)");
    let p = reconcile(&policy, &o, now());
    assert_eq!(p.state.target_primary.as_deref(), Some("pg-3"), "{p:#?}");
}

#[test]
fn guards_multiple_primaries_and_full_wal_disk() {
    let (policy, mut o) = healthy();
    o.instances[1].status.is_primary = true;
    let p = reconcile(&policy, &o, now());
    assert!(p.events.iter().any(|e| e.reason == "MultiplePrimaries"));
    assert_eq!(p.requeue, Some(Duration::from_secs(5)));

    let (policy, mut o) = healthy();
    kill_primary(&mut o);
    o.instances[2].status.wal_disk_full = true;
    let p = reconcile(&policy, &o, now());
    assert_eq!(p.phase, ClusterPhase::NotEnoughDiskSpace);
    assert_eq!(p.state.target_primary.as_deref(), Some("pg-1"));
}

#[test]
fn user_switchover_unlabels_the_old_primary() {
    let (policy, mut o) = healthy();
    o.state.target_primary = Some("pg-2".into());
    let p = reconcile(&policy, &o, now());
    assert_eq!(p.phase, ClusterPhase::Switchover);
    assert_eq!(
        p.actions,
        vec![Action::SetRole {
            name: "pg-1".into(),
            role: Role::Unhealthy
        }]
    );
}

#[test]
fn scale_down_removes_the_highest_serial_replica() {
    let (mut policy, o) = healthy();
    policy.instances = 2;
    let p = reconcile(&policy, &o, now());
    assert_eq!(
        p.actions,
        vec![Action::DeleteInstance {
            name: "pg-3".into()
        }]
    );
}

#[test]
fn rolling_update_replicas_first_primary_last() {
    let (mut policy, mut o) = healthy();
    for i in &mut o.instances {
        i.outdated = Some("image changed".into());
    }
    let p = reconcile(&policy, &o, now());
    assert_eq!(
        p.actions,
        vec![Action::StopInstance {
            name: "pg-2".into()
        }],
        "least advanced replica first"
    );
    assert_eq!(p.phase, ClusterPhase::Upgrade);
    o.instances[1].outdated = None;
    o.instances[2].outdated = None;
    policy.primary_update_method = crate::policy::UpdateMethod::Switchover;
    let p = reconcile(&policy, &o, now());
    assert_eq!(p.state.target_primary.as_deref(), Some("pg-3"));
    assert_eq!(p.phase, ClusterPhase::Switchover);
}

#[test]
fn hibernation_stops_primary_first_and_rehydrates() {
    let (mut policy, mut o) = healthy();
    policy.hibernation = true;
    let p = reconcile(&policy, &o, now());
    assert_eq!(
        p.actions,
        vec![Action::StopInstance {
            name: "pg-1".into()
        }]
    );
    o.state = p.state;
    o.instances[0].running = false;
    let p = reconcile(&policy, &o, now());
    assert_eq!(
        p.actions,
        vec![Action::StopInstance {
            name: "pg-3".into()
        }]
    );
    for i in &mut o.instances {
        i.running = false;
    }
    let p = reconcile(&policy, &o, now());
    assert!(p.actions.is_empty() && p.phase_reason.contains("Hibernated"));
    policy.hibernation = false;
    o.state = p.state;
    let p = reconcile(&policy, &o, now());
    assert_eq!(
        p.actions[0],
        Action::StartInstance {
            name: "pg-1".into()
        },
        "primary first"
    );
    assert!(!p.state.hibernating);
}

use proptest::prelude::*;

fn arb_observed() -> impl Strategy<Value = (Policy, Observed)> {
    (
        1u32..8,
        prop::collection::vec(
            (
                any::<bool>(),
                any::<bool>(),
                any::<bool>(),
                any::<bool>(),
                0u64..1000,
                1u32..3,
            ),
            1..8,
        ),
        prop_oneof![
            Just(None),
            Just(Some("pg-1")),
            Just(Some("pg-2")),
            Just(Some(PENDING))
        ],
        prop_oneof![Just(None), Just(Some("pg-1")), Just(Some("pg-3"))],
        0u32..6,
    )
        .prop_map(|(want, insts, target, current, fenced)| {
            let mut policy = Policy::new("pg", want);
            policy.sync = required(1);
            policy.fencing.fence(&format!("pg-{fenced}"));
            let instances = insts
                .iter()
                .enumerate()
                .map(|(i, (running, reachable, primary, wal, lsn, tl))| {
                    let name = format!("pg-{}", i + 1);
                    let mut s = if *primary {
                        InstanceStatus::primary(&name, *tl, Lsn(*lsn))
                    } else {
                        InstanceStatus::replica(&name, *tl, Lsn(*lsn))
                    };
                    s.is_wal_receiver_active = *wal;
                    if !reachable {
                        s.error = Some("down".into());
                        s.is_pod_ready = false;
                    }
                    ObservedInstance {
                        name,
                        running: *running,
                        role: None,
                        status: s,
                        outdated: None,
                        restart_only: false,
                        creating: false,
                    }
                })
                .collect();
            let observed = Observed {
                instances,
                state: ClusterState {
                    current_primary: current.map(String::from),
                    target_primary: target.map(String::from),
                    ..Default::default()
                },
                sync_in_effect: None,
            };
            (policy, observed)
        })
}

proptest! {
    /// Invariant 2 (protocol half): whatever the observation, a newly chosen target after
    /// `pending` is a reachable, ready, unfenced replica, and only once no replica streams.
    #[test]
    fn new_targets_are_eligible_and_chosen_after_receivers_stop((policy, o) in arb_observed()) {
        let plan = reconcile(&policy, &o, now());
        let before = o.state.target_primary.as_deref();
        let after = plan.state.target_primary.as_deref();
        let current = o.state.current_primary.as_deref();
        if let Some(t) = after
            && before == Some(PENDING) && t != PENDING && Some(t) != current
        {
            let chosen = o.instances.iter().find(|i| i.name == t).expect("target exists");
            prop_assert!(chosen.running && chosen.status.is_reachable() && chosen.status.is_pod_ready);
            prop_assert!(!chosen.status.is_primary && !policy.fencing.is_fenced(t));
            prop_assert!(!o.instances.iter().any(|i| i.running && i.status.is_reachable() && Some(i.name.as_str()) != current && i.status.is_wal_receiver_active));
        }
        // Every decision comes with a phase, and warnings come with a message.
        for e in &plan.events { prop_assert!(!e.message.is_empty()); }
    }

    /// Invariant 6: a healthy cluster of any size is a fixpoint of reconcile.
    #[test]
    fn healthy_clusters_are_fixpoints(n in 1u32..10, lags in prop::collection::vec(0u64..50, 9)) {
        let mut policy = Policy::new("pg", n);
        policy.sync = required(1);
        let instances: Vec<ObservedInstance> = (1..=n).map(|i| inst(&format!("pg-{i}"), i == 1, 1000 - lags[(i - 1) as usize])).collect();
        let mut o = Observed { instances, state: ClusterState { current_primary: Some("pg-1".into()), target_primary: Some("pg-1".into()), ..Default::default() }, sync_in_effect: None };
        for _ in 0..3 {
            let plan = reconcile(&policy, &o, now());
            for a in &plan.actions {
                if let Action::ApplySyncStandbyNames { value, .. } = a { o.sync_in_effect = Some(value.clone()); }
            }
            o.state = plan.state;
        }
        let plan = reconcile(&policy, &o, now());
        prop_assert!(plan.is_noop(&o.state), "{:?}", plan);
        prop_assert_eq!(plan.phase, ClusterPhase::Healthy);
    }
}

#[test]
fn no_failover_while_a_just_unfenced_primary_starts_again() {
    // The fence was lifted in the spec, but the primary still reports being fenced (its
    // instance manager has not started PostgreSQL yet), then starting on purpose.
    let (policy, mut o) = healthy();
    o.instances[0].status = InstanceStatus::unreachable("pg-1", "fenced: PostgreSQL is stopped");
    o.instances[0].status.is_fenced = true;
    stop_receivers(&mut o);
    let p = reconcile(&policy, &o, now());
    assert_eq!(
        p.state.target_primary.as_deref(),
        Some("pg-1"),
        "{:?}",
        p.events
    );
    o.instances[0].status.is_fenced = false;
    o.instances[0].status.might_be_unavailable = true;
    let p = reconcile(&policy, &o, now());
    assert_eq!(p.state.target_primary.as_deref(), Some("pg-1"));
    // A crash (nothing planned) still fails over.
    o.instances[0].status.might_be_unavailable = false;
    let p = reconcile(&policy, &o, now());
    assert_eq!(p.state.target_primary.as_deref(), Some("pg-3"));
}

#[test]
fn failing_over_from_a_primary_that_does_not_answer_kills_it_first() {
    let (policy, mut o) = healthy();
    kill_primary(&mut o); // running, but nothing answers
    let p = reconcile(&policy, &o, now());
    assert_eq!(p.state.target_primary.as_deref(), Some(PENDING));
    assert!(
        p.actions.iter().any(|a| matches!(a, Action::KillInstance { name, reason } if name == "pg-1" && reason.contains("postmaster is down"))),
        "{:?}",
        p.actions
    );
    // Its manager answered (a crash loop): it is not hung, nothing to kill.
    let (policy, mut o) = healthy();
    crash_primary(&mut o, crate::policy::CRASH_LOOP);
    o.instances[0].status.instance_manager_version = "0.1.0".into();
    let p = reconcile(&policy, &o, now());
    assert_eq!(p.state.target_primary.as_deref(), Some(PENDING));
    assert!(
        !p.actions
            .iter()
            .any(|a| matches!(a, Action::KillInstance { .. })),
        "{:?}",
        p.actions
    );
}
