//! Synchronous replication: which standbys a commit waits for
//! (`synchronous_standby_names`), and whether a failover is safe for acknowledged commits
//! (the R + W > N failover quorum).
//!
//! Two ways to ask for it, as upstream:
//! * legacy `minSyncReplicas`/`maxSyncReplicas`: `ANY q (...)` over the ready replicas,
//!   with `q` lowered ("self-healing") when too few are ready — writes never block, and a
//!   failover can lose acknowledged commits;
//! * the `synchronous` stanza: `ANY|FIRST n (...)`; with `dataDurability: required` the
//!   number is never lowered (writes block instead of losing RPO 0), with `preferred` only
//!   ready standbys are listed and the number follows them.

use std::collections::BTreeSet;
use std::fmt;

/// `ANY` (quorum) or `FIRST` (priority).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Method {
    /// `ANY n (...)`: any n listed standbys.
    Any,
    /// `FIRST n (...)`: the first n connected standbys in list order.
    First,
}

/// `required` or `preferred`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Durability {
    /// Never lower the number of synchronous standbys.
    Required,
    /// List only ready standbys; the number follows them, down to asynchronous.
    Preferred,
}

/// The `synchronous` stanza, as the decisions need it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SyncSpec {
    /// `ANY` or `FIRST`.
    pub method: Method,
    /// Standbys to wait for.
    pub number: u32,
    /// Cap on this cluster's instances listed.
    pub max_standby_names_from_cluster: Option<u32>,
    /// External names listed first.
    pub standby_names_pre: Vec<String>,
    /// External names listed last.
    pub standby_names_post: Vec<String>,
    /// `required` or `preferred`.
    pub durability: Durability,
    /// Explicitly asked failover quorum (`failoverQuorum: true`).
    pub failover_quorum: bool,
}

/// How a cluster replicates.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum SyncPolicy {
    /// Asynchronous: commits never wait for a standby.
    #[default]
    Async,
    /// `minSyncReplicas`/`maxSyncReplicas`.
    Legacy {
        /// Lowest quorum.
        min: u32,
        /// Target quorum.
        max: u32,
    },
    /// The `synchronous` stanza.
    Explicit(SyncSpec),
}

impl SyncPolicy {
    /// Whether a failover must pass the R + W > N check. Upstream only checks it when asked
    /// (`failoverQuorum: true`); we also check it whenever `dataDurability: required`, as
    /// that is the promise a user of `required` relies on (upstream issue #1688: a failover
    /// to a replica that never received an acknowledged commit).
    pub fn failover_quorum_required(&self) -> bool {
        match self {
            SyncPolicy::Explicit(s) => s.failover_quorum || s.durability == Durability::Required,
            _ => false,
        }
    }
}

/// The content of `synchronous_standby_names`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct SyncStandbys {
    /// `ANY` or `FIRST`.
    pub method: Method,
    /// How many listed standbys a commit waits for.
    pub number: u32,
    /// The application names, in priority order.
    pub names: Vec<String>,
}

impl fmt::Display for SyncStandbys {
    /// PostgreSQL's syntax: `ANY 1 ("pg-2","pg-3")`; names double-quoted, `"` doubled.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let method = match self.method {
            Method::Any => "ANY",
            Method::First => "FIRST",
        };
        write!(f, "{method} {} (", self.number)?;
        for (i, n) in self.names.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "\"{}\"", n.replace('"', "\"\""))?;
        }
        f.write_str(")")
    }
}

/// The value of `synchronous_standby_names` for a configuration (`""` when asynchronous).
pub fn render(standbys: Option<&SyncStandbys>) -> String {
    standbys.map(ToString::to_string).unwrap_or_default()
}

/// The synchronous standbys a cluster should have now.
///
/// * `instances`: every instance of the cluster (any order);
/// * `healthy`: the instances that are ready;
/// * `primary`: the current primary.
///
/// Returns `None` for asynchronous replication (empty `synchronous_standby_names`).
///
/// ```
/// use cnpg_core::sync::{desired, render, Durability, Method, SyncPolicy, SyncSpec};
/// use std::collections::BTreeSet;
///
/// let policy = SyncPolicy::Explicit(SyncSpec {
///     method: Method::Any, number: 1, max_standby_names_from_cluster: None,
///     standby_names_pre: vec![], standby_names_post: vec![],
///     durability: Durability::Required, failover_quorum: false,
/// });
/// let all = ["pg-1", "pg-2", "pg-3"].map(String::from);
/// let ready: BTreeSet<String> = ["pg-1", "pg-3"].map(String::from).into();
/// let names = desired(&policy, "pg", &all, &ready, "pg-1");
/// // pg-2 is not ready: it moves behind pg-3, and the number stays 1.
/// assert_eq!(render(names.as_ref()), r#"ANY 1 ("pg-3","pg-2","pg-1")"#);
/// ```
pub fn desired(
    policy: &SyncPolicy,
    cluster: &str,
    instances: &[String],
    healthy: &BTreeSet<String>,
    primary: &str,
) -> Option<SyncStandbys> {
    match policy {
        SyncPolicy::Async => None,
        SyncPolicy::Legacy { min, max } => legacy(*min, *max, instances, healthy, primary),
        SyncPolicy::Explicit(spec) => explicit(spec, cluster, instances, healthy, primary),
    }
}

fn legacy(
    min: u32,
    max: u32,
    instances: &[String],
    healthy: &BTreeSet<String>,
    primary: &str,
) -> Option<SyncStandbys> {
    let electable: Vec<String> = sorted(instances)
        .into_iter()
        .filter(|n| n != primary && healthy.contains(n))
        .collect();
    let ready = electable.len() as u32;
    let mut q = max;
    if ready < q {
        q = min;
    }
    if ready < min {
        q = ready; // self-healing: never block writes
    }
    q = q.min(ready);
    (q > 0).then_some(SyncStandbys {
        method: Method::Any,
        number: q,
        names: electable,
    })
}

fn explicit(
    spec: &SyncSpec,
    cluster: &str,
    instances: &[String],
    healthy: &BTreeSet<String>,
    primary: &str,
) -> Option<SyncStandbys> {
    let all = sorted(instances);
    let cap = spec.max_standby_names_from_cluster.map(|c| c as usize);
    match spec.durability {
        Durability::Required => {
            // Healthy replicas first, then the others (unready replicas stay listed, so the
            // number never has to drop), then the primary itself (it may be a standby after
            // a failover, before the operator re-renders).
            let mut list: Vec<String> = all
                .iter()
                .filter(|n| *n != primary && healthy.contains(*n))
                .cloned()
                .collect();
            list.extend(
                all.iter()
                    .filter(|n| *n != primary && !healthy.contains(*n))
                    .cloned(),
            );
            if all.iter().any(|n| n == primary) {
                list.push(primary.to_owned());
            }
            if let Some(cap) = cap {
                list.truncate(cap);
            }
            let mut names = spec.standby_names_pre.clone();
            names.extend(list);
            names.extend(spec.standby_names_post.iter().cloned());
            if names.is_empty() {
                names.push(format!("{cluster}-placeholder"));
            }
            Some(SyncStandbys {
                method: spec.method,
                number: spec.number,
                names,
            })
        }
        Durability::Preferred => {
            let mut list: Vec<String> = all
                .into_iter()
                .filter(|n| n != primary && healthy.contains(n))
                .collect();
            if let Some(cap) = cap {
                list.truncate(cap);
            }
            let number = spec.number.min(list.len() as u32);
            (number > 0).then_some(SyncStandbys {
                method: spec.method,
                number,
                names: list,
            })
        }
    }
}

/// Instance names in upstream's order: by name, with numeric serials compared as numbers
/// (`pg-2` before `pg-10`).
fn sorted(instances: &[String]) -> Vec<String> {
    let mut v = instances.to_vec();
    v.sort_by(|a, b| crate::naming_order(a).cmp(&crate::naming_order(b)));
    v.dedup();
    v
}

/// Whether two configurations give the same failover quorum: the same number of
/// standbys out of the same set of names, whatever their order. (With `FIRST`, the order
/// picks which standbys acknowledge, but always `number` of the listed ones, which is all
/// the quorum check counts on.)
pub fn same_quorum(a: &SyncStandbys, b: &SyncStandbys) -> bool {
    let set = |s: &SyncStandbys| s.names.iter().cloned().collect::<BTreeSet<String>>();
    a.number == b.number && set(a) == set(b)
}

/// The outcome of the failover quorum check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumCheck {
    /// Listed synchronous standbys (N), the primary excluded.
    pub n: u32,
    /// Standbys each commit waited for (W).
    pub w: u32,
    /// Listed standbys that are ready and reporting now (R).
    pub r: u32,
    /// Whether a failover is allowed (R + W > N).
    pub allowed: bool,
    /// The arithmetic, for events and `status`.
    pub reason: String,
}

/// R + W > N: if every commit was acknowledged by W of the N listed standbys, and R of
/// them are reachable now, then when R + W > N at least one reachable standby holds every
/// acknowledged commit, and electing the most aligned reachable replica keeps them all.
///
/// `published` is the configuration the primary last had in effect (not the desired one:
/// during a reconfiguration they differ, and only the one in effect acknowledged commits).
pub fn failover_quorum(
    published: Option<&SyncStandbys>,
    primary: &str,
    ready: &BTreeSet<String>,
) -> QuorumCheck {
    let Some(p) = published else {
        return QuorumCheck {
            n: 0,
            w: 0,
            r: 0,
            allowed: false,
            reason: "no synchronous configuration was published by the primary, so no \
                     replica is known to hold every acknowledged commit"
                .into(),
        };
    };
    let listed: BTreeSet<&String> = p.names.iter().filter(|n| *n != primary).collect();
    let n = listed.len() as u32;
    let w = p.number;
    let r = listed.iter().filter(|n| ready.contains(**n)).count() as u32;
    let allowed = w > 0 && n > 0 && r + w > n;
    let reason = format!(
        "R + W > N is {r} + {w} > {n}: {}",
        if allowed {
            "a reachable standby holds every acknowledged commit"
        } else {
            "no reachable standby is sure to hold every acknowledged commit; failover refused to keep them"
        }
    );
    QuorumCheck {
        n,
        w,
        r,
        allowed,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }
    fn set(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }
    fn spec(method: Method, number: u32, durability: Durability) -> SyncSpec {
        SyncSpec {
            method,
            number,
            max_standby_names_from_cluster: None,
            standby_names_pre: vec![],
            standby_names_post: vec![],
            durability,
            failover_quorum: false,
        }
    }
    fn render_for(p: &SyncPolicy, healthy: &[&str]) -> String {
        render(
            desired(
                p,
                "foo",
                &names(&["foo-1", "foo-2", "foo-3"]),
                &set(healthy),
                "foo-1",
            )
            .as_ref(),
        )
    }

    // Golden cases from the reference (§4.2): three pods, foo-1 primary.
    #[test]
    fn required_lists_every_instance_and_keeps_the_number() {
        let p = SyncPolicy::Explicit(spec(Method::Any, 1, Durability::Required));
        assert_eq!(
            render_for(&p, &["foo-1", "foo-2", "foo-3"]),
            r#"ANY 1 ("foo-2","foo-3","foo-1")"#
        );
        // foo-2 fails: it moves behind foo-3, and the number stays.
        assert_eq!(
            render_for(&p, &["foo-1", "foo-3"]),
            r#"ANY 1 ("foo-3","foo-2","foo-1")"#
        );
        assert_eq!(
            render_for(&p, &["foo-1"]),
            r#"ANY 1 ("foo-2","foo-3","foo-1")"#
        );
    }

    #[test]
    fn required_pre_post_cap_and_placeholder() {
        let mut s = spec(Method::First, 2, Durability::Required);
        s.standby_names_pre = names(&["remote-a"]);
        s.standby_names_post = names(&["remote \"b\""]);
        s.max_standby_names_from_cluster = Some(1);
        let p = SyncPolicy::Explicit(s);
        assert_eq!(
            render_for(&p, &["foo-1", "foo-2", "foo-3"]),
            r#"FIRST 2 ("remote-a","foo-2","remote ""b""")"#
        );
        let empty = desired(
            &SyncPolicy::Explicit(spec(Method::Any, 1, Durability::Required)),
            "foo",
            &[],
            &BTreeSet::new(),
            "foo-1",
        );
        assert_eq!(render(empty.as_ref()), r#"ANY 1 ("foo-placeholder")"#);
    }

    #[test]
    fn preferred_follows_ready_replicas_down_to_async() {
        let p = SyncPolicy::Explicit(spec(Method::Any, 2, Durability::Preferred));
        assert_eq!(
            render_for(&p, &["foo-1", "foo-2", "foo-3"]),
            r#"ANY 2 ("foo-2","foo-3")"#
        );
        assert_eq!(render_for(&p, &["foo-1", "foo-3"]), r#"ANY 1 ("foo-3")"#);
        assert_eq!(render_for(&p, &["foo-1"]), "");
    }

    // Legacy (§4.1): q = max, lowered to min when fewer ready, then to the ready count.
    #[test]
    fn legacy_self_healing() {
        let p = SyncPolicy::Legacy { min: 1, max: 2 };
        assert_eq!(
            render_for(&p, &["foo-1", "foo-2", "foo-3"]),
            r#"ANY 2 ("foo-2","foo-3")"#
        );
        assert_eq!(render_for(&p, &["foo-1", "foo-3"]), r#"ANY 1 ("foo-3")"#);
        assert_eq!(render_for(&p, &["foo-1"]), "");
        let p = SyncPolicy::Legacy { min: 0, max: 0 };
        assert_eq!(render_for(&p, &["foo-1", "foo-2", "foo-3"]), "");
    }

    #[test]
    fn names_sort_by_serial_number() {
        let s = desired(
            &SyncPolicy::Legacy { min: 1, max: 1 },
            "pg",
            &names(&["pg-10", "pg-2", "pg-1"]),
            &set(&["pg-10", "pg-2", "pg-1"]),
            "pg-1",
        )
        .expect("sync");
        assert_eq!(s.names, names(&["pg-2", "pg-10"]));
    }

    // Quorum examples from the reference (§3.6).
    #[test]
    fn quorum_examples() {
        let three = SyncStandbys {
            method: Method::Any,
            number: 1,
            names: names(&["pg-2", "pg-3", "pg-1"]),
        };
        assert!(failover_quorum(Some(&three), "pg-1", &set(&["pg-2", "pg-3"])).allowed);
        let q = failover_quorum(Some(&three), "pg-1", &set(&["pg-3"]));
        assert_eq!((q.n, q.w, q.r, q.allowed), (2, 1, 1, false));
        assert!(q.reason.contains("1 + 1 > 2"), "{}", q.reason);
        let five = SyncStandbys {
            method: Method::Any,
            number: 2,
            names: names(&["pg-2", "pg-3", "pg-4", "pg-5"]),
        };
        assert!(failover_quorum(Some(&five), "pg-1", &set(&["pg-2", "pg-3", "pg-4"])).allowed);
        assert!(!failover_quorum(Some(&five), "pg-1", &set(&["pg-2", "pg-3"])).allowed);
        assert!(!failover_quorum(None, "pg-1", &set(&["pg-2"])).allowed);
        // External names count in N but never in R.
        let ext = SyncStandbys {
            method: Method::Any,
            number: 1,
            names: names(&["dr-site", "pg-2"]),
        };
        assert!(!failover_quorum(Some(&ext), "pg-1", &set(&["pg-2"])).allowed);
    }

    use proptest::prelude::*;
    proptest! {
        /// Invariant 4: 1 <= min <= q <= max <= ready whenever the cluster can satisfy it.
        #[test]
        fn legacy_quorum_bounds(min in 0u32..4, extra in 0u32..3, ready in 0usize..6) {
            let max = min + extra;
            let all: Vec<String> = (1..=6).map(|i| format!("pg-{i}")).collect();
            let healthy: BTreeSet<String> = all.iter().take(ready + 1).cloned().collect();
            let got = desired(&SyncPolicy::Legacy { min, max }, "pg", &all, &healthy, "pg-1");
            let q = got.as_ref().map_or(0, |s| s.number);
            prop_assert!(q as usize <= ready);
            prop_assert!(q <= max);
            if ready as u32 >= min && min >= 1 {
                prop_assert!(q >= min, "q {q} < min {min} with {ready} ready");
            }
            if ready as u32 >= max { prop_assert_eq!(q, max); }
            if let Some(s) = got {
                prop_assert!(!s.names.contains(&"pg-1".to_owned()));
                prop_assert!(s.names.iter().all(|n| healthy.contains(n)));
            }
        }

        /// With `required`, the number never drops, whatever is ready.
        #[test]
        fn required_never_lowers_the_number(number in 1u32..4, ready in 0usize..6) {
            let all: Vec<String> = (1..=6).map(|i| format!("pg-{i}")).collect();
            let healthy: BTreeSet<String> = all.iter().take(ready).cloned().collect();
            let p = SyncPolicy::Explicit(spec(Method::Any, number, Durability::Required));
            let got = desired(&p, "pg", &all, &healthy, "pg-1").expect("required is never async");
            prop_assert_eq!(got.number, number);
        }
    }
}
