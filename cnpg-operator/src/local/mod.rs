//! The local platform: the same operator decisions, without Kubernetes.
//!
//! What Kubernetes provides is played by plain processes and files on one machine:
//!
//! | Kubernetes | here |
//! |---|---|
//! | an instance Pod | a `cnpg-instance run` process started by the operator |
//! | its PVCs | directories under the state directory ([`layout`]) |
//! | the `-rw`/`-ro`/`-r` Services | TCP listeners of the operator process ([`services`]) |
//! | a Pooler's Deployment and Service | `cnpg-instance pgbouncer` processes sharing one port ([`poolers`]) |
//! | the Cluster's status | `status.json`, replaced atomically |
//! | the instance managers' watch of the Cluster | `view.json`, read by `cnpg-instance` |
//!
//! [`operator::LocalOperator`] is the loop (`kubectl-cnpg local up`); the plugin's other
//! commands read [`layout::StatusFile`] and leave requests in the layout for it.

pub mod apply;
pub mod databases;
pub mod error;
pub mod layout;
pub mod objects;
pub mod operator;
pub mod poolers;
pub mod process;
pub mod services;

pub use error::LocalError;
pub use layout::{InstanceLine, Layout, Ports, StatusFile};
pub use operator::{LocalOperator, LocalOptions, free_port, load_manifest};
pub use services::Service;
