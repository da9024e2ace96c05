//! Test support, behind the `testkit` cargo feature: only tests and benchmarks turn it on,
//! so the shipped binaries never link it.
//!
//! * [`control_plane`] — the real Kubernetes control plane (etcd, kube-apiserver,
//!   kube-controller-manager on loopback) that Kubernetes-facing tests run against.
//! * [`kubelet`] — a test kubelet (with a scheduler's binding and kube-proxy's forwarding)
//!   that runs the Pods of that control plane as local processes.
//! * [`fakekube`] — an in-memory Kubernetes API server. The real control plane is what
//!   Kubernetes-facing code should meet; this imitation remains for what that cannot do
//!   cheaply (recording every request per actor for the RBAC check, injected API errors,
//!   the instance-memory benchmark) until the real-control-plane tests replace it.
//! * [`e2e`] — a Cluster run as a user runs it on that control plane: the generated
//!   installation, the shipped operator with its own ServiceAccount, the test kubelet.
//! * [`writer`] — a client committing numbered rows through `-rw`, for failover tests and
//!   benchmarks (no acknowledged row may go missing; how long do writes stop?).
//! * [`netcut`] — a network partition on loopback: some ports' packets dropped (nftables).
//! * [`volume`] — a tmpfs of its own for one instance, to fill its disk.
//! * [`fakeclock`] — a wall clock that steps, for every process of one cluster
//!   (libfaketime).
//! * [`probe`] — asks every instance directly, round after round, whether it accepts
//!   writes, and counts the rounds in which two did (split brain).

pub mod control_plane;
pub mod e2e;
pub mod fakeclock;
pub mod fakekube;
pub mod kubelet;
pub mod netcut;
mod pod_logs;
pub mod probe;
pub mod volume;
pub mod writer;
