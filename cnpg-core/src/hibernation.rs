//! Declarative hibernation (`cnpg.io/hibernation: on`): stop every instance but keep its
//! storage, and bring the cluster back on `off`.
//!
//! Upstream order: only start from a healthy cluster; delete the primary's pod first (so no
//! failover is triggered and the replicas hold everything it wrote), then the replicas one
//! at a time. The condition `cnpg.io/hibernation` walks `DeletingPods` →
//! `WaitingPodsDeletion` → `Hibernated`.

/// The next hibernation step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HibernationStep {
    /// Hibernation asked, but the cluster is not healthy: wait (`WaitingForHealthy`).
    WaitingForHealthy,
    /// Stop this instance, keeping its storage (`DeletingPods`).
    StopInstance(String),
    /// A stop is under way (`WaitingPodsDeletion`).
    WaitingPodsDeletion,
    /// Every instance is stopped (`Hibernated`).
    Hibernated,
}

impl HibernationStep {
    /// The reason of the `cnpg.io/hibernation` condition.
    pub fn condition_reason(&self) -> &'static str {
        match self {
            HibernationStep::WaitingForHealthy => "WaitingForHealthy",
            HibernationStep::StopInstance(_) => "DeletingPods",
            HibernationStep::WaitingPodsDeletion => "WaitingPodsDeletion",
            HibernationStep::Hibernated => "Hibernated",
        }
    }
}

/// A running instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    /// Name.
    pub name: String,
    /// Whether it is the primary.
    pub primary: bool,
    /// Whether it is already stopping.
    pub stopping: bool,
}

/// The next step while hibernation is on. `started` says hibernation already began (it
/// continues even if the cluster is no longer healthy, as upstream).
pub fn next_step(running: &[Running], healthy: bool, started: bool) -> HibernationStep {
    if running.is_empty() {
        return HibernationStep::Hibernated;
    }
    if !started && !healthy {
        return HibernationStep::WaitingForHealthy;
    }
    if running.iter().any(|r| r.stopping) {
        return HibernationStep::WaitingPodsDeletion;
    }
    let next = running
        .iter()
        .find(|r| r.primary)
        .or_else(|| {
            running
                .iter()
                .max_by(|a, b| crate::naming_order(&a.name).cmp(&crate::naming_order(&b.name)))
        })
        .expect("running is not empty");
    HibernationStep::StopInstance(next.name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(name: &str, primary: bool) -> Running {
        Running {
            name: name.into(),
            primary,
            stopping: false,
        }
    }

    #[test]
    fn primary_first_then_replicas_one_at_a_time() {
        let mut running = vec![r("pg-1", false), r("pg-2", true), r("pg-3", false)];
        assert_eq!(
            next_step(&running, false, false),
            HibernationStep::WaitingForHealthy
        );
        assert_eq!(
            next_step(&running, true, false),
            HibernationStep::StopInstance("pg-2".into())
        );
        running[1].stopping = true;
        assert_eq!(
            next_step(&running, false, true),
            HibernationStep::WaitingPodsDeletion
        );
        running.remove(1);
        assert_eq!(
            next_step(&running, false, true),
            HibernationStep::StopInstance("pg-3".into())
        );
        assert_eq!(next_step(&[], true, true), HibernationStep::Hibernated);
        assert_eq!(HibernationStep::Hibernated.condition_reason(), "Hibernated");
    }
}
