//! Another controller embedding cnpg-core's decisions on its own data.
//!
//! A team runs PostgreSQL on VMs with its own inventory. It keeps its own types and asks
//! cnpg-core only for decisions: who to promote, what `synchronous_standby_names` should be,
//! whether a failover is safe for acknowledged commits, which node to update next — each
//! with a reason it can log.
//!
//! `cargo run --example embed`

use cnpg_core::election;
use cnpg_core::fencing::Fencing;
use cnpg_core::instance::{self, ClusterView, LocalState, PgData};
use cnpg_core::lsn::Lsn;
use cnpg_core::naming::Role;
use cnpg_core::policy::{Policy, UpdateMethod, UpdateStrategy};
use cnpg_core::reconcile::{self, ClusterState, Observed, ObservedInstance};
use cnpg_core::rollout::{self, RolloutInstance};
use cnpg_core::status::InstanceStatus;
use cnpg_core::sync::{self, Durability, Method, SyncPolicy, SyncSpec};
use cnpg_core::time::Timestamp;
use std::collections::{BTreeMap, BTreeSet};

/// The team's own inventory record.
struct VmNode {
    hostname: &'static str,
    alive: bool,
    writable: bool,
    wal_flushed: &'static str,
    streaming: bool,
}

fn status(n: &VmNode) -> InstanceStatus {
    if !n.alive {
        return InstanceStatus::unreachable(n.hostname, "ssh: connection timed out");
    }
    let lsn: Lsn = n.wal_flushed.parse().expect("inventory holds valid LSNs");
    let mut s = if n.writable {
        InstanceStatus::primary(n.hostname, 4, lsn)
    } else {
        InstanceStatus::replica(n.hostname, 4, lsn)
    };
    s.is_wal_receiver_active = n.streaming;
    s
}

fn main() {
    let inventory = [
        VmNode {
            hostname: "db-1",
            alive: false,
            writable: true,
            wal_flushed: "3/1A000000",
            streaming: false,
        },
        VmNode {
            hostname: "db-2",
            alive: true,
            writable: false,
            wal_flushed: "3/19FFF000",
            streaming: false,
        },
        VmNode {
            hostname: "db-3",
            alive: true,
            writable: false,
            wal_flushed: "3/1A000000",
            streaming: false,
        },
    ];
    let statuses: Vec<InstanceStatus> = inventory.iter().map(status).collect();

    // 1. Who should be promoted, and why the others lost.
    let e = election::elect(&statuses, &Fencing::None, Some("db-1"));
    println!("election: {}", e.reason());

    // 2. Is the failover safe for acknowledged commits? The old primary had published
    //    ANY 1 ("db-2","db-3"): R + W > N.
    let published = sync::SyncStandbys {
        method: Method::Any,
        number: 1,
        names: vec!["db-2".into(), "db-3".into()],
    };
    let ready: BTreeSet<String> = statuses
        .iter()
        .filter(|s| s.is_reachable())
        .map(|s| s.name.clone())
        .collect();
    let q = sync::failover_quorum(Some(&published), "db-1", &ready);
    println!("quorum: {}", q.reason);

    // 3. What the new primary's synchronous_standby_names should be.
    let policy = SyncPolicy::Explicit(SyncSpec {
        method: Method::Any,
        number: 1,
        max_standby_names_from_cluster: None,
        standby_names_pre: vec![],
        standby_names_post: vec![],
        durability: Durability::Required,
        failover_quorum: true,
    });
    let names: Vec<String> = inventory.iter().map(|n| n.hostname.to_owned()).collect();
    let new_primary = e.elected.clone().unwrap_or_default();
    let desired = sync::desired(&policy, "db", &names, &ready, &new_primary);
    println!(
        "synchronous_standby_names on {new_primary}: {}",
        sync::render(desired.as_ref())
    );

    // 4. What the agent on db-3 should do, reading the team's own view of the cluster.
    let local = LocalState {
        name: "db-3".into(),
        pgdata: PgData::Standby,
        running: true,
        wal_receiver_active: false,
        diverged: false,
        rewind_failed: false,
    };
    let view = ClusterView {
        readable: true,
        current_primary: Some("db-1".into()),
        target_primary: Some(new_primary.clone()),
        fenced: false,
    };
    let d = instance::decide(&local, &view, Timestamp(0));
    println!("agent on db-3: {:?} — {}", d.action, d.reason);

    // 5. A rolling update of the VMs' images: which one goes next?
    let order: Vec<RolloutInstance> = election::sorted(&statuses)
        .iter()
        .map(|s| RolloutInstance {
            name: s.name.clone(),
            ready: s.is_reachable(),
            restart_only: false,
        })
        .collect();
    let outdated: BTreeMap<String, String> =
        [("db-2".to_owned(), "kernel upgrade".to_owned())].into();
    let step = rollout::next_step(
        &order,
        &outdated,
        "db-3",
        &Fencing::None,
        UpdateStrategy::Unsupervised,
        UpdateMethod::Switchover,
    );
    println!("rollout: {step:?}");

    // 6. Or the whole cluster decision at once, with events explaining it.
    let mut p = Policy::new("db", 3);
    p.sync = policy;
    let observed = Observed {
        instances: inventory
            .iter()
            .zip(&statuses)
            .map(|(n, s)| ObservedInstance {
                name: n.hostname.into(),
                running: n.alive,
                role: Some(if n.writable {
                    Role::Primary
                } else {
                    Role::Replica
                }),
                status: s.clone(),
                outdated: None,
                restart_only: false,
                creating: false,
            })
            .collect(),
        state: ClusterState {
            current_primary: Some("db-1".into()),
            target_primary: Some("db-1".into()),
            published_sync: Some(published),
            ..Default::default()
        },
        sync_in_effect: None,
    };
    let plan = reconcile::reconcile(&p, &observed, Timestamp(0));
    println!(
        "reconcile: phase {:?} ({}), target {:?}",
        plan.phase.as_str(),
        plan.phase_reason,
        plan.state.target_primary
    );
    for ev in &plan.events {
        println!("  event {}: {}", ev.reason, ev.message);
    }
    for a in &plan.actions {
        println!("  action {a:?}");
    }
}
