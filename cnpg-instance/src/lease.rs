//! A `coordination.k8s.io/v1` Lease held by one identity: the I/O around
//! [`cnpg_core::lease::decide`]. Writes carry the resourceVersion read, so two contenders
//! racing for a free lease cannot both win: the loser's write is refused (409).

use cnpg_core::lease::{LeaseDecision, LeaseView, decide};
use cnpg_core::time::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The outcome of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// We hold the lease now.
    Held,
    /// Someone else does (and why we wait).
    Busy(String),
}

/// A lease one process contends for.
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    /// The record last seen (resourceVersion) and when we first saw it, on our clock.
    seen: Mutex<Option<(String, Instant)>>,
    start: Instant,
}

fn micro_now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

impl LeaseLock {
    /// A lock on Lease `name` for `identity`.
    pub fn new(api: Api<Lease>, name: &str, identity: &str, duration: Duration) -> Self {
        LeaseLock {
            api,
            name: name.to_owned(),
            identity: identity.to_owned(),
            duration,
            seen: Mutex::new(None),
            start: Instant::now(),
        }
    }

    /// The identity we hold it as.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    fn local_now(&self) -> Timestamp {
        Timestamp(self.start.elapsed().as_millis() as u64)
    }

    /// Takes or renews the lease if we may; one API read and at most one write.
    pub async fn try_acquire(&self) -> Result<Attempt, kube::Error> {
        let current = self.api.get_opt(&self.name).await?;
        let view = current.as_ref().map(|l| {
            let rv = l.metadata.resource_version.clone().unwrap_or_default();
            let mut seen = self.seen.lock().expect("lease lock");
            let since = match seen.as_ref() {
                Some((r, at)) if *r == rv => *at,
                _ => {
                    let now = Instant::now();
                    *seen = Some((rv, now));
                    now
                }
            };
            let spec = l.spec.clone().unwrap_or_default();
            LeaseView {
                holder: spec.holder_identity,
                duration: Duration::from_secs(
                    spec.lease_duration_seconds.unwrap_or(15).max(1) as u64
                ),
                observed_since: Timestamp(since.duration_since(self.start).as_millis() as u64),
            }
        });
        match decide(view.as_ref(), &self.identity, self.local_now()) {
            LeaseDecision::Wait { holder, .. } => Ok(Attempt::Busy(format!(
                "the lease {} is held by {holder}",
                self.name
            ))),
            decision => {
                let taking = matches!(decision, LeaseDecision::Take { .. });
                let old = current
                    .as_ref()
                    .and_then(|l| l.spec.clone())
                    .unwrap_or_default();
                let spec = LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(self.duration.as_secs() as i32),
                    acquire_time: if taking {
                        Some(micro_now())
                    } else {
                        old.acquire_time
                    },
                    renew_time: Some(micro_now()),
                    lease_transitions: Some(
                        old.lease_transitions.unwrap_or(0) + i32::from(taking && current.is_some()),
                    ),
                    ..Default::default()
                };
                let result = match current {
                    None => {
                        let lease = Lease {
                            metadata: ObjectMeta {
                                name: Some(self.name.clone()),
                                ..Default::default()
                            },
                            spec: Some(spec),
                        };
                        self.api.create(&PostParams::default(), &lease).await
                    }
                    Some(mut lease) => {
                        lease.spec = Some(spec);
                        self.api
                            .replace(&self.name, &PostParams::default(), &lease)
                            .await
                    }
                };
                match result {
                    Ok(_) => Ok(Attempt::Held),
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::Busy(format!(
                        "another contender wrote the lease {} first",
                        self.name
                    ))),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Gives the lease up if we hold it (clears the holder), so the next contender takes
    /// it at once instead of waiting for it to expire.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        lease.spec = Some(spec);
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(e),
        }
    }
}
