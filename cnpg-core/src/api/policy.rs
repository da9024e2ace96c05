//! From a `Cluster` manifest to the decisions' [`Policy`].

use super::cluster::{
    Cluster, DataDurability, PrimaryUpdateMethod, PrimaryUpdateStrategy, SynchronousMethod,
};
use crate::fencing::{Fencing, FencingParseError};
use crate::naming::{
    ANNOTATION_FENCED_INSTANCES, ANNOTATION_HIBERNATION, ANNOTATION_RECONCILIATION_LOOP,
};
use crate::policy::{Policy, UpdateMethod, UpdateStrategy};
use crate::sync::{Durability, Method, SyncPolicy, SyncSpec};
use std::time::Duration;

impl Cluster {
    /// `spec.tablespaces`, placed as `location` says (the platform's choice).
    pub fn tablespaces(
        &self,
        location: impl Fn(&str) -> String,
    ) -> Vec<crate::tablespaces::Tablespace> {
        self.spec
            .tablespaces
            .iter()
            .map(|t| crate::tablespaces::Tablespace {
                name: t.name.clone(),
                owner: t.owner.as_ref().and_then(|o| o.name.clone()),
                temporary: t.temporary,
                location: location(&t.name),
            })
            .collect()
    }

    /// Every parameter the instances get from the spec: the user's, the managed libraries
    /// (`parameters::effective`) and what `tablespaces` need.
    pub fn instance_parameters(
        &self,
        tablespaces: &[crate::tablespaces::Tablespace],
    ) -> std::collections::BTreeMap<String, String> {
        let mut p = self
            .spec
            .postgresql
            .as_ref()
            .map(|p| crate::parameters::effective(&p.parameters, &p.shared_preload_libraries))
            .unwrap_or_default();
        crate::tablespaces::with_parameters(&mut p, tablespaces);
        p
    }

    /// The HA policy of this cluster. A fencing annotation that does not parse fences
    /// nothing (as upstream) and is returned as a warning to surface in events.
    pub fn policy(&self) -> (Policy, Option<FencingParseError>) {
        let spec = &self.spec;
        let annotations = self.metadata.annotations.as_ref();
        let annotation = |k: &str| annotations.and_then(|a| a.get(k)).map(String::as_str);
        let (fencing, warning) = match Fencing::parse(annotation(ANNOTATION_FENCED_INSTANCES)) {
            Ok(f) => (f, None),
            Err(e) => (Fencing::None, Some(e)),
        };
        let sync = match spec
            .postgresql
            .as_ref()
            .and_then(|p| p.synchronous.as_ref())
        {
            Some(s) => SyncPolicy::Explicit(SyncSpec {
                method: match s.method {
                    SynchronousMethod::Any => Method::Any,
                    SynchronousMethod::First => Method::First,
                },
                number: s.number.max(0) as u32,
                max_standby_names_from_cluster: s
                    .max_standby_names_from_cluster
                    .map(|c| c.max(0) as u32),
                standby_names_pre: s.standby_names_pre.clone(),
                standby_names_post: s.standby_names_post.clone(),
                durability: match s.data_durability.unwrap_or_default() {
                    DataDurability::Required => Durability::Required,
                    DataDurability::Preferred => Durability::Preferred,
                },
                failover_quorum: s.failover_quorum == Some(true),
            }),
            None if spec.max_sync_replicas > 0 => SyncPolicy::Legacy {
                min: spec.min_sync_replicas.max(0) as u32,
                max: spec.max_sync_replicas as u32,
            },
            None => SyncPolicy::Async,
        };
        let policy = Policy {
            cluster: self.metadata.name.clone().unwrap_or_default(),
            instances: spec.instances.max(0) as u32,
            sync,
            failover_delay: Duration::from_secs(spec.failover_delay.max(0) as u64),
            crash_restart_bound: crate::policy::CRASH_RESTART_BOUND,
            primary_update_strategy: match spec.primary_update_strategy {
                PrimaryUpdateStrategy::Unsupervised => UpdateStrategy::Unsupervised,
                PrimaryUpdateStrategy::Supervised => UpdateStrategy::Supervised,
            },
            primary_update_method: match spec.primary_update_method {
                PrimaryUpdateMethod::Restart => UpdateMethod::Restart,
                PrimaryUpdateMethod::Switchover => UpdateMethod::Switchover,
            },
            fencing,
            hibernation: annotation(ANNOTATION_HIBERNATION) == Some("on"),
            reconciliation_disabled: annotation(ANNOTATION_RECONCILIATION_LOOP) == Some("disabled"),
        };
        (policy, warning)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(yaml: &str) -> Cluster {
        serde_saphyr::from_str(yaml).expect("test manifest")
    }

    #[test]
    fn maps_spec_and_annotations() {
        let c = cluster(
            "apiVersion: postgresql.cnpg.io/v1\nkind: Cluster\nmetadata:\n  name: pg\n  annotations:\n    cnpg.io/fencedInstances: '[\"pg-2\"]'\n    cnpg.io/hibernation: 'on'\nspec:\n  instances: 3\n  failoverDelay: 5\n  primaryUpdateMethod: switchover\n  postgresql:\n    synchronous:\n      method: first\n      number: 1\n  storage:\n    size: 1Gi\n",
        );
        let (p, warn) = c.policy();
        assert!(warn.is_none());
        assert_eq!((p.cluster.as_str(), p.instances), ("pg", 3));
        assert_eq!(p.failover_delay, Duration::from_secs(5));
        assert_eq!(p.primary_update_method, UpdateMethod::Switchover);
        assert!(p.fencing.is_fenced("pg-2") && p.hibernation);
        assert!(
            matches!(p.sync, SyncPolicy::Explicit(ref s) if s.method == Method::First && s.durability == Durability::Required)
        );
        assert!(p.sync.failover_quorum_required());
    }

    #[test]
    fn legacy_async_and_bad_fencing() {
        let c = cluster(
            "apiVersion: postgresql.cnpg.io/v1\nkind: Cluster\nmetadata:\n  name: pg\n  annotations:\n    cnpg.io/fencedInstances: 'pg-1'\nspec:\n  instances: 3\n  minSyncReplicas: 1\n  maxSyncReplicas: 2\n",
        );
        let (p, warn) = c.policy();
        assert_eq!(p.sync, SyncPolicy::Legacy { min: 1, max: 2 });
        assert!(warn.is_some() && p.fencing == Fencing::None);
        let c = cluster(
            "apiVersion: postgresql.cnpg.io/v1\nkind: Cluster\nmetadata:\n  name: pg\nspec:\n  instances: 2\n",
        );
        assert_eq!(c.policy().0.sync, SyncPolicy::Async);
    }
}
