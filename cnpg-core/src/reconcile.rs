//! The cluster decision: `reconcile(policy, observed, now) -> Plan`.
//!
//! One call looks at everything the operator observed (instances, their status reports,
//! the persisted cluster state) and returns what to do: actions for the platform, the new
//! cluster state and phase, when to look again, and events that explain each decision. It
//! holds no state between calls — what must survive (target primary, failing-since stamp,
//! the synchronous configuration in effect) is in [`ClusterState`], persisted by the host in
//! the Cluster status — so an operator restarted at any moment resumes from the status and
//! the running instances and makes the same decision again.
//!
//! The failover protocol (upstream `replicas.go`, reference §3.5), re-evaluated each call:
//! 1. the primary is failing: wait `failoverDelay`; refuse if the primary is fenced, if
//!    several instances claim to be primary, if a WAL disk is full, or if the failover
//!    quorum (R + W > N) is not met;
//! 2. set `targetPrimary: pending` and label the old primary `unhealthy`, which removes it
//!    from `-rw` at once;
//! 3. wait until no replica's WAL receiver is active, so no replica still takes WAL from
//!    the old primary and the ranking cannot change under our feet;
//! 4. elect the most aligned ready replica and make it the target; its instance manager
//!    promotes it and publishes `currentPrimary`, and the labels follow.

use crate::election::{self, Election};
use crate::hibernation::{self, HibernationStep, Running};
use crate::naming::{self, PENDING, Role};
use crate::phase::ClusterPhase;
use crate::policy::Policy;
use crate::rollout::{self, RolloutInstance, RolloutStep};
use crate::status::InstanceStatus;
use crate::sync::{self, SyncStandbys};
use crate::time::Timestamp;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// The part of the Cluster status the decisions read and write (persisted by hosts).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ClusterState {
    /// The instance currently primary (written by its instance manager).
    pub current_primary: Option<String>,
    /// The instance that should be primary (`pending` during a failover's first step).
    pub target_primary: Option<String>,
    /// Since when the primary is failing, while `failoverDelay` runs.
    pub failing_since: Option<Timestamp>,
    /// The synchronous configuration the primary confirmed it has in effect; `None` while
    /// unknown or being changed, which refuses quorum-gated failovers (upstream #8790).
    pub published_sync: Option<SyncStandbys>,
    /// Whether hibernation has begun.
    pub hibernating: bool,
    /// The primary's pod is being recreated on purpose (rolling update without
    /// switchover): its absence is not a failure, so no failover until it is back.
    pub primary_restarting: bool,
}

/// One instance (a storage group) as the platform sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedInstance {
    /// Name, `<cluster>-<serial>`.
    pub name: String,
    /// Whether its pod (or local process) exists.
    pub running: bool,
    /// The role label it carries now.
    pub role: Option<Role>,
    /// Its status report (with `error` set when it could not be read).
    pub status: InstanceStatus,
    /// Why it must be updated (image, pod template, restart-requiring parameter), if it must.
    pub outdated: Option<String>,
    /// Whether a PostgreSQL restart suffices for that update (parameters only).
    pub restart_only: bool,
    /// Its storage is still being made (initdb, a recovery, a join copying the primary):
    /// it has never streamed, so it holds no acknowledged commit, and it joins the
    /// synchronous configuration once made. Listed before, a failover while it copies
    /// could not reach the quorum (a commit might have waited for it alone).
    pub creating: bool,
}

/// Everything observed in one loop.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// Every instance that has storage, running or not.
    pub instances: Vec<ObservedInstance>,
    /// The persisted state.
    pub state: ClusterState,
    /// `synchronous_standby_names` the primary reports in effect (`None`: unknown).
    pub sync_in_effect: Option<String>,
}

/// How a new instance gets its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bootstrap {
    /// `initdb`: the first instance of a new cluster.
    Initdb,
    /// `pg_basebackup` from the primary.
    Join {
        /// The primary to clone.
        source: String,
    },
}

/// Something for the platform to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create an instance with new storage.
    CreateInstance {
        /// Its name.
        name: String,
        /// How it gets its data.
        bootstrap: Bootstrap,
    },
    /// (Re)start the pod of an instance on its existing storage.
    StartInstance {
        /// The instance.
        name: String,
    },
    /// Stop an instance's pod and keep its storage (rolling update, hibernation).
    StopInstance {
        /// The instance.
        name: String,
    },
    /// Delete an instance and its storage (scale down).
    DeleteInstance {
        /// The instance.
        name: String,
    },
    /// Label an instance's pod with a role (what `-rw` and `-ro` select on).
    SetRole {
        /// The instance.
        name: String,
        /// The role.
        role: Role,
    },
    /// Set `synchronous_standby_names` on the primary (with a reload).
    ApplySyncStandbyNames {
        /// The rendered value (`""` for asynchronous).
        value: String,
        /// The same, structured (`None` for asynchronous).
        config: Option<SyncStandbys>,
    },
    /// Restart the primary's PostgreSQL in place (smart, then fast).
    RestartInPlace {
        /// The instance.
        name: String,
    },
    /// Kill every process of an instance at once, keeping its storage: the platform's
    /// fencing of a primary that is being failed over from while it may still run without
    /// answering (hung, cut off), so it can never wake up, or be reached again, still
    /// accepting writes beside the new primary. A platform that cannot reach it leaves it
    /// to the instance manager's own check of the target primary.
    KillInstance {
        /// The instance.
        name: String,
        /// Why, for people.
        reason: String,
    },
}

/// Normal or Warning, as Kubernetes events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Something expected happened.
    Normal,
    /// Something needs attention.
    Warning,
}

/// An event explaining a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Normal or Warning.
    pub type_: EventType,
    /// Short CamelCase reason (`FailingOver`, `FailoverTarget`, ...).
    pub reason: &'static str,
    /// A sentence for people.
    pub message: String,
}

/// What to do after one reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Actions for the platform, in order.
    pub actions: Vec<Action>,
    /// The new persisted state.
    pub state: ClusterState,
    /// The new phase.
    pub phase: ClusterPhase,
    /// Why the cluster is in that phase.
    pub phase_reason: String,
    /// Look again after this long even if nothing changes.
    pub requeue: Option<Duration>,
    /// Events explaining the decisions.
    pub events: Vec<Event>,
}

impl Plan {
    /// Whether the plan changes nothing: no action, same state, no event.
    pub fn is_noop(&self, before: &ClusterState) -> bool {
        self.actions.is_empty() && self.events.is_empty() && &self.state == before
    }
}

const SOON: Duration = Duration::from_secs(1);
const GUARD: Duration = Duration::from_secs(5);
const SLOW: Duration = Duration::from_secs(10);

struct Builder {
    plan: Plan,
    /// The primary has not confirmed the synchronous configuration yet. A quorum-gated
    /// failover is refused until it has, so the next look comes soon whatever the phase
    /// asks: a host that looks again only on the healthy cadence would leave that window
    /// open for its whole period (found on a real API server: a primary hung 20 s after a
    /// switchover could not be failed over from).
    confirm_soon: bool,
}

impl Builder {
    fn act(&mut self, a: Action) {
        self.plan.actions.push(a);
    }
    fn event(&mut self, type_: EventType, reason: &'static str, message: String) {
        self.plan.events.push(Event {
            type_,
            reason,
            message,
        });
    }
    fn phase(
        mut self,
        phase: ClusterPhase,
        reason: impl Into<String>,
        requeue: Option<Duration>,
    ) -> Plan {
        self.plan.phase = phase;
        self.plan.phase_reason = reason.into();
        self.plan.requeue = if self.confirm_soon {
            Some(requeue.map_or(SOON, |r| r.min(SOON)))
        } else {
            requeue
        };
        self.plan
    }
}

/// Decides what to do with a cluster now. Pure: same inputs, same plan.
///
/// ```
/// use cnpg_core::lsn::Lsn;
/// use cnpg_core::naming::Role;
/// use cnpg_core::policy::Policy;
/// use cnpg_core::reconcile::{reconcile, ClusterState, Observed, ObservedInstance};
/// use cnpg_core::status::InstanceStatus;
/// use cnpg_core::time::Timestamp;
///
/// let instance = |status: InstanceStatus, role| ObservedInstance {
///     name: status.name.clone(), running: true, role: Some(role), status,
///     outdated: None, restart_only: false, creating: false,
/// };
/// let observed = Observed {
///     instances: vec![
///         instance(InstanceStatus::unreachable("pg-1", "postmaster is down"), Role::Primary),
///         instance(InstanceStatus { is_wal_receiver_active: false, ..InstanceStatus::replica("pg-2", 1, Lsn(90)) }, Role::Replica),
///     ],
///     state: ClusterState {
///         current_primary: Some("pg-1".into()),
///         target_primary: Some("pg-1".into()),
///         ..Default::default()
///     },
///     sync_in_effect: Some(String::new()),
/// };
/// let plan = reconcile(&Policy::new("pg", 2), &observed, Timestamp(0));
/// assert_eq!(plan.state.target_primary.as_deref(), Some("pg-2"));
/// assert_eq!(plan.phase_reason, "Failing over from pg-1 to pg-2");
/// assert!(plan.events.iter().any(|e| e.reason == "FailoverTarget"));
/// ```
pub fn reconcile(policy: &Policy, observed: &Observed, now: Timestamp) -> Plan {
    let mut b = Builder {
        plan: Plan {
            state: observed.state.clone(),
            ..empty_plan()
        },
        confirm_soon: false,
    };
    if policy.reconciliation_disabled {
        return b.phase(
            ClusterPhase::Healthy,
            "reconciliation is disabled (cnpg.io/reconciliationLoop); no self-healing or failover",
            None,
        );
    }
    let instances = &observed.instances;

    // A new cluster: create the first instance with initdb and make it the target.
    if instances.is_empty() {
        if policy.hibernation {
            return b.phase(ClusterPhase::Healthy, "hibernated", None);
        }
        let name = naming::instance_name(&policy.cluster, 1);
        b.act(Action::CreateInstance {
            name: name.clone(),
            bootstrap: Bootstrap::Initdb,
        });
        b.plan.state.target_primary = Some(name.clone());
        b.event(
            EventType::Normal,
            "CreatingInstance",
            format!("creating the first instance {name} (initdb, or recovery from backups as spec.bootstrap says)"),
        );
        return b.phase(
            ClusterPhase::FirstPrimary,
            format!("Creating primary instance {name}"),
            Some(SOON),
        );
    }

    let by_name: BTreeMap<&str, &ObservedInstance> =
        instances.iter().map(|i| (i.name.as_str(), i)).collect();
    let Some(current) = observed.state.current_primary.clone() else {
        // The first primary has not published itself yet.
        let target = observed
            .state
            .target_primary
            .clone()
            .unwrap_or_else(|| instances[0].name.clone());
        b.plan.state.target_primary = Some(target.clone());
        if by_name.get(target.as_str()).is_some_and(|i| !i.running) {
            b.act(Action::StartInstance {
                name: target.clone(),
            });
        }
        // What holds it up, when its platform says (a bootstrap that fails, and why).
        let why = by_name
            .get(target.as_str())
            .and_then(|i| i.status.error.as_deref())
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        return b.phase(
            ClusterPhase::FirstPrimary,
            format!("Waiting for {target} to become primary{why}"),
            Some(SOON),
        );
    };

    if (policy.hibernation || observed.state.hibernating)
        && let Some(plan) = hibernate(&mut b, policy, observed, &current)
    {
        return plan;
    }

    // Instances whose pod is gone come back on their storage: the primary's first.
    let mut stopped: Vec<&ObservedInstance> = instances.iter().filter(|i| !i.running).collect();
    stopped.sort_by_key(|i| i.name != current);
    let failing_over = observed.state.target_primary.as_deref() != Some(current.as_str());
    for i in &stopped {
        b.act(Action::StartInstance {
            name: i.name.clone(),
        });
    }
    if !stopped.is_empty() && !failing_over {
        let names: Vec<&str> = stopped.iter().map(|i| i.name.as_str()).collect();
        b.event(
            EventType::Normal,
            "StartingInstances",
            format!("starting {} again on existing storage", names.join(", ")),
        );
    }

    let statuses: Vec<InstanceStatus> = instances
        .iter()
        .filter(|i| i.running)
        .map(|i| i.status.clone())
        .collect();

    // A failover or switchover in flight.
    if let Some(plan) = in_flight(&mut b, policy, observed, &current, &statuses, &by_name) {
        return plan;
    }

    // Guards before any failover decision.
    let primaries: Vec<&str> = statuses
        .iter()
        .filter(|s| s.is_reachable() && s.is_primary)
        .map(|s| s.name.as_str())
        .collect();
    if primaries.len() > 1 {
        b.event(
            EventType::Warning,
            "MultiplePrimaries",
            format!(
                "{} all report being primary; waiting for the stale ones to demote themselves",
                primaries.join(", ")
            ),
        );
        return b.phase(
            ClusterPhase::FailOver,
            format!("more than one primary: {}", primaries.join(", ")),
            Some(GUARD),
        );
    }
    if let Some(full) = statuses.iter().find(|s| s.wal_disk_full) {
        return b.phase(
            ClusterPhase::NotEnoughDiskSpace,
            format!("{} has no space left for WAL; no failover until it has (free or grow its WAL volume)", full.name),
            Some(SLOW),
        );
    }

    let cur = by_name.get(current.as_str());
    let cur_status = cur.filter(|i| i.running).map(|i| &i.status);
    let primary_ok = cur_status.is_some_and(|s| s.is_reachable() && s.is_primary);
    if !primary_ok {
        if let Some(plan) = primary_failing(&mut b, policy, observed, &current, cur, &statuses, now)
        {
            return plan;
        }
    } else {
        b.plan.state.primary_restarting = false;
        if b.plan.state.failing_since.take().is_some() {
            b.event(
                EventType::Normal,
                "PrimaryRecovered",
                format!("{current} is healthy again; no failover"),
            );
        }
    }

    // Steady state: labels, scale, synchronous replication, rolling updates.
    for i in instances.iter().filter(|i| i.running) {
        let want = if i.name == current {
            Role::Primary
        } else {
            Role::Replica
        };
        if i.role != Some(want) {
            b.act(Action::SetRole {
                name: i.name.clone(),
                role: want,
            });
        }
    }
    let ready: BTreeSet<String> = statuses
        .iter()
        .filter(|s| s.is_reachable() && s.is_pod_ready)
        .map(|s| s.name.clone())
        .collect();
    let all_ready = instances
        .iter()
        .all(|i| i.running && ready.contains(&i.name));

    apply_sync(&mut b, policy, observed, &current, &ready);

    let count = instances.len() as u32;
    if count < policy.instances {
        if !all_ready {
            return b.phase(
                ClusterPhase::CreatingReplica,
                "waiting for every instance to be ready before adding one",
                Some(SOON),
            );
        }
        let used: BTreeSet<u32> = instances
            .iter()
            .filter_map(|i| naming::serial_of(&policy.cluster, &i.name))
            .collect();
        let name = naming::instance_name(&policy.cluster, naming::lowest_free_serial(&used));
        b.act(Action::CreateInstance {
            name: name.clone(),
            bootstrap: Bootstrap::Join {
                source: current.clone(),
            },
        });
        b.event(
            EventType::Normal,
            "CreatingInstance",
            format!("creating {name}: {count} of {} instances", policy.instances),
        );
        return b.phase(
            ClusterPhase::CreatingReplica,
            format!("Creating replica {name}"),
            Some(SOON),
        );
    }
    if count > policy.instances {
        // The highest serial among replicas, not-ready ones first.
        let victim = instances
            .iter()
            .filter(|i| i.name != current)
            .max_by_key(|i| {
                (
                    !ready.contains(&i.name),
                    naming::serial_of(&policy.cluster, &i.name).unwrap_or(0),
                )
            })
            .expect("more instances than wanted means at least one replica");
        b.act(Action::DeleteInstance {
            name: victim.name.clone(),
        });
        b.event(
            EventType::Normal,
            "ScaleDown",
            format!(
                "removing {}: {count} instances, {} wanted",
                victim.name, policy.instances
            ),
        );
        return b.phase(
            ClusterPhase::Healthy,
            format!("Scaling down: removing {}", victim.name),
            Some(SOON),
        );
    }

    if let Some(plan) = roll_out(&mut b, policy, observed, &current, &ready) {
        return plan;
    }

    if !all_ready {
        let not_ready: Vec<&str> = instances
            .iter()
            .filter(|i| !ready.contains(&i.name))
            .map(|i| i.name.as_str())
            .collect();
        return b.phase(
            ClusterPhase::WaitingForInstancesToBeActive,
            format!("waiting for {} to be ready", not_ready.join(", ")),
            Some(SOON),
        );
    }
    b.phase(ClusterPhase::Healthy, "", None)
}

/// `targetPrimary` differs from `currentPrimary`: a failover or a switchover is under way.
fn in_flight(
    b: &mut Builder,
    policy: &Policy,
    observed: &Observed,
    current: &str,
    statuses: &[InstanceStatus],
    by_name: &BTreeMap<&str, &ObservedInstance>,
) -> Option<Plan> {
    let target = observed.state.target_primary.clone()?;
    if target == current {
        return None;
    }
    // The old primary leaves -rw at once (existing sessions are the platform's to cut).
    if by_name
        .get(current)
        .is_some_and(|i| i.running && i.role != Some(Role::Unhealthy))
    {
        b.act(Action::SetRole {
            name: current.to_owned(),
            role: Role::Unhealthy,
        });
        // Said once, at this first step: a failover has said so already (`FailingOver`).
        if target != PENDING {
            b.event(
                EventType::Normal,
                "Switchover",
                format!(
                    "switching over from {current} to {target}: {current} leaves -rw and stops, then {target} is promoted"
                ),
            );
        }
    }
    if target == PENDING {
        return Some(elect_target(b, policy, current, statuses));
    }
    if !by_name.contains_key(target.as_str()) {
        b.plan.state.target_primary = Some(current.to_owned());
        b.event(
            EventType::Warning,
            "TargetGone",
            format!("the target primary {target} no longer exists; keeping {current}"),
        );
        return Some(take(b).phase(
            ClusterPhase::Healthy,
            format!("the target primary {target} is gone"),
            Some(SOON),
        ));
    }
    let phase = if by_name
        .get(current)
        .is_some_and(|i| i.running && i.status.is_reachable() && i.status.is_primary)
    {
        ClusterPhase::Switchover
    } else {
        ClusterPhase::FailOver
    };
    let why = format!(
        "waiting for {target} to be promoted and to publish itself as primary (was {current})"
    );
    Some(take(b).phase(phase, why, Some(SOON)))
}

/// Second step of a failover: once no WAL receiver is active, elect.
fn elect_target(
    b: &mut Builder,
    policy: &Policy,
    current: &str,
    statuses: &[InstanceStatus],
) -> Plan {
    // The failed primary's instance manager may still be starting PostgreSQL again after
    // a crash: it stops as soon as it sees the target is not itself (it refuses to start
    // a primary that is not the target), and only then can a replica be promoted without
    // two primaries ever accepting writes.
    if let Some(old) = statuses
        .iter()
        .find(|s| s.name == current && s.restarting_after_crash)
    {
        let why = format!(
            "Failing over from {current}: waiting for its instance manager to stop restarting it ({})",
            old.decision
        );
        return take(b).phase(ClusterPhase::FailOver, why, Some(SOON));
    }
    let streaming: Vec<&str> = statuses
        .iter()
        .filter(|s| s.name != current && s.is_reachable() && s.is_wal_receiver_active)
        .map(|s| s.name.as_str())
        .collect();
    if !streaming.is_empty() {
        let why = format!(
            "Failing over from {current}: waiting for the WAL receivers of {} to stop",
            streaming.join(", ")
        );
        return take(b).phase(ClusterPhase::FailOver, why, Some(SOON));
    }
    // The quorum is checked again now: a replica holding acknowledged commits may have
    // been lost while we waited for the WAL receivers (found by the simulator: the quorum
    // held when the failover started, not when the election ran).
    if policy.sync.failover_quorum_required() {
        let check = sync::failover_quorum(
            b.plan.state.published_sync.as_ref(),
            current,
            &ready_set(statuses, current),
        );
        if !check.allowed {
            b.event(
                EventType::Warning,
                "FailoverRefused",
                format!("{current} is failing, but {}", check.reason),
            );
            if statuses.iter().any(|s| s.name == current) && !policy.fencing.is_fenced(current) {
                b.plan.state.target_primary = Some(current.to_owned());
                return take(b).phase(
                    ClusterPhase::FailOver,
                    format!(
                        "failover cancelled, {current} resumes as primary: {}",
                        check.reason
                    ),
                    Some(SOON),
                );
            }
            return take(b).phase(
                ClusterPhase::FailOver,
                format!("failover from {current} refused: {}", check.reason),
                Some(SOON),
            );
        }
    }
    let election: Election = election::elect(statuses, &policy.fencing, Some(current));
    match election.elected.clone() {
        Some(winner) => {
            b.plan.state.target_primary = Some(winner.clone());
            b.event(
                EventType::Normal,
                "FailoverTarget",
                format!(
                    "failing over from {current} to {winner}: {}",
                    election.reason()
                ),
            );
            take(b).phase(
                ClusterPhase::FailOver,
                format!("Failing over from {current} to {winner}"),
                Some(SOON),
            )
        }
        // Nobody can be elected but the old primary's instance is back: cancel the failover
        // and let it resume. Safe: nothing is promoted while the target is `pending`, so its
        // data is still the newest history. Without this, stopped old primaries waiting to
        // rewind against a new primary and an operator waiting for a replica would wait for
        // each other forever (found by the simulator).
        None if statuses.iter().any(|s| s.name == current)
            && !policy.fencing.is_fenced(current) =>
        {
            b.plan.state.target_primary = Some(current.to_owned());
            b.event(
                EventType::Warning,
                "FailoverCancelled",
                format!(
                    "no replica can be elected ({}); {current} resumes as primary",
                    election.reason()
                ),
            );
            take(b).phase(
                ClusterPhase::FailOver,
                format!("failover cancelled: {current} resumes as primary"),
                Some(SOON),
            )
        }
        None => {
            let why = format!("Failing over from {current}: {}", election.reason());
            take(b).phase(ClusterPhase::FailOver, why, Some(SOON))
        }
    }
}

/// Replicas reachable and ready now: the R of the failover quorum.
fn ready_set(statuses: &[InstanceStatus], current: &str) -> BTreeSet<String> {
    statuses
        .iter()
        .filter(|s| s.is_reachable() && s.is_pod_ready && s.name != current)
        .map(|s| s.name.clone())
        .collect()
}

/// Moves the plan built so far out of `b` (callers return right after).
fn take(b: &mut Builder) -> Builder {
    Builder {
        plan: std::mem::replace(&mut b.plan, empty_plan()),
        confirm_soon: b.confirm_soon,
    }
}

fn empty_plan() -> Plan {
    Plan {
        actions: Vec::new(),
        state: ClusterState::default(),
        phase: ClusterPhase::Healthy,
        phase_reason: String::new(),
        requeue: None,
        events: Vec::new(),
    }
}

/// The current primary is not a reachable primary: decide whether to fail over.
/// When the current primary started failing: stamped now the first time. A stamp later than
/// `now` means the host's clock went back since it was taken (an NTP step, another operator
/// with another clock); waiting for the clock to catch up would hold a failover for as long
/// as the step, so the wait counts from now instead.
fn failing_since(b: &mut Builder, now: Timestamp) -> Timestamp {
    let since = b.plan.state.failing_since.get_or_insert(now);
    if *since > now {
        *since = now;
    }
    *since
}

fn primary_failing(
    b: &mut Builder,
    policy: &Policy,
    observed: &Observed,
    current: &str,
    cur: Option<&&ObservedInstance>,
    statuses: &[InstanceStatus],
    now: Timestamp,
) -> Option<Plan> {
    if policy.fencing.is_fenced(current) {
        return Some(take(b).phase(
            ClusterPhase::Healthy,
            format!("the primary {current} is fenced: no failover (unfence it to resume writes)"),
            Some(SLOW),
        ));
    }
    if observed.state.primary_restarting {
        return Some(take(b).phase(
            ClusterPhase::InplaceDeletePrimaryRestart,
            format!("{current} is being recreated for an update; no failover while it comes back"),
            Some(SOON),
        ));
    }
    if let Some(i) = cur.filter(|i| i.running) {
        // Still fenced, or starting again on purpose (just unfenced, restart requested):
        // stopped by request, not failed.
        if i.status.might_be_unavailable || i.status.is_fenced {
            return Some(take(b).phase(
                ClusterPhase::Healthy,
                format!("{current} is restarting on purpose; no failover"),
                Some(SOON),
            ));
        }
        // PostgreSQL crashed and its instance manager restarts it in place: crash recovery
        // keeps every acknowledged commit and takes a fraction of a second, a failover
        // takes longer and may lose asynchronous commits. Wait for it, within a bound.
        if i.status.restarting_after_crash {
            let since = failing_since(b, now);
            let bound = policy.crash_restart_bound.max(policy.failover_delay);
            let waited = now.since(since);
            let crashes = i.status.recent_crashes;
            if crashes >= crate::policy::CRASH_LOOP {
                b.event(
                    EventType::Warning,
                    "CrashLoop",
                    format!(
                        "{current} crashed {crashes} times within a minute; failing over instead of restarting it again"
                    ),
                );
            } else if waited < bound {
                let left = (bound - waited).as_secs_f32();
                if waited.is_zero() {
                    b.event(
                        EventType::Warning,
                        "PrimaryCrashed",
                        format!(
                            "PostgreSQL on {current} exited unexpectedly; its instance manager restarts it in place (crash recovery keeps every acknowledged commit); failing over if it is not back within {} s",
                            bound.as_secs_f32()
                        ),
                    );
                }
                return Some(take(b).phase(
                    ClusterPhase::InplacePrimaryRestart,
                    format!(
                        "{current} is restarting in place after a crash; failing over in {left:.1} s if it is not back"
                    ),
                    Some(SOON),
                ));
            } else {
                b.event(
                    EventType::Warning,
                    "CrashRestartTooSlow",
                    format!(
                        "{current} did not come back within {} s of its crash; failing over",
                        bound.as_secs_f32()
                    ),
                );
            }
        }
        // The platform still sees the primary ready, only our status request failed: trust
        // the platform rather than fail over on a network hiccup between us and it.
        if i.status.is_pod_ready && !i.status.is_reachable() {
            b.event(
                EventType::Warning,
                "PrimaryStatusCheckFailed",
                format!(
                    "cannot read the status of {current} ({}), but it is ready; not failing over",
                    i.status.error.clone().unwrap_or_default()
                ),
            );
            return Some(take(b).phase(
                ClusterPhase::Healthy,
                format!("cannot read the status of {current}"),
                Some(SLOW),
            ));
        }
    }
    if !policy.failover_delay.is_zero() {
        let since = failing_since(b, now);
        if now.since(since) < policy.failover_delay {
            let left = policy.failover_delay - now.since(since);
            return Some(take(b).phase(
                ClusterPhase::Healthy,
                format!(
                    "{current} is failing; failing over in {}s (failoverDelay)",
                    left.as_secs_f32().ceil()
                ),
                Some(SOON),
            ));
        }
    }
    if policy.sync.failover_quorum_required() {
        let ready = ready_set(statuses, current);
        let check = sync::failover_quorum(observed.state.published_sync.as_ref(), current, &ready);
        if !check.allowed {
            b.event(
                EventType::Warning,
                "FailoverRefused",
                format!("{current} is failing, but {}", check.reason),
            );
            return Some(take(b).phase(
                ClusterPhase::FailOver,
                format!("failover from {current} refused: {}", check.reason),
                Some(SOON),
            ));
        }
    }
    b.plan.state.target_primary = Some(PENDING.to_owned());
    b.plan.state.failing_since = None;
    let why = cur
        .map(|i| {
            if !i.running {
                "its instance is gone".to_owned()
            } else {
                i.status
                    .error
                    .clone()
                    .unwrap_or_else(|| "it no longer reports being primary".to_owned())
            }
        })
        .unwrap_or_else(|| "it does not exist".to_owned());
    b.event(
        EventType::Warning,
        "FailingOver",
        format!("initiating a failover from {current}: {why}"),
    );
    if cur.is_some_and(|i| i.running && i.role != Some(Role::Unhealthy)) {
        b.act(Action::SetRole {
            name: current.to_owned(),
            role: Role::Unhealthy,
        });
    }
    if let Some(i) = cur.filter(|i| i.running && !i.status.manager_answered()) {
        b.act(Action::KillInstance {
            name: current.to_owned(),
            reason: format!(
                "{current} does not answer ({}) but may still run: killing it so it cannot accept writes beside the new primary",
                i.status.error.clone().unwrap_or_default()
            ),
        });
    }
    Some(elect_target(b, policy, current, statuses))
}

fn apply_sync(
    b: &mut Builder,
    policy: &Policy,
    observed: &Observed,
    current: &str,
    ready: &BTreeSet<String>,
) {
    let names: Vec<String> = observed
        .instances
        .iter()
        .filter(|i| !i.creating)
        .map(|i| i.name.clone())
        .collect();
    let desired = sync::desired(&policy.sync, &policy.cluster, &names, ready, current);
    let value = sync::render(desired.as_ref());
    match observed.sync_in_effect.as_deref() {
        Some(v) if v == value => {
            if b.plan.state.published_sync != desired {
                b.plan.state.published_sync = desired;
            }
        }
        in_effect => {
            // Until the primary confirms the new value, no configuration is known to be in
            // effect: a quorum-gated failover in this window is refused (upstream #8790).
            // Except when the one confirmed before is still in effect and the new one lists
            // the same standbys with the same number (only their order changes, as it does
            // when a replica becomes ready): the quorum arithmetic is the same under both,
            // so the failover quorum holds through the change. Without this, a primary
            // lost in the second after a replica came back could not be failed over from
            // (found on a real API server).
            let still = observed.state.published_sync.as_ref().filter(|p| {
                in_effect == Some(sync::render(Some(p)).as_str())
                    && desired.as_ref().is_some_and(|d| sync::same_quorum(p, d))
            });
            b.plan.state.published_sync = still.cloned();
            b.confirm_soon = true;
            b.act(Action::ApplySyncStandbyNames {
                value,
                config: desired,
            });
        }
    }
}

fn roll_out(
    b: &mut Builder,
    policy: &Policy,
    observed: &Observed,
    current: &str,
    ready: &BTreeSet<String>,
) -> Option<Plan> {
    let outdated: BTreeMap<String, String> = observed
        .instances
        .iter()
        .filter_map(|i| i.outdated.clone().map(|why| (i.name.clone(), why)))
        .collect();
    if outdated.is_empty() {
        return None;
    }
    let by_name: BTreeMap<&str, &ObservedInstance> = observed
        .instances
        .iter()
        .map(|i| (i.name.as_str(), i))
        .collect();
    // Every instance takes part, a stopped one as not ready: a rollout must never restart
    // an instance while another is still down.
    let everyone: Vec<InstanceStatus> = observed
        .instances
        .iter()
        .map(|i| {
            if i.running {
                i.status.clone()
            } else {
                InstanceStatus::unreachable(&i.name, "not running")
            }
        })
        .collect();
    let order: Vec<RolloutInstance> = election::sorted(&everyone)
        .iter()
        .map(|s| RolloutInstance {
            name: s.name.clone(),
            ready: ready.contains(&s.name)
                && by_name.get(s.name.as_str()).is_some_and(|i| i.running),
            restart_only: by_name.get(s.name.as_str()).is_some_and(|i| i.restart_only),
        })
        .collect();
    let step = rollout::next_step(
        &order,
        &outdated,
        current,
        &policy.fencing,
        policy.primary_update_strategy,
        policy.primary_update_method,
    );
    let plan = match step {
        RolloutStep::Done => return None,
        RolloutStep::Wait(why) => take(b).phase(ClusterPhase::Upgrade, why, Some(SOON)),
        RolloutStep::RestartReplica { name, reason } => {
            b.act(Action::StopInstance { name: name.clone() });
            b.event(
                EventType::Normal,
                "RollingUpdate",
                format!("restarting replica {name}: {reason}"),
            );
            take(b).phase(
                ClusterPhase::Upgrade,
                format!("Restarting instance {name}, because: {reason}"),
                Some(SOON),
            )
        }
        RolloutStep::WaitForUser(why) => take(b).phase(ClusterPhase::WaitingForUser, why, None),
        RolloutStep::SwitchoverTo { name, reason } => {
            b.plan.state.target_primary = Some(name.clone());
            b.event(
                EventType::Normal,
                "Switchover",
                format!("switching over to {name} to update {current}: {reason}"),
            );
            take(b).phase(
                ClusterPhase::Switchover,
                format!("Switching over to {name}"),
                Some(SOON),
            )
        }
        RolloutStep::RestartPrimaryInPlace(reason) => {
            b.act(Action::RestartInPlace {
                name: current.to_owned(),
            });
            b.event(
                EventType::Normal,
                "RollingUpdate",
                format!("restarting the primary {current} in place: {reason}"),
            );
            take(b).phase(
                ClusterPhase::InplacePrimaryRestart,
                format!("Restarting instance {current}, because: {reason}"),
                Some(SOON),
            )
        }
        RolloutStep::RecreatePrimary(reason) => {
            b.plan.state.primary_restarting = true;
            b.act(Action::StopInstance {
                name: current.to_owned(),
            });
            b.event(
                EventType::Normal,
                "RollingUpdate",
                format!("recreating the primary {current} without a switchover: {reason}"),
            );
            take(b).phase(
                ClusterPhase::InplaceDeletePrimaryRestart,
                format!("Restarting instance {current}, because: {reason}"),
                Some(SOON),
            )
        }
    };
    Some(plan)
}

fn hibernate(b: &mut Builder, policy: &Policy, observed: &Observed, current: &str) -> Option<Plan> {
    if !policy.hibernation {
        // Rehydration: the stopped instances restart below, primary first.
        b.plan.state.hibernating = false;
        b.event(
            EventType::Normal,
            "Rehydrating",
            "hibernation is off: starting the instances again".into(),
        );
        return None;
    }
    let running: Vec<Running> = observed
        .instances
        .iter()
        .filter(|i| i.running)
        .map(|i| Running {
            name: i.name.clone(),
            primary: i.name == current,
            stopping: false,
        })
        .collect();
    let healthy = observed
        .instances
        .iter()
        .all(|i| i.running && i.status.is_reachable() && i.status.is_pod_ready);
    let step = hibernation::next_step(&running, healthy, observed.state.hibernating);
    let reason = step.condition_reason();
    Some(match step {
        HibernationStep::WaitingForHealthy => take(b).phase(
            ClusterPhase::Healthy,
            format!("hibernation: {reason}"),
            Some(SOON),
        ),
        HibernationStep::StopInstance(name) => {
            b.plan.state.hibernating = true;
            b.act(Action::StopInstance { name: name.clone() });
            b.event(
                EventType::Normal,
                "Hibernating",
                format!("stopping {name}, keeping its storage"),
            );
            take(b).phase(
                ClusterPhase::Healthy,
                format!("hibernation: {reason}"),
                Some(SOON),
            )
        }
        HibernationStep::WaitingPodsDeletion => take(b).phase(
            ClusterPhase::Healthy,
            format!("hibernation: {reason}"),
            Some(SOON),
        ),
        HibernationStep::Hibernated => {
            b.plan.state.hibernating = true;
            take(b).phase(ClusterPhase::Healthy, "hibernation: Hibernated", None)
        }
    })
}

#[cfg(test)]
mod tests;
