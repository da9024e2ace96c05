//! `cnpg-operator`: the operator shell of cnpg-rs and the `kubectl-cnpg` plugin.
//!
//! The decisions live in `cnpg-core`; this crate reads and writes the world around them.
//! So far it holds the manifest tooling the plugin needs: reading multi-document YAML,
//! checking each document ([`manifests`]), printing the CRDs, and the command line ([`cli`]).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod cli;
pub mod controller;
#[cfg(feature = "testkit")]
pub mod fakekube;
pub mod install;
pub mod kube_cli;
pub mod kube_platform;
pub mod local;
mod local_cli;
pub mod manifests;
pub mod platform;
pub mod secrets;
pub mod specs;
#[cfg(feature = "testkit")]
pub mod writer;
