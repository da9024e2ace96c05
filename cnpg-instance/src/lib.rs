//! `cnpg-instance`: the instance manager of cnpg-rs. It runs beside one PostgreSQL (in a
//! pod on Kubernetes, or as a local process) and makes it do what `cnpg-core` decides.
//!
//! So far it knows how to find the PostgreSQL programs it drives ([`pg_bin`]).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod pg_bin;
