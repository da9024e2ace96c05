//! The operator on Kubernetes, end to end against the in-memory API server: the real
//! `KubePlatform` and `reconcile_cluster` through kube's real client, with simulated pods.
//!
//! The kubelet and the instance managers are played by [`Fleet`]: it runs each pod the
//! operator creates (initdb, join or existing data, from the pod's init containers), keeps
//! a fake PostgreSQL per PVC (role, timeline, LSN), sets the pods' readiness, serves their
//! `/pg/status`, and — through the real `KubeView` of `cnpg-instance` — reads the Cluster,
//! takes the primary Lease before promoting, and publishes `currentPrimary`.

use async_trait::async_trait;
use cnpg_core::api::Cluster;
use cnpg_core::lsn::Lsn;
use cnpg_core::status::InstanceStatus;
use cnpg_core::time::Timestamp;
use cnpg_instance::kube_view::KubeView;
use cnpg_instance::view::ClusterView;
use cnpg_operator::kube::platform::{InstanceClient, KubePlatform};
use cnpg_operator::kube::specs::OperatorSettings;
use cnpg_operator::platform::{PlatformError, reconcile_cluster};
use cnpg_operator::testkit::fakekube::FakeKube;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::ResourceExt;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const NS: &str = "db";

/// The data on one PVC.
#[derive(Debug, Clone)]
struct Disk {
    primary: bool,
    timeline: u32,
    lsn: u64,
}

/// One running pod's PostgreSQL.
#[derive(Debug, Clone)]
struct Pg {
    uid: String,
    up: bool,
    crashed: bool,
    receiver: bool,
    /// Ticks since the upstream was lost (the WAL receiver notices after a timeout).
    lost: u32,
    fenced: bool,
    sync_names: String,
    /// `shared_buffers` when PostgreSQL last started (a change needs a restart).
    started_with: Option<Option<String>>,
    /// The in-place restart token last obeyed.
    restart: Option<String>,
    pending_restart: bool,
    restarts: u32,
}

struct FleetState {
    disks: BTreeMap<String, Disk>,
    pgs: BTreeMap<String, Pg>,
    views: BTreeMap<String, KubeView>,
}

#[derive(Clone)]
struct Fleet {
    fake: FakeKube,
    state: Arc<Mutex<FleetState>>,
}

#[async_trait]
impl InstanceClient for Fleet {
    async fn status(
        &self,
        pod: &Pod,
        _access: &cnpg_operator::kube::platform::InstanceAccess,
    ) -> InstanceStatus {
        let name = pod.name_any();
        let s = self.state.lock().expect("fleet");
        let (Some(pg), Some(disk)) = (s.pgs.get(&name), s.disks.get(&name)) else {
            return InstanceStatus::unreachable(&name, "connection refused");
        };
        if !pg.up {
            let mut st = InstanceStatus::unreachable(&name, "PostgreSQL is down");
            st.is_fenced = pg.fenced;
            return st;
        }
        let mut st = if disk.primary {
            InstanceStatus::primary(&name, disk.timeline, Lsn(disk.lsn))
        } else {
            InstanceStatus::replica(&name, disk.timeline, Lsn(disk.lsn))
        };
        st.is_wal_receiver_active = pg.receiver;
        st.is_pod_ready = true;
        st.pending_restart = pg.pending_restart;
        st.synchronous_standby_names = disk.primary.then(|| pg.sync_names.clone());
        st
    }
}

impl Fleet {
    fn new(fake: &FakeKube) -> Self {
        Fleet {
            fake: fake.clone(),
            state: Arc::new(Mutex::new(FleetState {
                disks: BTreeMap::new(),
                pgs: BTreeMap::new(),
                views: BTreeMap::new(),
            })),
        }
    }

    /// kill -9 of PostgreSQL in a pod: it stays down, the pod turns unready.
    fn crash(&self, name: &str) {
        if let Some(pg) = self.state.lock().expect("fleet").pgs.get_mut(name) {
            pg.crashed = true;
            pg.up = false;
        }
    }

    /// One round of the kubelets and instance managers.
    async fn tick(&self) {
        let client = self.fake.client_as("instance");
        // The pods of cluster pg only (another cluster's are not run).
        let pods: Vec<Pod> = self
            .fake
            .list::<Pod>(NS)
            .into_iter()
            .filter(|p| p.labels().get("cnpg.io/cluster").is_none_or(|c| c == "pg"))
            .collect();
        let pvcs: Vec<String> = self.fake.names::<PersistentVolumeClaim>(NS);
        let cluster: Option<Cluster> = self.fake.get(NS, "pg");
        let views: Vec<(String, KubeView)> = {
            let mut s = self.state.lock().expect("fleet");
            s.disks.retain(|d, _| pvcs.contains(d));
            let names: Vec<String> = pods.iter().map(|p| p.name_any()).collect();
            s.pgs.retain(|n, _| names.contains(n));
            for p in &pods {
                let name = p.name_any();
                let uid = p.uid().unwrap_or_default();
                if s.pgs.get(&name).is_some_and(|pg| pg.uid == uid) {
                    continue;
                }
                // A new pod: its init containers say where its data comes from.
                let init = p
                    .spec
                    .as_ref()
                    .and_then(|s| s.init_containers.clone())
                    .unwrap_or_default();
                let verb = init
                    .iter()
                    .find(|c| c.name == "bootstrap")
                    .and_then(|c| c.args.as_ref().and_then(|a| a.first().cloned()));
                let primary_lsn = s
                    .disks
                    .values()
                    .filter(|d| d.primary)
                    .map(|d| (d.lsn, d.timeline))
                    .max();
                match verb.as_deref() {
                    Some("initdb") => {
                        s.disks.insert(
                            name.clone(),
                            Disk {
                                primary: true,
                                timeline: 1,
                                lsn: 100,
                            },
                        );
                    }
                    Some("join") => {
                        let (lsn, tl) = primary_lsn.expect("join needs a primary");
                        s.disks.insert(
                            name.clone(),
                            Disk {
                                primary: false,
                                timeline: tl,
                                lsn,
                            },
                        );
                    }
                    _ => assert!(s.disks.contains_key(&name), "{name} started without data"),
                }
                s.pgs.insert(
                    name.clone(),
                    Pg {
                        uid,
                        up: true,
                        crashed: false,
                        receiver: false,
                        lost: 0,
                        fenced: false,
                        sync_names: String::new(),
                        started_with: None,
                        restart: None,
                        pending_restart: false,
                        restarts: 0,
                    },
                );
                let view = KubeView::start(client.clone(), NS, "pg", &name, 5432)
                    .with_lease_duration(Duration::from_millis(600));
                s.views.insert(name, view);
            }
            s.views.retain(|n, _| names.contains(n));
            s.views
                .iter()
                .map(|(n, v)| (n.clone(), v.clone()))
                .collect()
        };
        let Some(_cluster) = cluster else { return };
        for (name, view) in views {
            let Ok(v) = view.read().await else { continue };
            let me = name.as_str();
            let fenced = v.is_fenced(me);
            let target = v.target_primary.clone();
            let current = v.current_primary.clone();
            let (is_primary, crashed) = {
                let s = self.state.lock().expect("fleet");
                (
                    s.disks.get(me).is_some_and(|d| d.primary),
                    s.pgs.get(me).is_some_and(|p| p.crashed),
                )
            };
            let mut promote = false;
            let mut publish = false;
            {
                let mut s = self.state.lock().expect("fleet");
                let primary_state = current.as_ref().and_then(|c| {
                    s.disks
                        .get(c)
                        .cloned()
                        .map(|d| (d, s.pgs.get(c).is_some_and(|p| p.up)))
                });
                let Some(pg) = s.pgs.get_mut(me) else {
                    continue;
                };
                pg.sync_names = v.synchronous_standby_names.clone();
                pg.fenced = fenced;
                let buffers = v.parameters.get("shared_buffers").cloned();
                if pg.started_with.is_none() {
                    pg.started_with = Some(buffers.clone());
                    pg.restart = v.restart.clone();
                }
                // The operator's in-place restart request for this instance.
                if v.restart != pg.restart {
                    pg.restart = v.restart.clone();
                    if v.restart
                        .as_deref()
                        .is_some_and(|t| t.starts_with(&format!("{me}@")))
                    {
                        pg.started_with = Some(buffers.clone());
                        pg.restarts += 1;
                    }
                }
                pg.pending_restart = pg.started_with.as_ref() != Some(&buffers);
                if crashed || fenced {
                    pg.up = false;
                    pg.receiver = false;
                } else if is_primary
                    && target.as_deref() != Some(me)
                    && current.as_deref() != Some(me)
                {
                    // The old primary: down until the new one published itself, then
                    // rewound and following it.
                    pg.up = false;
                    if current.is_some()
                        && current == target
                        && let Some((d, true)) = primary_state
                    {
                        let disk = s.disks.get_mut(me).expect("disk");
                        disk.primary = false;
                        disk.timeline = d.timeline;
                        disk.lsn = d.lsn;
                        s.pgs.get_mut(me).expect("pg").up = true;
                    }
                } else if is_primary && target.as_deref() != Some(me) {
                    // Told to step down (pending or someone else): stop.
                    pg.up = false;
                    pg.receiver = false;
                } else {
                    pg.up = true;
                    if target.as_deref() == Some(me) && !is_primary {
                        pg.receiver = false;
                        promote = true;
                    } else if target.as_deref() == Some(me) && current.as_deref() != Some(me) {
                        publish = true;
                    } else if !is_primary {
                        let following = current.is_some()
                            && current == target
                            && primary_state.as_ref().is_some_and(|(_, up)| *up);
                        pg.lost = if following { 0 } else { pg.lost + 1 };
                        pg.receiver = following || (pg.receiver && pg.lost < 2);
                        if let (true, Some((d, _))) = (following, primary_state) {
                            let disk = s.disks.get_mut(me).expect("disk");
                            if disk.timeline == d.timeline {
                                disk.lsn = d.lsn;
                            }
                        }
                    }
                }
            }
            if (promote || publish) && view.acquire_primary_lease(me).await.unwrap_or(false) {
                if promote {
                    let mut s = self.state.lock().expect("fleet");
                    let d = s.disks.get_mut(me).expect("disk");
                    d.primary = true;
                    d.timeline += 1;
                }
                view.publish_current_primary(me)
                    .await
                    .expect("publish currentPrimary");
            }
            // The primary commits.
            let mut s = self.state.lock().expect("fleet");
            let up = s.pgs.get(me).is_some_and(|p| p.up);
            if let Some(d) = s.disks.get_mut(me)
                && d.primary
                && up
                && current.as_deref() == Some(me)
            {
                d.lsn += 10;
            }
        }
        // The kubelet: readiness follows PostgreSQL.
        for p in &pods {
            let name = p.name_any();
            let ready = self
                .state
                .lock()
                .expect("fleet")
                .pgs
                .get(&name)
                .is_some_and(|pg| pg.up);
            let ip = format!(
                "10.0.0.{}",
                cnpg_core::naming::serial_of("pg", &name).unwrap_or(0)
            );
            self.fake.update::<Pod>(NS, &name, |v| {
                v["status"] = json!({
                    "phase": "Running",
                    "podIP": ip,
                    "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
                });
            });
        }
    }
}

struct World {
    fake: FakeKube,
    fleet: Fleet,
    platform: KubePlatform,
    now: u64,
}

const MANIFEST: &str = "apiVersion: postgresql.cnpg.io/v1
kind: Cluster
metadata: {name: pg, namespace: db}
spec:
  instances: 3
  storage: {size: 1Gi}
  postgresql:
    synchronous: {method: any, number: 1, dataDurability: required}
";

impl World {
    async fn new(manifest: &str) -> World {
        let fake = FakeKube::new();
        let fleet = Fleet::new(&fake);
        let platform = KubePlatform::new(
            fake.client_as("operator"),
            Arc::new(fleet.clone()),
            OperatorSettings::default(),
            Some("test".into()),
        );
        let cluster: Cluster = serde_saphyr::from_str(manifest).expect("manifest parses");
        fake.put(&cluster);
        World {
            fake,
            fleet,
            platform,
            now: 1_780_000_000_000,
        }
    }

    fn cluster(&self) -> Cluster {
        self.fake.get(NS, "pg").expect("the cluster exists")
    }

    /// One operator loop (retried on a conflict, as the controller would) after one round
    /// of the pods.
    async fn step(&mut self) -> String {
        self.fleet.tick().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        self.now += 1000;
        for _ in 0..5 {
            let Some(c) = self.fake.get::<Cluster>(NS, "pg") else {
                return "deleted".into();
            };
            match reconcile_cluster(&self.platform, &c, Timestamp(self.now)).await {
                Ok(o) => return o.reason,
                Err(PlatformError::Conflict(_)) => continue,
                Err(e) => panic!("reconcile failed: {e}"),
            }
        }
        panic!("five conflicts in a row");
    }

    async fn until(&mut self, what: &str, max: usize, done: impl Fn(&World) -> bool) {
        for _ in 0..max {
            if done(self) {
                return;
            }
            self.step().await;
        }
        let status = serde_json::to_string_pretty(&self.cluster().status).unwrap_or_default();
        panic!(
            "not reached after {max} loops: {what}\nstatus: {status}\npods: {:?}",
            self.roles()
        );
    }

    fn phase(&self) -> String {
        self.cluster()
            .status
            .and_then(|s| s.phase)
            .unwrap_or_default()
    }

    fn current(&self) -> Option<String> {
        self.cluster().status.and_then(|s| s.current_primary)
    }

    fn target(&self) -> Option<String> {
        self.cluster().status.and_then(|s| s.target_primary)
    }

    /// Pod → role label.
    fn roles(&self) -> BTreeMap<String, String> {
        self.fake
            .list::<Pod>(NS)
            .into_iter()
            .map(|p| {
                let role = p
                    .labels()
                    .get("cnpg.io/instanceRole")
                    .cloned()
                    .unwrap_or_default();
                (p.name_any(), role)
            })
            .collect()
    }

    /// The pods a Service selects, as kube-proxy would route (ready ones).
    fn endpoints(&self, service: &str) -> Vec<String> {
        let svc: Service = self.fake.get(NS, service).expect("service exists");
        let selector = svc.spec.and_then(|s| s.selector).unwrap_or_default();
        self.fake
            .list::<Pod>(NS)
            .into_iter()
            .filter(|p| selector.iter().all(|(k, v)| p.labels().get(k) == Some(v)))
            .filter(cnpg_operator::kube::platform::pod_ready)
            .map(|p| p.name_any())
            .collect()
    }

    fn healthy(&self) -> bool {
        self.phase() == "Cluster in healthy state"
            && self
                .fake
                .list::<Pod>(NS)
                .iter()
                .filter(|p| cnpg_operator::kube::platform::pod_ready(p))
                .count()
                == self.cluster().spec.instances as usize
    }

    async fn bootstrap(manifest: &str) -> World {
        let mut w = World::new(manifest).await;
        w.until("a healthy cluster", 60, World::healthy).await;
        // Failovers under `dataDurability: required` wait for the primary to confirm its
        // synchronous configuration.
        w.until("the synchronous configuration confirmed", 10, |w| {
            w.cluster()
                .status
                .and_then(|s| s.ha_state)
                .is_some_and(|h| h.published_sync.is_some())
        })
        .await;
        w
    }

    fn patch_cluster(&self, f: impl FnOnce(&mut serde_json::Value)) {
        assert!(self.fake.update::<Cluster>(NS, "pg", f));
    }

    /// The pods the operator deleted, in order.
    fn deleted_pods(&self) -> Vec<String> {
        self.fake
            .requests()
            .iter()
            .filter(|r| r.resource == "pods" && r.verb == "delete")
            .filter_map(|r| r.name.clone())
            .collect()
    }

    fn status_targets(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for r in self.fake.requests() {
            if r.resource == "clusters/status"
                && r.verb == "patch"
                && let Some(t) = r
                    .body
                    .pointer("/status/targetPrimary")
                    .and_then(|t| t.as_str())
                && out.last().map(String::as_str) != Some(t)
            {
                out.push(t.to_owned());
            }
        }
        out
    }
}

#[tokio::test]
async fn bootstraps_a_three_instance_cluster() {
    let w = World::bootstrap(MANIFEST).await;
    assert_eq!(w.current().as_deref(), Some("pg-1"));
    let roles = w.roles();
    assert_eq!(
        roles.get("pg-1").map(String::as_str),
        Some("primary"),
        "{roles:?}"
    );
    assert_eq!(
        roles.get("pg-2").map(String::as_str),
        Some("replica"),
        "{roles:?}"
    );
    assert_eq!(
        roles.get("pg-3").map(String::as_str),
        Some("replica"),
        "{roles:?}"
    );
    assert_eq!(
        w.fake.names::<PersistentVolumeClaim>(NS),
        vec!["pg-1", "pg-2", "pg-3"]
    );
    assert_eq!(w.endpoints("pg-rw"), vec!["pg-1"]);
    assert_eq!(w.endpoints("pg-ro"), vec!["pg-2", "pg-3"]);
    assert_eq!(w.endpoints("pg-r").len(), 3);
    assert_eq!(
        w.fake.names::<PodDisruptionBudget>(NS),
        vec!["pg", "pg-primary"]
    );
    let secrets = w.fake.names::<Secret>(NS);
    for s in [
        "pg-app",
        "pg-ca",
        "pg-server",
        "pg-replication",
        "pg-instance-passwords",
    ] {
        assert!(
            secrets.contains(&s.to_owned()),
            "{s} missing from {secrets:?}"
        );
    }
    let status = w.cluster().status.expect("status");
    let exp = status.certificates.expect("certificates").expirations;
    assert!(
        exp.contains_key("pg-server") && exp.contains_key("pg-replication"),
        "{exp:?}"
    );
    assert_eq!(status.ready_instances, 3);
    let ha = status.ha_state.expect("haState");
    assert_eq!(
        ha.synchronous_standby_names.as_deref(),
        Some("ANY 1 (\"pg-2\",\"pg-3\",\"pg-1\")")
    );
    // The second and third instances were cloned (join), the first made by initdb; every
    // object is owned by the Cluster.
    let pods: Vec<Pod> = w.fake.list(NS);
    for p in &pods {
        assert_eq!(p.owner_references()[0].kind, "Cluster");
    }
    // Events carry the core's reasons.
    let reasons: Vec<String> = w
        .fake
        .requests()
        .iter()
        .filter(|r| r.resource == "events" && r.verb == "create")
        .filter_map(|r| {
            r.body
                .get("reason")
                .and_then(|x| x.as_str())
                .map(str::to_owned)
        })
        .collect();
    assert!(
        reasons.contains(&"CreatingInstance".to_owned()),
        "{reasons:?}"
    );
}

#[tokio::test]
async fn scales_up_and_down() {
    let mut w = World::bootstrap(MANIFEST).await;
    w.patch_cluster(|c| c["spec"]["instances"] = json!(5));
    w.until("five ready instances", 60, World::healthy).await;
    assert_eq!(
        w.fake.names::<Pod>(NS),
        vec!["pg-1", "pg-2", "pg-3", "pg-4", "pg-5"]
    );
    w.patch_cluster(|c| c["spec"]["instances"] = json!(3));
    w.until("three instances again", 60, |w| {
        w.healthy() && w.fake.names::<Pod>(NS).len() == 3
    })
    .await;
    assert_eq!(w.fake.names::<Pod>(NS), vec!["pg-1", "pg-2", "pg-3"]);
    assert_eq!(
        w.fake.names::<PersistentVolumeClaim>(NS),
        vec!["pg-1", "pg-2", "pg-3"]
    );
    assert_eq!(w.current().as_deref(), Some("pg-1"));
}

#[tokio::test]
async fn rolling_update_replicas_first_primary_last() {
    let mut w = World::bootstrap(MANIFEST).await;
    w.fake.clear_requests();
    w.patch_cluster(|c| {
        c["spec"]["imageName"] = json!("ghcr.io/cloudnative-pg/postgresql:18.2-system-trixie")
    });
    w.until("every pod on the new image", 120, |w| {
        w.healthy()
            && w.fake.list::<Pod>(NS).iter().all(|p| {
                p.spec.as_ref().map(|s| s.containers[0].image.clone())
                    == Some(Some(
                        "ghcr.io/cloudnative-pg/postgresql:18.2-system-trixie".into(),
                    ))
            })
    })
    .await;
    let deleted = w.deleted_pods();
    assert_eq!(deleted.len(), 3, "one restart each: {deleted:?}");
    assert_eq!(
        deleted.last().map(String::as_str),
        Some("pg-1"),
        "the primary last: {deleted:?}"
    );
    // Restarted on their own PVCs: no new clone.
    assert_eq!(
        w.fake.names::<PersistentVolumeClaim>(NS),
        vec!["pg-1", "pg-2", "pg-3"]
    );
    assert_eq!(
        w.current().as_deref(),
        Some("pg-1"),
        "primaryUpdateMethod restart keeps the primary"
    );
}

#[tokio::test]
async fn a_lost_replica_pod_comes_back_on_its_pvc_and_a_lost_pvc_is_recloned() {
    let mut w = World::bootstrap(MANIFEST).await;
    let lsn_before = w.fleet.state.lock().expect("fleet").disks["pg-3"].lsn;
    w.fake.delete::<Pod>(NS, "pg-3");
    w.until("pg-3 back", 30, |w| w.healthy()).await;
    let pod: Pod = w.fake.get(NS, "pg-3").expect("pg-3 recreated");
    let init = pod.spec.and_then(|s| s.init_containers).unwrap_or_default();
    assert!(
        !init.iter().any(|c| c.name == "bootstrap"),
        "recreated on existing data, not cloned"
    );
    assert!(w.fleet.state.lock().expect("fleet").disks["pg-3"].lsn >= lsn_before);
    // Now the node with pg-3's storage is gone: pod and PVC.
    w.fake.delete::<Pod>(NS, "pg-3");
    w.fake.delete::<PersistentVolumeClaim>(NS, "pg-3");
    w.until("pg-3 cloned again", 30, |w| w.healthy()).await;
    let pod: Pod = w.fake.get(NS, "pg-3").expect("pg-3 recreated");
    let init = pod.spec.and_then(|s| s.init_containers).unwrap_or_default();
    let join = init
        .iter()
        .find(|c| c.name == "bootstrap")
        .expect("a bootstrap container");
    assert_eq!(
        join.args
            .as_ref()
            .and_then(|a| a.first())
            .map(String::as_str),
        Some("join")
    );
}

#[tokio::test]
async fn failover_marks_pending_relabels_elects_and_moves_rw() {
    let mut w = World::bootstrap(MANIFEST).await;
    w.fake.clear_requests();
    w.fleet.crash("pg-1");
    w.until("a new primary", 60, |w| {
        w.current().is_some_and(|c| c != "pg-1") && w.target() == w.current()
    })
    .await;
    let targets = w.status_targets();
    let new = w.current().expect("current");
    assert_eq!(
        targets.first().map(String::as_str),
        Some("pending"),
        "{targets:?}"
    );
    assert_eq!(targets.get(1), Some(&new), "{targets:?}");
    let relabels: Vec<(String, String)> = w
        .fake
        .requests()
        .iter()
        .filter(|r| r.resource == "pods" && r.verb == "patch")
        .filter_map(|r| {
            let role = r
                .body
                .pointer("/metadata/labels/cnpg.io~1instanceRole")?
                .as_str()?;
            Some((r.name.clone()?, role.to_owned()))
        })
        .collect();
    assert_eq!(
        relabels.first(),
        Some(&("pg-1".to_owned(), "unhealthy".to_owned())),
        "{relabels:?}"
    );
    w.until("-rw on the new primary", 30, |w| {
        w.endpoints("pg-rw") == vec![new.clone()]
    })
    .await;
    // The old primary's PostgreSQL comes back, rewinds and follows.
    w.fleet
        .state
        .lock()
        .expect("fleet")
        .pgs
        .get_mut("pg-1")
        .expect("pg-1")
        .crashed = false;
    w.until("healthy with pg-1 as a replica", 60, |w| {
        w.healthy() && w.roles()["pg-1"] == "replica"
    })
    .await;
    // The promoted instance took the primary Lease first.
    let lease_writes = w
        .fake
        .requests()
        .iter()
        .filter(|r| r.resource == "leases" && (r.verb == "update" || r.verb == "create"))
        .count();
    assert!(lease_writes > 0);
}

#[tokio::test]
async fn switchover_by_promote() {
    let mut w = World::bootstrap(MANIFEST).await;
    // What `kubectl cnpg promote pg pg-2` does.
    w.patch_cluster(|c| {
        c["status"]["targetPrimary"] = json!("pg-2");
        c["status"]["phase"] = json!("Switchover in progress");
    });
    w.until("pg-2 primary and healthy", 60, |w| {
        w.current().as_deref() == Some("pg-2") && w.healthy()
    })
    .await;
    assert_eq!(w.endpoints("pg-rw"), vec!["pg-2"]);
    assert_eq!(w.roles()["pg-1"], "replica");
}

#[tokio::test]
async fn a_fenced_primary_is_not_failed_over() {
    let mut w = World::bootstrap(MANIFEST).await;
    w.patch_cluster(|c| {
        c["metadata"]["annotations"] = json!({"cnpg.io/fencedInstances": "[\"pg-1\"]"})
    });
    for _ in 0..15 {
        w.step().await;
    }
    assert_eq!(
        w.target().as_deref(),
        Some("pg-1"),
        "no failover away from a fenced primary"
    );
    assert!(
        w.endpoints("pg-rw").is_empty(),
        "the fenced primary is not ready"
    );
    w.patch_cluster(|c| c["metadata"]["annotations"] = json!({}));
    w.until("healthy again", 30, World::healthy).await;
    assert_eq!(w.current().as_deref(), Some("pg-1"));
}

#[tokio::test]
async fn hibernation_and_rehydration() {
    let mut w = World::bootstrap(MANIFEST).await;
    w.patch_cluster(|c| c["metadata"]["annotations"] = json!({"cnpg.io/hibernation": "on"}));
    w.until("no pods", 30, |w| w.fake.names::<Pod>(NS).is_empty())
        .await;
    for _ in 0..3 {
        w.step().await;
    }
    assert_eq!(
        w.fake.names::<PersistentVolumeClaim>(NS).len(),
        3,
        "storage kept"
    );
    assert!(
        w.cluster()
            .status
            .and_then(|s| s.ha_state)
            .is_some_and(|h| h.hibernating)
    );
    w.patch_cluster(|c| c["metadata"]["annotations"] = json!({"cnpg.io/hibernation": "off"}));
    w.until("rehydrated", 60, World::healthy).await;
    assert_eq!(w.current().as_deref(), Some("pg-1"));
    assert_eq!(w.endpoints("pg-rw"), vec!["pg-1"]);
}

#[tokio::test]
async fn deleting_the_cluster_deletes_what_it_owns() {
    let mut w = World::bootstrap(MANIFEST).await;
    assert!(w.fake.delete::<Cluster>(NS, "pg"));
    assert!(w.fake.names::<Pod>(NS).is_empty());
    assert!(w.fake.names::<PersistentVolumeClaim>(NS).is_empty());
    assert!(w.fake.names::<Service>(NS).is_empty());
    assert!(w.fake.names::<Secret>(NS).is_empty());
    assert!(w.fake.names::<PodDisruptionBudget>(NS).is_empty());
    assert_eq!(w.step().await, "deleted");
    assert!(w.fake.names::<Pod>(NS).is_empty(), "nothing recreated");
}

#[tokio::test]
async fn an_invalid_cluster_starts_nothing() {
    let mut w = World::new(&MANIFEST.replace("instances: 3", "instances: 0")).await;
    w.step().await;
    assert!(w.fake.names::<Pod>(NS).is_empty());
    assert!(w.fake.names::<PersistentVolumeClaim>(NS).is_empty());
    assert_eq!(w.phase(), "Cluster cannot be created");
    let reason = w
        .cluster()
        .status
        .and_then(|s| s.phase_reason)
        .unwrap_or_default();
    assert!(reason.contains("spec.instances"), "{reason}");
}

type Grant = (String, String, String);

fn grants(perms: &[cnpg_operator::kube::install::Permission]) -> std::collections::BTreeSet<Grant> {
    perms
        .iter()
        .flat_map(|(g, r, verbs)| {
            verbs
                .iter()
                .map(move |v| ((*g).to_owned(), (*r).to_owned(), (*v).to_owned()))
        })
        .collect()
}

/// The real controller (leader election, watches, reconciles) against the fake API while
/// the cluster is bootstrapped, fails over, loses a pod, fails an action and scales down:
/// every request the operator makes must be granted by the generated RBAC, and every grant
/// must be used — except those it holds only to grant the instance managers their Role.
#[tokio::test]
async fn rbac_grants_exactly_what_the_code_uses() {
    use cnpg_operator::kube::controller::{self, ControllerConfig, Metrics};
    use cnpg_operator::kube::install::{INSTANCE_PERMISSIONS, OPERATOR_PERMISSIONS};
    let w = World::new(MANIFEST).await;
    // A server certificate about to expire: it is renewed.
    w.fake.put(&Secret {
        metadata: kube::core::ObjectMeta {
            name: Some("pg-server".into()),
            namespace: Some(NS.into()),
            labels: Some([("cnpg.io/cluster".to_owned(), "pg".to_owned())].into()),
            annotations: Some(
                [(
                    cnpg_operator::kube::secrets::ANNOTATION_EXPIRATION.to_owned(),
                    "2020-01-01T00:00:00Z".to_owned(),
                )]
                .into(),
            ),
            ..Default::default()
        },
        ..Default::default()
    });
    // The user's own client CA and replication certificate (cert-manager's, say): read by
    // name, never written.
    let ca = cnpg_instance::tls::issue_ca("users-ca", 1_780_000_000_000).expect("ca");
    let leaf = cnpg_instance::tls::issue_leaf(
        &ca.cert,
        &ca.key,
        "streaming_replica",
        vec![],
        true,
        1_780_000_000_000,
    )
    .expect("leaf");
    let (key_id, key_secret) = ("key-id".to_owned(), "key-secret".to_owned());
    for (name, data) in [
        (
            "users-client-ca",
            [("ca.crt", &ca.cert), ("ca.key", &ca.key)],
        ),
        (
            "users-replication",
            [("tls.crt", &leaf.cert), ("tls.key", &leaf.key)],
        ),
        ("s3-creds", [("ID", &key_id), ("SECRET", &key_secret)]),
    ] {
        w.fake.put(&Secret {
            metadata: kube::core::ObjectMeta {
                name: Some(name.into()),
                namespace: Some(NS.into()),
                ..Default::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| {
                        (
                            (*k).to_owned(),
                            k8s_openapi::ByteString(v.as_bytes().to_vec()),
                        )
                    })
                    .collect(),
            ),
            ..Default::default()
        });
    }
    w.patch_cluster(|c| {
        c["spec"]["certificates"] =
            json!({"clientCASecret": "users-client-ca", "replicationTLSSecret": "users-replication"})
    });
    // WAL archiving, with the user's S3 credentials (s3-creds, above): read, copied into
    // pg-archive.
    w.patch_cluster(|c| {
        c["spec"]["backup"] = json!({"barmanObjectStore": {
            "destinationPath": "s3://bucket/pg",
            "s3Credentials": {
                "accessKeyId": {"name": "s3-creds", "key": "ID"},
                "secretAccessKey": {"name": "s3-creds", "key": "SECRET"}
            }
        }})
    });
    // A Backup of a cluster that does not exist: the Backup controller fails it, saying so.
    let mut orphan = cnpg_core::api::backup::Backup::new(
        "orphan",
        serde_json::from_value(json!({"cluster": {"name": "nope"}})).expect("spec"),
    );
    orphan.metadata.namespace = Some(NS.into());
    w.fake.put(&orphan);
    // A ScheduledBackup with `immediate`: its first Backup is created at once, owned by
    // the Cluster.
    let mut daily = cnpg_core::api::backup::ScheduledBackup::new(
        "daily",
        serde_json::from_value(json!({
            "schedule": "0 0 0 * * *",
            "immediate": true,
            "backupOwnerReference": "cluster",
            "cluster": {"name": "pg"}
        }))
        .expect("spec"),
    );
    daily.metadata.namespace = Some(NS.into());
    w.fake.put(&daily);
    // A Pooler in front of pg: its Deployment, Service and configuration; the cluster's
    // poolers' certificate and the integration in its status.
    let pool: cnpg_core::api::Pooler = serde_saphyr::from_str(
        "apiVersion: postgresql.cnpg.io/v1
kind: Pooler
metadata: {name: pool, namespace: db}
spec:
  cluster: {name: pg}
  instances: 2
  pgbouncer: {poolMode: transaction, parameters: {default_pool_size: '7'}}
",
    )
    .expect("pooler parses");
    w.fake.put(&pool);
    // A cluster recovered from a completed Backup (bootstrap.recovery.backup): the operator
    // reads the Backup, makes the recovery source's Secret from what it recorded, then the
    // first pod, whose bootstrap step is `recover`.
    let mut made = cnpg_core::api::backup::Backup::new(
        "made",
        serde_json::from_value(json!({"cluster": {"name": "pg"}})).expect("spec"),
    );
    made.metadata.namespace = Some(NS.into());
    made.status = Some(
        serde_json::from_value(json!({
            "phase": "completed", "backupId": "20261202T000000",
            "destinationPath": "s3://bucket/pg", "serverName": "pg",
            "s3Credentials": {
                "accessKeyId": {"name": "s3-creds", "key": "ID"},
                "secretAccessKey": {"name": "s3-creds", "key": "SECRET"}
            }
        }))
        .expect("status"),
    );
    w.fake.put(&made);
    let restored: Cluster = serde_saphyr::from_str(
        "apiVersion: postgresql.cnpg.io/v1
kind: Cluster
metadata: {name: restored, namespace: db}
spec:
  instances: 1
  storage: {size: 1Gi}
  bootstrap: {recovery: {backup: {name: made}}}
",
    )
    .expect("manifest parses");
    w.fake.put(&restored);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let health = free_addr();
    let config = ControllerConfig {
        identity: "operator-0".into(),
        watch_namespace: None,
        lease_namespace: "cnpg-system".into(),
        lease_duration: Duration::from_millis(600),
        health_addr: Some(health),
    };
    let operator = tokio::spawn(controller::run(
        w.fake.client_as("operator"),
        w.platform.clone(),
        config,
        Metrics::default(),
        async move {
            let _ = stopped.await;
        },
    ));
    let healthy = |w: &World| w.healthy();
    let tick = |w: &World| {
        let fleet = w.fleet.clone();
        async move {
            fleet.tick().await;
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    };
    let mut n = 0;
    while !healthy(&w) {
        tick(&w).await;
        n += 1;
        assert!(
            n < 500,
            "the controller did not bootstrap the cluster: {:?}",
            w.roles()
        );
    }
    n = 0;
    loop {
        let b: cnpg_core::api::backup::Backup = w.fake.get(NS, "orphan").expect("the Backup");
        let st = b.status.unwrap_or_default();
        if st.phase.as_deref() == Some("failed") {
            assert!(
                st.error
                    .as_deref()
                    .unwrap_or("")
                    .contains("cluster nope does not exist"),
                "{st:?}"
            );
            break;
        }
        tick(&w).await;
        n += 1;
        assert!(n < 500, "the orphan Backup is not failed: {st:?}");
    }
    n = 0;
    loop {
        let sb: cnpg_core::api::backup::ScheduledBackup =
            w.fake.get(NS, "daily").expect("the ScheduledBackup");
        let last = sb.status.and_then(|s| s.last_schedule_time);
        let made: Vec<String> = w
            .fake
            .names::<cnpg_core::api::backup::Backup>(NS)
            .into_iter()
            .filter(|b| b.starts_with("daily-"))
            .collect();
        if last.is_some() && made.len() == 1 {
            let b: cnpg_core::api::backup::Backup = w.fake.get(NS, &made[0]).expect("made");
            let owners = b.metadata.owner_references.unwrap_or_default();
            assert!(
                owners.iter().any(|o| o.kind == "Cluster" && o.name == "pg"),
                "{owners:?}"
            );
            break;
        }
        tick(&w).await;
        n += 1;
        assert!(n < 500, "no scheduled Backup: {last:?} {made:?}");
    }
    let server: Secret = w.fake.get(NS, "pg-server").expect("server certificate");
    let expires = server.annotations()[cnpg_operator::kube::secrets::ANNOTATION_EXPIRATION].clone();
    assert!(expires.as_str() > "2026-", "renewed: {expires}");
    assert!(server.data.is_some_and(|d| d.contains_key("tls.crt")));
    // Its own endpoints.
    let get = |path: &'static str| {
        cnpg_instance::http::get("127.0.0.1", health.port(), path, Duration::from_secs(2))
    };
    assert_eq!(get("/healthz").await.expect("healthz").0, 200);
    assert_eq!(get("/readyz").await.expect("readyz").0, 200);
    let metrics = get("/metrics").await.expect("metrics").1;
    assert!(metrics.contains("cnpg_operator_leader 1"), "{metrics}");
    assert!(
        metrics.contains("cnpg_operator_reconciles_total"),
        "{metrics}"
    );
    n = 0;
    loop {
        let p: cnpg_core::api::Pooler = w.fake.get(NS, "pool").expect("the Pooler");
        let c: Cluster = w.fake.get(NS, "pg").expect("the Cluster");
        let integrated = c
            .status
            .and_then(|s| s.pooler_integrations)
            .and_then(|i| i.pg_bouncer_integration)
            .is_some_and(|i| i.secrets == ["pg-pooler"]);
        let made = w
            .fake
            .get::<k8s_openapi::api::apps::v1::Deployment>(NS, "pool")
            .is_some()
            && w.fake
                .get::<k8s_openapi::api::core::v1::Service>(NS, "pool")
                .is_some()
            && w.fake.get::<Secret>(NS, "pool-config").is_some()
            && w.fake.get::<Secret>(NS, "pg-pooler").is_some();
        if made && integrated && p.status.is_some_and(|s| s.phase.is_some()) {
            break;
        }
        tick(&w).await;
        n += 1;
        assert!(n < 500, "the Pooler was not set up");
    }
    let config = |w: &World| {
        let s: Secret = w.fake.get(NS, "pool-config").expect("pool-config");
        String::from_utf8_lossy(&s.data.expect("data")["config.json"].0).into_owned()
    };
    assert!(config(&w).contains("\"pg-rw\""), "{}", config(&w));
    // A changed parameter rewrites the configuration the pods read (no new pods).
    let mut changed: cnpg_core::api::Pooler = w.fake.get(NS, "pool").expect("the Pooler");
    changed
        .spec
        .pgbouncer
        .parameters
        .insert("default_pool_size".into(), "9".into());
    w.fake.put(&changed);
    n = 0;
    while !config(&w).contains("\"9\"") {
        tick(&w).await;
        n += 1;
        assert!(
            n < 500,
            "the configuration was not rewritten: {}",
            config(&w)
        );
    }
    // The recovered cluster's first pod restores the Backup, from the Secret made for it.
    n = 0;
    while w.fake.get::<Pod>(NS, "restored-1").is_none() {
        tick(&w).await;
        n += 1;
        assert!(n < 500, "no pod for the recovered cluster");
    }
    let source: Secret = w
        .fake
        .get(NS, "restored-recovery-source")
        .expect("the recovery source's Secret");
    let config = source
        .data
        .as_ref()
        .and_then(|d| d.get("recovery-source.json"))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .or_else(|| {
            source
                .string_data
                .as_ref()
                .and_then(|d| d.get("recovery-source.json").cloned())
        })
        .expect("recovery-source.json");
    assert!(
        config.contains("s3://bucket/pg") && config.contains("key-secret"),
        "{config}"
    );
    let pod: Pod = w.fake.get(NS, "restored-1").expect("restored-1");
    let init = serde_json::to_string(&pod.spec.expect("spec").init_containers).expect("json");
    assert!(
        init.contains("\"recover\"") && init.contains("20261202T000000"),
        "{init}"
    );
    // That cluster goes; what follows counts cluster pg's objects.
    w.fake.delete::<Cluster>(NS, "restored");
    for pod in w.fake.names::<Pod>(NS) {
        if pod.starts_with("restored") {
            w.fake.delete::<Pod>(NS, &pod);
        }
    }
    for pdb in w.fake.names::<PodDisruptionBudget>(NS) {
        if pdb.starts_with("restored") {
            w.fake.delete::<PodDisruptionBudget>(NS, &pdb);
        }
    }
    // A replica's pod is lost: it is read back and recreated.
    w.fake.delete::<Pod>(NS, "pg-3");
    w.fake.fail("create", "pods", 3);
    n = 0;
    while w.fake.get::<Pod>(NS, "pg-3").is_none() || !healthy(&w) {
        tick(&w).await;
        n += 1;
        assert!(n < 500, "pg-3 not recreated");
    }
    // Failover.
    w.fleet.crash("pg-1");
    n = 0;
    while w.current().as_deref() == Some("pg-1") || w.target() != w.current() {
        tick(&w).await;
        n += 1;
        assert!(n < 500, "no failover");
    }
    // Scale down to two: a replica, its PVC and the replicas' PDB go.
    w.patch_cluster(|c| c["spec"]["instances"] = json!(2));
    n = 0;
    while w.fake.names::<Pod>(NS).len() > 2 || w.fake.names::<PodDisruptionBudget>(NS).len() > 1 {
        tick(&w).await;
        n += 1;
        assert!(n < 500, "no scale down");
    }
    // The user's replication certificate is what the pods mount, untouched.
    let pod: Pod = w.fake.get(NS, "pg-2").expect("pg-2");
    let projected = serde_json::to_string(&pod.spec.expect("spec").volumes).expect("json");
    assert!(
        projected.contains("users-replication") && projected.contains("users-client-ca"),
        "{projected}"
    );
    assert!(!projected.contains("pg-replication"), "{projected}");
    assert!(projected.contains("pg-archive"), "{projected}");
    // Without an object store the archive's configuration, credentials and all, goes.
    assert!(w.fake.get::<Secret>(NS, "pg-archive").is_some());
    w.patch_cluster(|c| c["spec"]["backup"] = serde_json::Value::Null);
    n = 0;
    while w.fake.get::<Secret>(NS, "pg-archive").is_some() {
        tick(&w).await;
        n += 1;
        assert!(n < 500, "pg-archive not removed");
    }
    let kept: Secret = w.fake.get(NS, "users-replication").expect("kept");
    assert_eq!(
        kept.data.expect("data")["tls.crt"].0,
        leaf.cert.as_bytes(),
        "the user's Secret is never rewritten"
    );
    // Custom monitoring queries from a ConfigMap and a Secret of the user's: gathered,
    // checked and handed to the pods in the operator's `pg-monitoring` Secret.
    let queries = |n: u32| {
        format!(
            "q{n}:\n  query: SELECT {n} AS v\n  metrics:\n    - v: {{usage: GAUGE, description: V}}\n"
        )
    };
    w.fake.put(&k8s_openapi::api::core::v1::ConfigMap {
        metadata: kube::core::ObjectMeta {
            name: Some("queries".into()),
            namespace: Some(NS.into()),
            ..Default::default()
        },
        data: Some([("queries.yaml".to_owned(), queries(1))].into()),
        ..Default::default()
    });
    w.fake.put(&Secret {
        metadata: kube::core::ObjectMeta {
            name: Some("secret-queries".into()),
            namespace: Some(NS.into()),
            ..Default::default()
        },
        string_data: None,
        data: Some(
            [(
                "queries.yaml".to_owned(),
                k8s_openapi::ByteString(queries(2).into_bytes()),
            )]
            .into(),
        ),
        ..Default::default()
    });
    w.patch_cluster(|c| {
        c["spec"]["monitoring"] = json!({
            "disableDefaultQueries": true,
            "metricsQueriesTTL": "1m",
            "customQueriesConfigMap": [{"name": "queries", "key": "queries.yaml"}],
            "customQueriesSecret": [{"name": "secret-queries", "key": "queries.yaml"}]
        })
    });
    n = 0;
    let config = loop {
        let config = w
            .fake
            .get::<Secret>(NS, "pg-monitoring")
            .and_then(|s| s.data?.get("monitoring.json").cloned());
        if let Some(c) = config {
            break String::from_utf8(c.0).expect("utf-8");
        }
        tick(&w).await;
        n += 1;
        assert!(n < 300, "no pg-monitoring Secret: {}", w.phase());
    };
    let config: cnpg_instance::monitoring::Config =
        serde_json::from_str(&config).expect("monitoring.json");
    assert!(config.disable_default_queries);
    assert_eq!(config.ttl_seconds, Some(60));
    let sources: Vec<&str> = config.custom.iter().map(|f| f.source.as_str()).collect();
    assert_eq!(
        sources,
        [
            "ConfigMap queries/queries.yaml",
            "Secret secret-queries/queries.yaml"
        ]
    );
    // A PodMonitor asked for where the Prometheus Operator is not installed: the API
    // server has no such resource, and the loop goes on; turned off, it is deleted.
    for enabled in [true, false] {
        w.patch_cluster(|c| c["spec"]["monitoring"]["enablePodMonitor"] = json!(enabled));
        for _ in 0..20 {
            tick(&w).await;
        }
        assert!(healthy(&w), "{}", w.phase());
    }
    // The image from a catalog: a ClusterImageCatalog's image for the major, and the
    // pods rolled to it; a namespaced catalog without that major stops the loop with
    // upstream's phase and a reason naming the majors it has.
    use cnpg_core::api::image_catalog::*;
    let images = |major: i32, image: &str| {
        vec![CatalogImage {
            image: image.into(),
            major,
            ..Default::default()
        }]
    };
    w.fake.put(&ClusterImageCatalog::new(
        "postgresql",
        ClusterImageCatalogSpec {
            images: images(17, "example.org/postgresql:17.9"),
            ..Default::default()
        },
    ));
    let mut namespaced = ImageCatalog::new(
        "old",
        ImageCatalogSpec {
            images: images(16, "example.org/postgresql:16.1"),
            ..Default::default()
        },
    );
    namespaced.metadata.namespace = Some(NS.into());
    w.fake.put(&namespaced);
    let catalog_ref = |kind: &str, name: &str| json!({"apiGroup": "postgresql.cnpg.io", "kind": kind, "name": name, "major": 17});
    w.patch_cluster(|c| {
        c["spec"]["imageCatalogRef"] = catalog_ref("ClusterImageCatalog", "postgresql")
    });
    n = 0;
    while w.cluster().status.and_then(|s| s.image).as_deref() != Some("example.org/postgresql:17.9")
        || w.fake.list::<Pod>(NS).iter().any(|p| {
            p.spec
                .as_ref()
                .and_then(|s| s.containers[0].image.as_deref())
                != Some("example.org/postgresql:17.9")
        })
        || !healthy(&w)
    {
        tick(&w).await;
        n += 1;
        assert!(n < 800, "not rolled to the catalog's image: {}", w.phase());
    }
    w.patch_cluster(|c| c["spec"]["imageCatalogRef"] = catalog_ref("ImageCatalog", "old"));
    n = 0;
    while w.phase() != "Cluster has incomplete or invalid image catalog" {
        tick(&w).await;
        n += 1;
        assert!(n < 500, "no catalog error: {}", w.phase());
    }
    let reason = w
        .cluster()
        .status
        .and_then(|s| s.phase_reason)
        .unwrap_or_default();
    assert!(
        reason.contains("ImageCatalog old has no image for PostgreSQL 17 (it has 16)"),
        "{reason}"
    );
    let _ = stop.send(());
    operator
        .await
        .expect("the controller task")
        .expect("the controller stops cleanly");
    let lease: Lease = w
        .fake
        .get("cnpg-system", controller::LEADER_LEASE)
        .expect("the leader lease");
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity),
        None,
        "released on shutdown"
    );

    let used = |actor: &str| -> std::collections::BTreeSet<Grant> {
        w.fake
            .requests()
            .iter()
            .filter(|r| r.actor.as_deref() == Some(actor))
            .map(|r| (r.group.clone(), r.resource.clone(), r.verb.clone()))
            .collect()
    };
    let operator_used = used("operator");
    let granted = grants(OPERATOR_PERMISSIONS);
    let missing: Vec<&Grant> = operator_used.difference(&granted).collect();
    assert!(
        missing.is_empty(),
        "the operator needs grants it does not have: {missing:?}"
    );
    let for_instances = grants(INSTANCE_PERMISSIONS);
    let unused: Vec<&Grant> = granted
        .iter()
        .filter(|g| !operator_used.contains(*g) && !for_instances.contains(*g))
        .collect();
    assert!(unused.is_empty(), "granted but never used: {unused:?}");
    let instance_used = used("instance");
    let missing: Vec<&Grant> = instance_used.difference(&for_instances).collect();
    assert!(
        missing.is_empty(),
        "the instance managers need grants they do not have: {missing:?}"
    );
    assert!(
        for_instances.is_subset(&granted),
        "the operator can only grant what it holds"
    );
}

#[tokio::test]
async fn rolling_update_by_switchover_moves_the_primary_last() {
    let manifest = format!("{MANIFEST}  primaryUpdateMethod: switchover\n");
    let mut w = World::bootstrap(&manifest).await;
    w.fake.clear_requests();
    w.patch_cluster(|c| c["spec"]["resources"] = json!({"requests": {"cpu": "500m"}}));
    w.until("every pod updated and a new primary", 150, |w| {
        w.healthy()
            && w.current().as_deref() != Some("pg-1")
            && w.fake.list::<Pod>(NS).iter().all(|p| {
                p.spec
                    .as_ref()
                    .and_then(|s| s.containers[0].resources.clone())
                    .is_some()
            })
    })
    .await;
    let deleted = w.deleted_pods();
    assert_eq!(deleted.len(), 3, "one restart each: {deleted:?}");
    assert_eq!(
        deleted.last().map(String::as_str),
        Some("pg-1"),
        "the old primary last: {deleted:?}"
    );
    let targets = w.status_targets();
    assert!(
        !targets.contains(&"pending".to_owned()),
        "a switchover, not a failover: {targets:?}"
    );
}

fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

/// Two operator replicas: one leads, the other stands by (not reconciling); when the
/// leader stops it releases the Lease and the other takes over at once.
#[tokio::test]
async fn two_operator_replicas_one_leads_the_other_takes_over() {
    use cnpg_operator::kube::controller::{self, ControllerConfig, Metrics};
    let w = World::new(MANIFEST).await;
    let start = |identity: &str| {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let metrics = Metrics::default();
        let config = ControllerConfig {
            identity: identity.into(),
            watch_namespace: Some(NS.into()),
            lease_namespace: "cnpg-system".into(),
            lease_duration: Duration::from_millis(600),
            health_addr: None,
        };
        let task = tokio::spawn(controller::run(
            w.fake.client_as("operator"),
            w.platform.clone(),
            config,
            metrics.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        (stop, task, metrics)
    };
    let (stop_a, task_a, metrics_a) = start("operator-a");
    let holder = |w: &World| {
        w.fake
            .get::<Lease>("cnpg-system", controller::LEADER_LEASE)
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity)
    };
    let mut n = 0;
    while holder(&w).as_deref() != Some("operator-a") {
        tokio::time::sleep(Duration::from_millis(20)).await;
        n += 1;
        assert!(n < 200, "operator-a never led");
    }
    let (stop_b, task_b, metrics_b) = start("operator-b");
    n = 0;
    while !w.healthy() {
        w.fleet.tick().await;
        tokio::time::sleep(Duration::from_millis(30)).await;
        n += 1;
        assert!(n < 500, "no healthy cluster under operator-a");
    }
    assert_eq!(metrics_a.leader.get(), 1);
    assert_eq!(metrics_b.leader.get(), 0);
    assert_eq!(
        metrics_b.reconciles.get(),
        0,
        "a standby does not reconcile"
    );
    let _ = stop_a.send(());
    task_a
        .await
        .expect("task a")
        .expect("operator-a stops cleanly");
    n = 0;
    while holder(&w).as_deref() != Some("operator-b") {
        tokio::time::sleep(Duration::from_millis(20)).await;
        n += 1;
        assert!(n < 200, "operator-b did not take over: {:?}", holder(&w));
    }
    // operator-b now does the work: scale up.
    w.patch_cluster(|c| c["spec"]["instances"] = json!(4));
    n = 0;
    while !(w.healthy() && w.fake.names::<Pod>(NS).len() == 4) {
        w.fleet.tick().await;
        tokio::time::sleep(Duration::from_millis(30)).await;
        n += 1;
        assert!(n < 500, "operator-b did not scale the cluster");
    }
    assert!(metrics_b.reconciles.get() > 0);
    let _ = stop_b.send(());
    task_b
        .await
        .expect("task b")
        .expect("operator-b stops cleanly");
}

/// A parameter that needs a restart: replicas get new pods, one at a time; the primary
/// restarts PostgreSQL in place (no pod deletion, no switchover, no failover).
#[tokio::test]
async fn a_parameter_needing_a_restart_rolls_replicas_then_restarts_the_primary_in_place() {
    let mut w = World::bootstrap(MANIFEST).await;
    w.fake.clear_requests();
    w.patch_cluster(|c| {
        c["spec"]["postgresql"]["parameters"] = json!({"shared_buffers": "256MB"});
    });
    w.until("the primary restarted in place and healthy", 120, |w| {
        w.healthy()
            && w.fleet
                .state
                .lock()
                .expect("fleet")
                .pgs
                .get("pg-1")
                .is_some_and(|p| p.restarts == 1 && !p.pending_restart)
    })
    .await;
    let deleted = w.deleted_pods();
    assert_eq!(deleted.len(), 2, "the replicas only: {deleted:?}");
    assert!(!deleted.contains(&"pg-1".to_owned()), "{deleted:?}");
    let ha = w
        .cluster()
        .status
        .and_then(|s| s.ha_state)
        .expect("haState");
    assert!(ha.restart.is_some_and(|t| t.starts_with("pg-1@")));
    assert_eq!(w.current().as_deref(), Some("pg-1"));
    assert!(!w.status_targets().contains(&"pending".to_owned()));
}

/// An instance manager restarted while its instance is the primary takes the primary Lease
/// back by itself (nothing promotes it again).
#[tokio::test]
async fn a_restarted_primary_takes_its_lease_back() {
    let fake = FakeKube::new();
    let cluster: Cluster = serde_saphyr::from_str(
        "apiVersion: postgresql.cnpg.io/v1\nkind: Cluster\nmetadata: {name: pg, namespace: db}\nspec: {instances: 1, storage: {size: 1Gi}}\nstatus: {currentPrimary: pg-1, targetPrimary: pg-1}\n",
    )
    .expect("manifest");
    fake.put(&cluster);
    let view = KubeView::start(fake.client_as("instance"), NS, "pg", "pg-1", 5432)
        .with_lease_duration(Duration::from_millis(600));
    view.read().await.expect("read");
    let mut n = 0;
    loop {
        let holder = fake
            .get::<Lease>(NS, "pg")
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity);
        if holder.as_deref() == Some("pg-1") {
            break;
        }
        n += 1;
        assert!(n < 100, "the primary never took its lease back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
