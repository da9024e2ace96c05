//! The core decisions' speed: `reconcile` for 3, 5 and 9 instances (steady state and the
//! first step of a failover), and the simulator's throughput in steps per second.
//! Targets: a 9-instance reconcile under 10 µs; over 100,000 simulated steps/s on one core.
//!
//! `cargo bench -p cnpg-benches --bench core`

use cnpg_core::lsn::Lsn;
use cnpg_core::naming::Role;
use cnpg_core::policy::Policy;
use cnpg_core::reconcile::{ClusterState, Observed, ObservedInstance, reconcile};
use cnpg_core::sim::{self, SimConfig};
use cnpg_core::status::InstanceStatus;
use cnpg_core::sync::{Durability, Method, SyncPolicy, SyncSpec};
use cnpg_core::time::Timestamp;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

fn required() -> SyncPolicy {
    SyncPolicy::Explicit(SyncSpec {
        method: Method::Any,
        number: 1,
        max_standby_names_from_cluster: None,
        standby_names_pre: vec![],
        standby_names_post: vec![],
        durability: Durability::Required,
        failover_quorum: false,
    })
}

/// A healthy cluster of `n` instances whose sync configuration is in effect.
fn cluster(n: u32) -> (Policy, Observed) {
    let mut policy = Policy::new("pg", n);
    policy.sync = required();
    let instances: Vec<ObservedInstance> = (1..=n)
        .map(|i| {
            let name = format!("pg-{i}");
            let status = if i == 1 {
                InstanceStatus::primary(&name, 1, Lsn(1_000_000))
            } else {
                InstanceStatus::replica(&name, 1, Lsn(1_000_000 - u64::from(i) * 100))
            };
            ObservedInstance {
                name,
                running: true,
                role: Some(if i == 1 { Role::Primary } else { Role::Replica }),
                status,
                outdated: None,
                restart_only: false,
                creating: false,
            }
        })
        .collect();
    let mut observed = Observed {
        instances,
        state: ClusterState {
            current_primary: Some("pg-1".into()),
            target_primary: Some("pg-1".into()),
            ..Default::default()
        },
        sync_in_effect: None,
    };
    // Converge the sync configuration once, so the steady state is a true fixpoint.
    let plan = reconcile(&policy, &observed, Timestamp(0));
    for a in &plan.actions {
        if let cnpg_core::reconcile::Action::ApplySyncStandbyNames { value, .. } = a {
            observed.sync_in_effect = Some(value.clone());
        }
    }
    observed.state = reconcile(&policy, &observed, Timestamp(0)).state;
    (policy, observed)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("reconcile");
    for n in [3u32, 5, 9] {
        let (policy, steady) = cluster(n);
        assert!(reconcile(&policy, &steady, Timestamp(0)).is_noop(&steady.state));
        g.bench_with_input(BenchmarkId::new("steady", n), &steady, |b, o| {
            b.iter(|| reconcile(black_box(&policy), black_box(o), Timestamp(1)))
        });
        let mut failing = steady.clone();
        failing.instances[0].status = InstanceStatus::unreachable("pg-1", "postmaster is down");
        for i in &mut failing.instances[1..] {
            i.status.is_wal_receiver_active = false;
        }
        g.bench_with_input(BenchmarkId::new("failover", n), &failing, |b, o| {
            b.iter(|| reconcile(black_box(&policy), black_box(o), Timestamp(1)))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("simulator");
    let cfg = SimConfig::new(7, 3, required());
    let steps = sim::run(&cfg).steps;
    g.throughput(Throughput::Elements(steps));
    g.bench_function("one seed, 3 instances, every fault (steps/s)", |b| {
        b.iter(|| sim::run(black_box(&cfg)))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
