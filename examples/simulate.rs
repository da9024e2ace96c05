//! Simulate HA policies before trusting them with data.
//!
//! Runs the real cnpg-core decisions in a seeded, deterministic simulation of a cluster under
//! faults (crashes, lost nodes, partitions, slow replicas, operator restarts, rolling
//! updates), checks every invariant at every step, and prints one row per replication policy.
//!
//! ```sh
//! cargo run --release --example simulate -- --seeds 10000 --instances 3
//! cargo run --release --example simulate -- --seeds 500 --sync required --faults kill,partition
//! ```
//!
//! Exit status 1 when a safe policy (async, legacy, preferred, required — every invariant
//! except acknowledged-commit loss, which only `required` promises) breaks an invariant.

use clap::Parser;
use cnpg_core::sim::{self, FaultMix, Invariant, SimConfig, SimReport};
use cnpg_core::sync::{Durability, Method, SyncPolicy, SyncSpec};
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Debug, Parser)]
#[command(
    name = "simulate",
    about = "Simulate cnpg-rs HA decisions under faults"
)]
struct Args {
    /// Seeds per policy (each seed is one cluster life: 30 s of faults, then convergence).
    #[arg(long, default_value_t = 1000)]
    seeds: u64,
    /// First seed.
    #[arg(long, default_value_t = 0)]
    first_seed: u64,
    /// Instances in the cluster.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=9))]
    instances: u32,
    /// Replication policies to run: async, legacy, preferred, required, or all.
    #[arg(long, default_value = "all", value_delimiter = ',')]
    sync: Vec<String>,
    /// Faults: crash, kill, partition, link, slow, operator, rollout, rewind (pg_rewind fails: a re-clone), all, none.
    #[arg(long, default_value = "all")]
    faults: String,
    /// Steps (100 ms each) of faults per seed.
    #[arg(long, default_value_t = 300)]
    fault_steps: u32,
    /// Print the first violation of each policy with the cluster state.
    #[arg(long)]
    verbose: bool,
}

fn policy(name: &str, instances: u32) -> Result<SyncPolicy, String> {
    let explicit = |durability| {
        SyncPolicy::Explicit(SyncSpec {
            method: Method::Any,
            number: 1,
            max_standby_names_from_cluster: None,
            standby_names_pre: vec![],
            standby_names_post: vec![],
            durability,
            failover_quorum: false,
        })
    };
    Ok(match name {
        "async" => SyncPolicy::Async,
        "legacy" => SyncPolicy::Legacy {
            min: 1,
            max: 1.min(instances.saturating_sub(1)),
        },
        "preferred" => explicit(Durability::Preferred),
        "required" => explicit(Durability::Required),
        other => {
            return Err(format!(
                "unknown policy {other:?}; use async, legacy, preferred, required or all"
            ));
        }
    })
}

fn percentile(sorted: &[u64], p: f64) -> String {
    if sorted.is_empty() {
        return "-".into();
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    format!("{:.1}s", sorted[i] as f64 / 1000.0)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let faults = match FaultMix::parse(&args.faults) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: --faults: {e}");
            return ExitCode::from(2);
        }
    };
    let names: Vec<String> = if args.sync.iter().any(|s| s == "all") {
        ["async", "legacy", "preferred", "required"]
            .map(String::from)
            .to_vec()
    } else {
        args.sync.clone()
    };
    let mut policies = Vec::new();
    for n in &names {
        match policy(n, args.instances) {
            Ok(p) => policies.push((n.clone(), p)),
            Err(e) => {
                eprintln!("error: --sync: {e}");
                return ExitCode::from(2);
            }
        }
    }

    println!(
        "{} seeds × {} instances, faults: {}, {} fault steps (100 ms each) per seed\n",
        args.seeds, args.instances, args.faults, args.fault_steps
    );
    let header: Vec<String> = Invariant::ALL.iter().map(|i| i.name().to_owned()).collect();
    println!(
        "{:<10} {:>6} {} {:>9} {:>7} {:>7} {:>7} {:>7} {:>10} {:>9}",
        "policy",
        "runs",
        header
            .iter()
            .map(|h| format!("{h:>12}"))
            .collect::<String>(),
        "failovers",
        "rto-p50",
        "rto-p90",
        "rto-p99",
        "rto-max",
        "acked",
        "acked-lost"
    );
    let mut broken = false;
    let mut total_steps = 0u64;
    let started = Instant::now();
    for (name, sync) in &policies {
        let mut violations: BTreeMap<Invariant, u32> = BTreeMap::new();
        let mut rto = Vec::new();
        let (mut failovers, mut acked, mut lost) = (0u64, 0u64, 0u64);
        let mut first: Option<String> = None;
        for seed in args.first_seed..args.first_seed + args.seeds {
            let mut cfg = SimConfig::new(seed, args.instances, sync.clone());
            cfg.faults = faults;
            cfg.fault_steps = args.fault_steps;
            let r: SimReport = sim::run(&cfg);
            total_steps += r.steps;
            for (k, v) in &r.violations {
                *violations.entry(*k).or_default() += v;
            }
            rto.extend(r.rto_ms);
            failovers += u64::from(r.failovers);
            acked += r.acked;
            lost += r.acked_lost;
            if first.is_none() {
                first = r.first_violation;
            }
        }
        rto.sort_unstable();
        let cells: String = Invariant::ALL
            .iter()
            .map(|i| format!("{:>12}", violations.get(i).copied().unwrap_or(0)))
            .collect();
        println!(
            "{:<10} {:>6} {} {:>9} {:>7} {:>7} {:>7} {:>7} {:>10} {:>9}",
            name,
            args.seeds,
            cells,
            failovers,
            percentile(&rto, 0.5),
            percentile(&rto, 0.9),
            percentile(&rto, 0.99),
            percentile(&rto, 1.0),
            acked,
            lost
        );
        if !violations.is_empty() {
            broken = true;
            if args.verbose
                && let Some(f) = first
            {
                println!("  first violation: {f}");
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "\n{total_steps} simulated steps in {secs:.1} s ({:.0} steps/s). RTO: from clients losing -rw to the next acknowledged commit.",
        total_steps as f64 / secs.max(1e-9)
    );
    println!(
        "acked-lost is not a violation for async, legacy and preferred: it shows what they risk."
    );
    if broken {
        println!("INVARIANT VIOLATIONS FOUND (rerun with --verbose for the first one)");
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
