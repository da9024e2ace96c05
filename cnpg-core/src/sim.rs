//! A deterministic simulator of a cluster, to test HA policies before trusting them with
//! data.
//!
//! One seed fixes everything: which faults hit which instance when, how fast each replica
//! streams, when clients commit. Time is virtual (100 ms steps), so thousands of cluster
//! lives run in seconds, and a failing seed replays exactly. The simulated world is small —
//! instances with WAL positions and timelines, streaming replication, clients committing
//! through `-rw` with synchronous or asynchronous acknowledgement — but the decisions are
//! the real ones: [`crate::reconcile::reconcile`] for the operator and
//! [`crate::instance::decide`] for every instance manager.
//!
//! After every step it checks the invariants of `DESIGN.md`:
//! 1. never two writable primaries that clients can reach (no split brain);
//! 2. a new primary is chosen only once no replica streams, and it is the most aligned ready
//!    replica;
//! 3. with `dataDurability: required`, no acknowledged commit is lost by a failover;
//! 4. the synchronous standby count stays within the policy's bounds;
//! 5. a rolling update touches one instance at a time, the primary last;
//! 6. with faults stopped, the cluster converges to a fixpoint (one primary, every replica
//!    streaming, an empty plan).
//!
//! The operator is a trait ([`Operator`]) so a test can plug in a deliberately broken one
//! and see the checks catch it.

use crate::fencing::Fencing;
use crate::instance::{self, ClusterView, InstanceAction, LocalState, PgData};
use crate::lsn::Lsn;
use crate::naming::{PENDING, Role};
use crate::policy::Policy;
use crate::reconcile::{Action, Bootstrap, ClusterState, Observed, ObservedInstance, Plan};
use crate::status::InstanceStatus;
use crate::sync::{Durability, Method, SyncPolicy, SyncStandbys};
use crate::time::Timestamp;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;

/// Virtual time per step.
pub const STEP_MS: u64 = 100;

/// A small, fast, seeded generator (SplitMix64): the simulator's only source of chance.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for this seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// Which faults a run injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultMix {
    /// PostgreSQL of an instance dies: half the time its instance manager lives and
    /// restarts it in place (crash recovery takes a few steps, sometimes longer than the
    /// operator waits), else the instance manager exits too and the container restarts.
    pub postmaster_crash: bool,
    /// A whole instance (pod, node) is lost until the operator recreates it.
    pub instance_kill: bool,
    /// A node is cut from the network for a while.
    pub partition: bool,
    /// Only the operator cannot reach an instance for a while (the platform still sees it).
    pub operator_link: bool,
    /// A replica streams slowly.
    pub slow_replica: bool,
    /// The operator is down for a while (it keeps no state but the cluster status).
    pub operator_restart: bool,
    /// A configuration change triggers a rolling update.
    pub rolling_update: bool,
    /// `pg_rewind` of an old primary fails (cut off by the next fault, WAL gone): its
    /// instance manager clones the primary again.
    pub rewind_failure: bool,
}

impl FaultMix {
    /// Every fault.
    pub const ALL: FaultMix = FaultMix {
        postmaster_crash: true,
        instance_kill: true,
        partition: true,
        operator_link: true,
        slow_replica: true,
        operator_restart: true,
        rolling_update: true,
        rewind_failure: true,
    };

    /// No fault.
    pub const NONE: FaultMix = FaultMix {
        postmaster_crash: false,
        instance_kill: false,
        partition: false,
        operator_link: false,
        slow_replica: false,
        operator_restart: false,
        rolling_update: false,
        rewind_failure: false,
    };

    /// Parses a comma-separated list:
    /// `crash,kill,partition,link,slow,operator,rollout,rewind`, `all` or `none`.
    pub fn parse(s: &str) -> Result<FaultMix, String> {
        let mut m = FaultMix::NONE;
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "all" => m = FaultMix::ALL,
                "none" => m = FaultMix::NONE,
                "crash" => m.postmaster_crash = true,
                "kill" => m.instance_kill = true,
                "partition" => m.partition = true,
                "link" => m.operator_link = true,
                "slow" => m.slow_replica = true,
                "operator" => m.operator_restart = true,
                "rollout" => m.rolling_update = true,
                "rewind" => m.rewind_failure = true,
                other => {
                    return Err(format!(
                        "unknown fault {other:?}; use crash, kill, partition, link, slow, operator, rollout, rewind, all or none"
                    ));
                }
            }
        }
        Ok(m)
    }
}

/// One simulation run.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The seed.
    pub seed: u64,
    /// Number of instances.
    pub instances: u32,
    /// Replication policy.
    pub sync: SyncPolicy,
    /// Faults to inject.
    pub faults: FaultMix,
    /// Steps with faults.
    pub fault_steps: u32,
    /// Most steps allowed to converge once faults stop.
    pub quiet_steps: u32,
}

impl SimConfig {
    /// A run of `instances` instances with every fault, 30 s of faults, 30 s to converge.
    pub fn new(seed: u64, instances: u32, sync: SyncPolicy) -> Self {
        SimConfig {
            seed,
            instances,
            sync,
            faults: FaultMix::ALL,
            fault_steps: 300,
            quiet_steps: 300,
        }
    }
}

/// The invariants checked on every step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Invariant {
    /// 1. Two writable primaries reachable by clients.
    SplitBrain,
    /// 2. A new primary chosen while a replica streamed, or not the most aligned.
    Election,
    /// 3. An acknowledged commit lost under `dataDurability: required`.
    AckedCommitLost,
    /// 4. The synchronous standby count out of the policy's bounds.
    QuorumBounds,
    /// 5. A rolling update touching two instances at once, or the primary too early.
    RolloutOrder,
    /// 6. No convergence once faults stopped.
    Convergence,
}

impl Invariant {
    /// Every invariant.
    pub const ALL: [Invariant; 6] = [
        Invariant::SplitBrain,
        Invariant::Election,
        Invariant::AckedCommitLost,
        Invariant::QuorumBounds,
        Invariant::RolloutOrder,
        Invariant::Convergence,
    ];

    /// A short name for tables.
    pub fn name(self) -> &'static str {
        match self {
            Invariant::SplitBrain => "split-brain",
            Invariant::Election => "election",
            Invariant::AckedCommitLost => "acked-lost",
            Invariant::QuorumBounds => "quorum",
            Invariant::RolloutOrder => "rollout",
            Invariant::Convergence => "convergence",
        }
    }
}

/// What one run saw.
#[derive(Debug, Clone, Default)]
pub struct SimReport {
    /// Steps run.
    pub steps: u64,
    /// Violations per invariant.
    pub violations: BTreeMap<Invariant, u32>,
    /// The first violation: what, when, and the cluster state then.
    pub first_violation: Option<String>,
    /// Promotions after the first primary.
    pub failovers: u32,
    /// Old primaries cloned again because their pg_rewind failed.
    pub reclones: u32,
    /// For each fault that took the primary's writes away, the virtual milliseconds until a
    /// commit was acknowledged again.
    pub rto_ms: Vec<u64>,
    /// Commits acknowledged to clients.
    pub acked: u64,
    /// Acknowledged commits that a failover lost.
    pub acked_lost: u64,
    /// Whether the cluster converged once faults stopped.
    pub converged: bool,
}

impl SimReport {
    /// Total violations.
    pub fn total_violations(&self) -> u32 {
        self.violations.values().sum()
    }
}

/// The operator under test.
pub trait Operator {
    /// One reconcile.
    fn reconcile(&mut self, policy: &Policy, observed: &Observed, now: Timestamp) -> Plan;
}

/// The real operator decision.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealOperator;

impl Operator for RealOperator {
    fn reconcile(&mut self, policy: &Policy, observed: &Observed, now: Timestamp) -> Plan {
        crate::reconcile::reconcile(policy, observed, now)
    }
}

#[derive(Debug, Clone)]
struct Node {
    name: String,
    /// The pod (and instance manager) runs.
    pod: bool,
    /// Steps until a restarting pod is back.
    pod_back_in: u32,
    postmaster: bool,
    pgdata: PgData,
    timeline: u32,
    /// End of WAL: written on a primary, received and flushed on a standby.
    lsn: u64,
    wal_receiver: bool,
    /// Steps until a WAL receiver whose primary went silent (a partition, not a crash)
    /// notices (`wal_receiver_timeout`).
    receiver_timeout: Option<u32>,
    diverged: bool,
    isolated_for: u32,
    op_link_down_for: u32,
    slow: bool,
    role: Option<Role>,
    outdated: Option<String>,
    /// Down because the rolling update stopped it.
    rollout_down: bool,
    /// PostgreSQL crashed under a live instance manager, which restarts it in place.
    restarting: bool,
    /// Steps of crash recovery left, once the restart has begun.
    recovering_for: Option<u32>,
    /// Steps at which PostgreSQL crashed, the last minute's.
    crashes: VecDeque<u64>,
    /// Its pg_rewind failed: only a new clone may replace the data.
    rewind_failed: bool,
}

impl Node {
    fn new(name: String, pgdata: PgData, timeline: u32, lsn: u64) -> Self {
        Node {
            name,
            pod: true,
            pod_back_in: 0,
            postmaster: pgdata == PgData::Primary,
            pgdata,
            timeline,
            lsn,
            wal_receiver: false,
            receiver_timeout: None,
            diverged: false,
            isolated_for: 0,
            op_link_down_for: 0,
            slow: false,
            role: None,
            outdated: None,
            rollout_down: false,
            restarting: false,
            recovering_for: None,
            crashes: VecDeque::new(),
            rewind_failed: false,
        }
    }

    fn is_running_primary(&self) -> bool {
        self.pod && self.postmaster && self.pgdata == PgData::Primary
    }
}

/// The simulated world.
struct World<'a> {
    cfg: &'a SimConfig,
    policy: Policy,
    rng: Rng,
    step: u64,
    nodes: Vec<Node>,
    state: ClusterState,
    /// timeline → (parent timeline, fork LSN).
    forks: BTreeMap<u32, (u32, u64)>,
    max_timeline: u32,
    operator_down_for: u32,
    /// Commits written on the primary, waiting for synchronous acknowledgement.
    pending: VecDeque<u64>,
    /// Acknowledged commits (their LSN) on the current history.
    acked: Vec<u64>,
    /// Since when clients cannot write (for RTO).
    outage_since: Option<u64>,
    /// Whether outages count (after the first bootstrap).
    measuring: bool,
    /// `synchronous_standby_names`: part of the configuration every instance shares, so a
    /// promoted replica already enforces it.
    sync: Option<SyncStandbys>,
    sync_value: String,
    report: SimReport,
}

/// Runs one simulation with the real operator.
///
/// ```
/// use cnpg_core::sim::{run, SimConfig};
/// use cnpg_core::sync::SyncPolicy;
///
/// let report = run(&SimConfig::new(7, 3, SyncPolicy::Async));
/// assert_eq!(report.total_violations(), 0, "{:?}", report.first_violation);
/// assert!(report.converged);
/// ```
pub fn run(cfg: &SimConfig) -> SimReport {
    run_with(cfg, &mut RealOperator)
}

/// Runs one simulation with the given operator.
pub fn run_with(cfg: &SimConfig, operator: &mut dyn Operator) -> SimReport {
    let mut policy = Policy::new("pg", cfg.instances);
    policy.sync = cfg.sync.clone();
    let mut w = World {
        cfg,
        policy,
        rng: Rng::new(cfg.seed),
        step: 0,
        nodes: Vec::new(),
        state: ClusterState::default(),
        forks: BTreeMap::new(),
        max_timeline: 1,
        operator_down_for: 0,
        pending: VecDeque::new(),
        acked: Vec::new(),
        outage_since: None,
        measuring: false,
        sync: None,
        sync_value: String::new(),
        report: SimReport::default(),
    };
    // Bring the cluster up without faults first.
    for _ in 0..200 {
        w.tick(operator, false);
        if w.healthy(operator) {
            break;
        }
    }
    w.measuring = true;
    for _ in 0..cfg.fault_steps {
        w.tick(operator, true);
    }
    // Faults stop: heal everything and require convergence.
    for n in &mut w.nodes {
        n.isolated_for = 0;
        n.op_link_down_for = 0;
        n.slow = false;
    }
    w.operator_down_for = 0;
    let mut calm = 0;
    for _ in 0..cfg.quiet_steps {
        w.tick(operator, false);
        calm = if w.healthy(operator) { calm + 1 } else { 0 };
        if calm >= 3 {
            break;
        }
    }
    w.report.converged = calm >= 3;
    if !w.report.converged {
        w.violation(
            Invariant::Convergence,
            "the cluster did not converge after faults stopped".into(),
        );
    }
    w.report.steps = w.step;
    w.report
}

impl World<'_> {
    fn now(&self) -> Timestamp {
        Timestamp(self.step * STEP_MS)
    }

    fn idx(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    fn violation(&mut self, inv: Invariant, what: String) {
        *self.report.violations.entry(inv).or_default() += 1;
        if self.report.first_violation.is_none() {
            self.report.first_violation = Some(format!(
                "seed {} step {} ({}): {}: {what}\n  {}",
                self.cfg.seed,
                self.step,
                self.now().millis(),
                inv.name(),
                self.render()
            ));
        }
    }

    /// One line per step: the simulator's debugging view.
    fn render(&self) -> String {
        let mut s = format!(
            "target={} current={}",
            self.state.target_primary.as_deref().unwrap_or("-"),
            self.state.current_primary.as_deref().unwrap_or("-")
        );
        for n in &self.nodes {
            s.push_str(&format!(
                " | {} {}{} tl{} lsn{}{}{}{}{}",
                n.name,
                match n.pgdata {
                    PgData::Primary => "P",
                    PgData::Standby => "S",
                    PgData::Missing => "-",
                },
                if !n.pod {
                    " pod-down"
                } else if n.postmaster {
                    " up"
                } else {
                    " stopped"
                },
                n.timeline,
                n.lsn,
                if n.wal_receiver { " rcv" } else { "" },
                if n.isolated_for > 0 { " isolated" } else { "" },
                match n.role {
                    Some(r) => format!(" [{}]", r.as_str()),
                    None => String::new(),
                },
                if n.diverged { " diverged" } else { "" }
            ));
        }
        s
    }

    fn tick(&mut self, operator: &mut dyn Operator, faults: bool) {
        self.step += 1;
        self.timers();
        if faults {
            self.inject_faults();
        }
        self.clients();
        self.replicate();
        self.acknowledge();
        self.instance_managers();
        if self.operator_down_for == 0 {
            self.operate(operator);
        }
        self.check();
    }

    fn timers(&mut self) {
        self.operator_down_for = self.operator_down_for.saturating_sub(1);
        for n in &mut self.nodes {
            n.isolated_for = n.isolated_for.saturating_sub(1);
            n.op_link_down_for = n.op_link_down_for.saturating_sub(1);
            if !n.pod && n.pod_back_in > 0 {
                n.pod_back_in -= 1;
                if n.pod_back_in == 0 {
                    n.pod = true;
                    n.postmaster = false;
                    if n.rollout_down {
                        n.outdated = None;
                    }
                }
            }
        }
    }

    fn pick(&mut self) -> Option<usize> {
        if self.nodes.is_empty() {
            return None;
        }
        // Half the faults hit the primary: that is where failover happens.
        if self.rng.chance(0.5)
            && let Some(i) = self
                .state
                .current_primary
                .clone()
                .and_then(|p| self.idx(&p))
        {
            return Some(i);
        }
        Some(self.rng.below(self.nodes.len() as u64) as usize)
    }

    fn inject_faults(&mut self) {
        let f = self.cfg.faults;
        if f.postmaster_crash
            && self.rng.chance(0.01)
            && let Some(i) = self.pick().filter(|i| self.nodes[*i].postmaster)
        {
            let in_place = self.rng.chance(0.5);
            let back = 3 + self.rng.below(5) as u32;
            let step = self.step;
            let n = &mut self.nodes[i];
            n.postmaster = false;
            n.wal_receiver = false;
            if in_place {
                // The instance manager lives and restarts PostgreSQL in place.
                n.restarting = true;
                n.recovering_for = None;
                n.crashes.push_back(step);
            } else {
                // The instance manager exits with its postmaster; the container restarts.
                n.pod = false;
                n.pod_back_in = back;
                n.restarting = false;
                n.crashes.clear();
            }
        }
        if f.instance_kill
            && self.rng.chance(0.005)
            && let Some(i) = self.pick().filter(|i| self.nodes[*i].pod)
        {
            let n = &mut self.nodes[i];
            n.postmaster = false;
            n.pod = false;
            n.pod_back_in = 0; // gone until the operator recreates it
            n.wal_receiver = false;
        }
        if f.partition
            && self.rng.chance(0.004)
            && let Some(i) = self.pick()
        {
            self.nodes[i].isolated_for = 10 + self.rng.below(50) as u32;
        }
        if f.operator_link
            && self.rng.chance(0.004)
            && let Some(i) = self.pick()
        {
            self.nodes[i].op_link_down_for = 5 + self.rng.below(30) as u32;
        }
        if f.slow_replica && self.rng.chance(0.01) && !self.nodes.is_empty() {
            let i = self.rng.below(self.nodes.len() as u64) as usize;
            self.nodes[i].slow = !self.nodes[i].slow;
        }
        if f.operator_restart && self.rng.chance(0.005) {
            self.operator_down_for = 3 + self.rng.below(20) as u32;
        }
        if f.rolling_update
            && self.rng.chance(0.003)
            && self.nodes.iter().all(|n| n.outdated.is_none())
        {
            for n in &mut self.nodes {
                n.outdated = Some("image changed".into());
            }
        }
    }

    /// Where `-rw` sends clients: the instance labelled primary, if clients can reach it.
    fn rw(&self) -> Option<usize> {
        self.nodes.iter().position(|n| {
            n.role == Some(Role::Primary) && n.isolated_for == 0 && n.is_running_primary()
        })
    }

    fn clients(&mut self) {
        let writes = 1 + self.rng.below(3);
        let Some(p) = self.rw() else {
            // Writes fail: whatever waited for acknowledgement is lost to the client too.
            self.pending.clear();
            if self.measuring && self.outage_since.is_none() {
                self.outage_since = Some(self.step);
            }
            return;
        };
        for _ in 0..writes {
            self.nodes[p].lsn += 1;
            let lsn = self.nodes[p].lsn;
            if self.sync.is_some() {
                self.pending.push_back(lsn);
            } else {
                self.ack(lsn);
            }
        }
    }

    fn ack(&mut self, lsn: u64) {
        self.acked.push(lsn);
        self.report.acked += 1;
        if let Some(since) = self.outage_since.take() {
            self.report.rto_ms.push((self.step - since) * STEP_MS);
        }
    }

    /// Whether `lsn` on `timeline` is in the history of `timeline_now` (at or before forks).
    fn fork_point(&self, from: u32, to: u32) -> Option<u64> {
        // Walk `to`'s ancestry back to `from`; the first fork out of `from` bounds it.
        let mut t = to;
        let mut bound = u64::MAX;
        while t != from {
            let (parent, at) = *self.forks.get(&t)?;
            bound = bound.min(at);
            t = parent;
        }
        Some(bound)
    }

    fn replicate(&mut self) {
        let rw = self
            .nodes
            .iter()
            .position(|n| n.role == Some(Role::Primary) && n.is_running_primary());
        for i in 0..self.nodes.len() {
            let n = &self.nodes[i];
            if n.pgdata != PgData::Standby
                || !n.pod
                || !n.postmaster
                || n.isolated_for > 0
                || n.diverged
            {
                self.nodes[i].wal_receiver = false;
                continue;
            }
            let Some(p) = rw.filter(|p| self.nodes[*p].isolated_for == 0 && *p != i) else {
                // A crashed primary resets the connection: noticed at once. A partitioned one
                // just goes silent: the receiver stays "active" until its timeout.
                let silent = rw.is_some_and(|p| self.nodes[p].isolated_for > 0);
                let wait = 1 + self.rng.below(10) as u32;
                let n = &mut self.nodes[i];
                match (silent && n.wal_receiver, n.receiver_timeout) {
                    (true, None) => n.receiver_timeout = Some(wait),
                    (true, Some(0)) | (false, _) => {
                        n.wal_receiver = false;
                        n.receiver_timeout = None;
                    }
                    (true, Some(left)) => n.receiver_timeout = Some(left - 1),
                }
                continue;
            };
            let (ptl, plsn) = (self.nodes[p].timeline, self.nodes[p].lsn);
            let (tl, lsn) = (self.nodes[i].timeline, self.nodes[i].lsn);
            if tl != ptl {
                match self.fork_point(tl, ptl) {
                    Some(at) if lsn <= at => self.nodes[i].timeline = ptl,
                    _ => {
                        self.nodes[i].diverged = true;
                        self.nodes[i].wal_receiver = false;
                        continue;
                    }
                }
            }
            // Replicas stream at uneven speeds, so their positions differ as real ones do.
            let rate = if self.nodes[i].slow {
                self.rng.below(2)
            } else {
                self.rng.below(6)
            };
            let n = &mut self.nodes[i];
            n.lsn = plsn.min(n.lsn + rate);
            n.wal_receiver = true;
            n.receiver_timeout = None;
        }
    }

    fn acknowledge(&mut self) {
        let Some(p) = self.rw() else { return };
        let Some(cfg) = self.sync.clone() else {
            while let Some(l) = self.pending.pop_front() {
                self.ack(l);
            }
            return;
        };
        let ptl = self.nodes[p].timeline;
        // Positions of the listed standbys that stream from this primary, in list order.
        let connected: Vec<u64> = cfg
            .names
            .iter()
            .filter_map(|name| self.idx(name))
            .filter(|i| *i != p && self.nodes[*i].wal_receiver && self.nodes[*i].timeline == ptl)
            .map(|i| self.nodes[i].lsn)
            .collect();
        let need = cfg.number as usize;
        let acked_up_to = match cfg.method {
            Method::Any => {
                let mut v = connected.clone();
                v.sort_unstable_by(|a, b| b.cmp(a));
                v.get(need.saturating_sub(1))
                    .copied()
                    .filter(|_| need > 0 && v.len() >= need)
            }
            Method::First => {
                let firsts: Vec<u64> = connected.iter().take(need).copied().collect();
                (need > 0 && firsts.len() >= need)
                    .then(|| firsts.iter().copied().min().unwrap_or(0))
            }
        };
        if let Some(upto) = acked_up_to {
            while self.pending.front().is_some_and(|l| *l <= upto) {
                let l = self.pending.pop_front().expect("checked front");
                self.ack(l);
            }
        }
    }

    fn view_for(&self, n: &Node) -> ClusterView {
        ClusterView {
            readable: n.isolated_for == 0,
            current_primary: self.state.current_primary.clone(),
            target_primary: self.state.target_primary.clone(),
            fenced: self.policy.fencing.is_fenced(&n.name),
        }
    }

    fn instance_managers(&mut self) {
        for i in 0..self.nodes.len() {
            if !self.nodes[i].pod {
                continue;
            }
            let n = &self.nodes[i];
            let local = LocalState {
                name: n.name.clone(),
                pgdata: n.pgdata,
                running: n.postmaster,
                wal_receiver_active: n.wal_receiver,
                diverged: n.diverged,
                rewind_failed: n.rewind_failed,
            };
            let view = self.view_for(n);
            let decision = instance::decide(&local, &view, self.now());
            if !self.nodes[i].postmaster && !matches!(decision.action, InstanceAction::Start) {
                // A crash restart under way stops the moment this instance should not run
                // PostgreSQL any more (the target moved): it never comes up writable.
                let n = &mut self.nodes[i];
                n.restarting = false;
                n.recovering_for = None;
            }
            match decision.action {
                InstanceAction::Nothing | InstanceAction::WaitForWalReceiver => {}
                InstanceAction::Start if self.nodes[i].restarting => {
                    // Crash recovery: usually a few steps, sometimes longer than the
                    // operator's bound.
                    let steps = if self.rng.chance(0.1) {
                        40 + self.rng.below(40) as u32
                    } else {
                        1 + self.rng.below(4) as u32
                    };
                    let n = &mut self.nodes[i];
                    match n.recovering_for {
                        None => n.recovering_for = Some(steps),
                        Some(0) | Some(1) => {
                            n.recovering_for = None;
                            n.restarting = false;
                            n.postmaster = true;
                        }
                        Some(k) => n.recovering_for = Some(k - 1),
                    }
                }
                InstanceAction::Start => self.nodes[i].postmaster = true,
                InstanceAction::Stop => {
                    let n = &mut self.nodes[i];
                    n.postmaster = false;
                    n.wal_receiver = false;
                }
                InstanceAction::Promote => self.promote(i),
                InstanceAction::PublishCurrentPrimary => {
                    if view.readable {
                        self.state.current_primary = Some(self.nodes[i].name.clone());
                    }
                }
                InstanceAction::Rewind { .. }
                    if self.cfg.faults.rewind_failure && self.rng.chance(0.3) =>
                {
                    self.nodes[i].rewind_failed = true;
                }
                InstanceAction::Rewind { source } => self.rewind(i, &source),
                InstanceAction::NeedsReclone { source } => self.reclone(i, &source),
            }
        }
    }

    fn promote(&mut self, i: usize) {
        self.max_timeline += 1;
        let tl = self.max_timeline;
        let (old_tl, at) = (self.nodes[i].timeline, self.nodes[i].lsn);
        self.forks.insert(tl, (old_tl, at));
        let n = &mut self.nodes[i];
        n.pgdata = PgData::Primary;
        n.timeline = tl;
        n.wal_receiver = false;
        self.report.failovers += 1;
        // Invariant 3: every acknowledged commit must be in the new primary's history.
        let lost = self.acked.iter().filter(|l| **l > at).count() as u64;
        self.acked.retain(|l| *l <= at);
        self.pending.clear();
        if lost > 0 {
            self.report.acked_lost += lost;
            if matches!(&self.cfg.sync, SyncPolicy::Explicit(s) if s.durability == Durability::Required)
            {
                let name = self.nodes[i].name.clone();
                self.violation(
                    Invariant::AckedCommitLost,
                    format!("{name} was promoted at LSN {at} but {lost} acknowledged commits were beyond it"),
                );
            }
        }
    }

    fn rewind(&mut self, i: usize, source: &str) {
        let Some(s) = self.idx(source) else { return };
        let (stl, slsn) = (self.nodes[s].timeline, self.nodes[s].lsn);
        let (tl, lsn) = (self.nodes[i].timeline, self.nodes[i].lsn);
        let keep = if tl == stl {
            lsn.min(slsn)
        } else {
            self.fork_point(tl, stl).unwrap_or(0).min(lsn)
        };
        let n = &mut self.nodes[i];
        n.lsn = keep;
        n.timeline = stl;
        n.pgdata = PgData::Standby;
        n.diverged = false;
    }

    /// A new copy of `source`'s data, where it is now: what `pg_basebackup` makes.
    fn reclone(&mut self, i: usize, source: &str) {
        let Some(s) = self.idx(source) else { return };
        let (stl, slsn) = (self.nodes[s].timeline, self.nodes[s].lsn);
        let n = &mut self.nodes[i];
        n.lsn = slsn;
        n.timeline = stl;
        n.pgdata = PgData::Standby;
        n.diverged = false;
        n.rewind_failed = false;
        self.report.reclones += 1;
    }

    fn observe(&self) -> Observed {
        let instances = self
            .nodes
            .iter()
            .map(|n| {
                let reachable = n.pod && n.isolated_for == 0 && n.op_link_down_for == 0;
                let status = if !n.pod {
                    InstanceStatus::unreachable(&n.name, "pod is gone")
                } else if n.isolated_for > 0 {
                    InstanceStatus::unreachable(&n.name, "node unreachable")
                } else if !n.postmaster {
                    let mut s = InstanceStatus::unreachable(&n.name, "PostgreSQL is not running");
                    if reachable {
                        s.restarting_after_crash = n.restarting;
                        let since = self.step.saturating_sub(600);
                        s.recent_crashes = n.crashes.iter().filter(|t| **t > since).count() as u32;
                    }
                    s
                } else {
                    let primary = n.pgdata == PgData::Primary;
                    InstanceStatus {
                        name: n.name.clone(),
                        error: (!reachable).then(|| "status request timed out".to_owned()),
                        is_pod_ready: true,
                        is_primary: primary && reachable,
                        timeline: n.timeline,
                        current_lsn: if primary { Lsn(n.lsn) } else { Lsn(0) },
                        received_lsn: if primary { Lsn(0) } else { Lsn(n.lsn) },
                        replay_lsn: if primary { Lsn(0) } else { Lsn(n.lsn) },
                        is_wal_receiver_active: n.wal_receiver,
                        ..Default::default()
                    }
                };
                ObservedInstance {
                    name: n.name.clone(),
                    running: n.pod || n.pod_back_in > 0,
                    role: n.role,
                    status,
                    outdated: n.outdated.clone(),
                    restart_only: false,
                    creating: false,
                }
            })
            .collect();
        let sync_in_effect = self
            .state
            .current_primary
            .as_deref()
            .and_then(|p| self.idx(p))
            .map(|i| &self.nodes[i])
            .filter(|n| {
                n.pod
                    && n.postmaster
                    && n.isolated_for == 0
                    && n.op_link_down_for == 0
                    && n.pgdata == PgData::Primary
            })
            .map(|_| self.sync_value.clone());
        Observed {
            instances,
            state: self.state.clone(),
            sync_in_effect,
        }
    }

    fn operate(&mut self, operator: &mut dyn Operator) {
        for n in &mut self.nodes {
            if n.pod && n.postmaster {
                n.rollout_down = false;
            }
        }
        let observed = self.observe();
        let plan = operator.reconcile(&self.policy, &observed, self.now());
        self.check_election(&observed, &plan);
        self.state = plan.state.clone();
        for action in plan.actions {
            self.apply(action, &observed);
        }
    }

    fn apply(&mut self, action: Action, observed: &Observed) {
        match action {
            Action::CreateInstance { name, bootstrap } => {
                if self.idx(&name).is_some() {
                    return;
                }
                match bootstrap {
                    Bootstrap::Initdb => self.nodes.push(Node::new(name, PgData::Primary, 1, 0)),
                    Bootstrap::Join { source } => {
                        let Some(s) = self
                            .idx(&source)
                            .filter(|s| self.nodes[*s].is_running_primary())
                        else {
                            return;
                        };
                        let (tl, lsn) = (self.nodes[s].timeline, self.nodes[s].lsn);
                        let mut n = Node::new(name, PgData::Standby, tl, lsn);
                        n.postmaster = true;
                        self.nodes.push(n);
                    }
                }
            }
            Action::StartInstance { name } => {
                if let Some(i) = self.idx(&name)
                    && !self.nodes[i].pod
                    && self.nodes[i].pod_back_in == 0
                {
                    self.nodes[i].pod_back_in = 3;
                }
            }
            Action::StopInstance { name } => {
                let Some(i) = self.idx(&name) else { return };
                // Invariant 5: one instance at a time, the primary only when the replicas
                // are done.
                let others_down = self
                    .nodes
                    .iter()
                    .filter(|n| n.rollout_down && n.name != name)
                    .count();
                if others_down > 0 {
                    self.violation(
                        Invariant::RolloutOrder,
                        format!("{name} stopped while another instance is being updated"),
                    );
                }
                let is_primary = observed.state.current_primary.as_deref() == Some(name.as_str());
                if is_primary
                    && self
                        .nodes
                        .iter()
                        .any(|n| n.name != name && n.outdated.is_some())
                {
                    self.violation(
                        Invariant::RolloutOrder,
                        format!("the primary {name} was updated before its replicas"),
                    );
                }
                let n = &mut self.nodes[i];
                n.pod = false;
                n.postmaster = false;
                n.wal_receiver = false;
                n.pod_back_in = 0;
                n.rollout_down = n.outdated.is_some();
            }
            Action::DeleteInstance { name } => {
                if let Some(i) = self.idx(&name) {
                    self.nodes.remove(i);
                }
            }
            Action::SetRole { name, role } => {
                if let Some(i) = self.idx(&name) {
                    self.nodes[i].role = Some(role);
                }
            }
            Action::ApplySyncStandbyNames { value, config } => {
                self.check_quorum_bounds(config.as_ref(), observed);
                let Some(i) = observed
                    .state
                    .current_primary
                    .as_deref()
                    .and_then(|p| self.idx(p))
                else {
                    return;
                };
                let n = &self.nodes[i];
                if n.is_running_primary() && n.isolated_for == 0 && n.op_link_down_for == 0 {
                    self.sync = config;
                    self.sync_value = value;
                }
            }
            Action::RestartInPlace { name } => {
                if let Some(i) = self.idx(&name) {
                    self.nodes[i].outdated = None;
                }
            }
            Action::KillInstance { name, .. } => {
                // The platform reaches the node unless it is cut off.
                if let Some(i) = self.idx(&name)
                    && self.nodes[i].isolated_for == 0
                {
                    let n = &mut self.nodes[i];
                    n.pod = false;
                    n.postmaster = false;
                    n.wal_receiver = false;
                    n.restarting = false;
                    n.recovering_for = None;
                    n.pod_back_in = 0;
                }
            }
        }
    }

    /// Invariant 2, checked against the ground truth the operator observed.
    fn check_election(&mut self, observed: &Observed, plan: &Plan) {
        let before = observed.state.target_primary.as_deref();
        let after = plan.state.target_primary.as_deref();
        let (Some(after), Some(current)) = (after, observed.state.current_primary.as_deref())
        else {
            return;
        };
        if after == PENDING || Some(after) == before || after == current {
            return;
        }
        // A switchover moves the role away from a live primary, whose replicas stream by
        // design; any other change of target is a failover.
        let from_failover = before == Some(PENDING)
            || !observed.instances.iter().any(|i| {
                i.name == current && i.running && i.status.is_reachable() && i.status.is_primary
            });
        let reachable: Vec<&InstanceStatus> = observed
            .instances
            .iter()
            .filter(|i| i.running && i.status.is_reachable() && i.name != current)
            .map(|i| &i.status)
            .collect();
        if from_failover && let Some(s) = reachable.iter().find(|s| s.is_wal_receiver_active) {
            let name = s.name.clone();
            self.violation(
                Invariant::Election,
                format!("{after} elected while {name} still streamed"),
            );
            return;
        }
        let fencing: &Fencing = &self.policy.fencing;
        let eligible: Vec<&&InstanceStatus> = reachable
            .iter()
            .filter(|s| {
                !s.is_primary && s.is_pod_ready && !s.wal_disk_full && !fencing.is_fenced(&s.name)
            })
            .collect();
        let Some(winner) = eligible.iter().find(|s| s.name == after) else {
            self.violation(
                Invariant::Election,
                format!("{after} elected but it is not a reachable, ready, unfenced replica"),
            );
            return;
        };
        let newest = eligible.iter().map(|s| s.timeline).max().unwrap_or(0);
        let best = eligible
            .iter()
            .filter(|s| s.timeline == newest)
            .map(|s| s.wal_position())
            .max()
            .unwrap_or_default();
        if winner.timeline != newest || winner.wal_position() < best {
            let msg = format!(
                "{after} elected at {} but a replica had {best}",
                winner.wal_position()
            );
            self.violation(Invariant::Election, msg);
        }
    }

    /// Invariant 4.
    fn check_quorum_bounds(&mut self, config: Option<&SyncStandbys>, observed: &Observed) {
        let current = observed.state.current_primary.clone().unwrap_or_default();
        let ready = observed
            .instances
            .iter()
            .filter(|i| i.name != current && i.status.is_reachable() && i.status.is_pod_ready)
            .count() as u32;
        let q = config.map_or(0, |c| c.number);
        let listed = config.map_or(0, |c| {
            c.names.iter().filter(|n| **n != current).count() as u32
        });
        let ok = match &self.cfg.sync {
            SyncPolicy::Async => config.is_none(),
            SyncPolicy::Legacy { min, max } => {
                q <= *max
                    && q <= ready
                    && (ready < *min || *min == 0 || q >= *min)
                    && (ready < *max || q == *max)
            }
            SyncPolicy::Explicit(s) => match s.durability {
                Durability::Required => q == s.number,
                Durability::Preferred => {
                    q <= s.number && q <= listed && (q == s.number || q == listed)
                }
            },
        };
        if !ok {
            self.violation(
                Invariant::QuorumBounds,
                format!("{q} synchronous standbys with {ready} ready replicas ({config:?})"),
            );
        }
    }

    /// Invariant 1, and the convergence probe.
    fn check(&mut self) {
        let writable: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.is_running_primary() && n.isolated_for == 0)
            .map(|n| n.name.clone())
            .collect();
        if writable.len() > 1 {
            self.violation(
                Invariant::SplitBrain,
                format!("{} are all writable primaries", writable.join(", ")),
            );
        }
    }

    fn healthy(&self, operator: &mut dyn Operator) -> bool {
        let Some(current) = self.state.current_primary.as_deref() else {
            return false;
        };
        if self.state.target_primary.as_deref() != Some(current)
            || self.nodes.len() != self.cfg.instances as usize
        {
            return false;
        }
        let Some(p) = self.idx(current) else {
            return false;
        };
        let ptl = self.nodes[p].timeline;
        let all_good = self.nodes.iter().enumerate().all(|(i, n)| {
            let streaming =
                i == p || (n.pgdata == PgData::Standby && n.wal_receiver && n.timeline == ptl);
            n.pod && n.postmaster && streaming && n.outdated.is_none()
        }) && self.nodes[p].is_running_primary();
        if !all_good {
            return false;
        }
        let observed = self.observe();
        operator
            .reconcile(&self.policy, &observed, self.now())
            .is_noop(&observed.state)
    }
}

impl fmt::Display for SimReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "steps {} failovers {} reclones {} acked {} lost {} converged {} violations {:?}",
            self.steps,
            self.failovers,
            self.reclones,
            self.acked,
            self.acked_lost,
            self.converged,
            self.violations
        )
    }
}

#[cfg(test)]
mod tests;
