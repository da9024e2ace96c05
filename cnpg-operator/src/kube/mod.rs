//! The operator on Kubernetes.
//!
//! How a Cluster becomes running PostgreSQL here:
//!
//! 1. [`controller`] watches Clusters and the objects they own (kube-rs `Controller`), holds
//!    the operator's leader Lease, and calls [`crate::platform::reconcile_cluster`] for each
//!    Cluster with a [`platform::KubePlatform`].
//! 2. [`platform::KubePlatform`] is the [`crate::platform::Platform`] on the API server: it
//!    observes the instance Pods (asking each instance manager for `/pg/status`), and
//!    carries out the core's plan — creating Pods and PVCs, relabelling roles, applying
//!    the shared objects, writing the status subresource, recording events.
//! 3. What it sends is built by pure functions: [`specs`] (Pods, PVCs, Services, PDBs),
//!    [`secrets`] (credentials and rcgen certificates), both on the metadata of [`meta`].
//! 4. In each Pod, `cnpg-instance run --kubernetes` (the `cnpg-instance` crate) watches the
//!    same Cluster, takes the primary Lease before promoting, and drives PostgreSQL.
//!
//! 5. [`pooler`] turns each Pooler into a Deployment of PgBouncer pods and a Service.
//!
//! [`install`] prints the installation (CRDs, RBAC, Deployment); its permission tables are
//! the single source of the RBAC the code needs, for the operator and for instance pods.

pub mod backup;
pub mod controller;
pub mod install;
pub mod meta;
pub mod platform;
pub mod pooler;
pub mod secrets;
pub mod specs;
