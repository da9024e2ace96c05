//! Declarative tablespaces (`spec.tablespaces`): what the primary's instance manager does
//! so PostgreSQL has each one, with its owner, and what the Cluster's
//! `status.tablespacesStatus` says.
//!
//! As upstream: a tablespace is made with `CREATE TABLESPACE` on the primary (replicas get
//! it by replaying the WAL), its owner follows the spec, a failure (an owner role that
//! does not exist) leaves that one `pending` with PostgreSQL's error and never stops the
//! others, and tablespaces are never dropped (upstream cannot remove them either: their
//! data would go with them). `temporary: true` lists it in `temp_tablespaces`.
//!
//! Where the data goes is the platform's choice ([`Tablespace::location`]): on Kubernetes
//! the instance's own volume, mounted at the same path in every pod; on the local
//! platform, where all instances share one file system and a path could only be one
//! instance's, inside PGDATA (an in-place tablespace, `LOCATION ''`).

use std::collections::BTreeMap;

/// Where upstream mounts a tablespace's volume in the pods.
pub fn kubernetes_location(name: &str) -> String {
    format!("/var/lib/postgresql/tablespaces/{name}/data")
}

/// A tablespace the cluster wants.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tablespace {
    /// Its name.
    pub name: String,
    /// The owner role (`None`: the superuser that creates it, as upstream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Listed in `temp_tablespaces`.
    #[serde(default)]
    pub temporary: bool,
    /// The directory (empty: in place, inside PGDATA).
    #[serde(default)]
    pub location: String,
}

/// A tablespace as PostgreSQL has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Existing {
    /// Its name.
    pub name: String,
    /// Its owner.
    pub owner: String,
}

/// What to run for one tablespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `CREATE TABLESPACE name [OWNER owner] LOCATION location`.
    Create(Tablespace),
    /// `ALTER TABLESPACE name OWNER TO owner`.
    ChangeOwner {
        /// The tablespace.
        name: String,
        /// The new owner.
        owner: String,
    },
    /// Nothing: as wanted.
    Done(String),
}

/// The steps that make `existing` what `wanted` says, one per wanted tablespace, in order.
pub fn plan(wanted: &[Tablespace], existing: &[Existing]) -> Vec<Step> {
    wanted
        .iter()
        .map(|t| match existing.iter().find(|e| e.name == t.name) {
            None => Step::Create(t.clone()),
            Some(e) => match &t.owner {
                Some(o) if *o != e.owner => Step::ChangeOwner {
                    name: t.name.clone(),
                    owner: o.clone(),
                },
                _ => Step::Done(t.name.clone()),
            },
        })
        .collect()
}

/// The parameters tablespaces need: `temp_tablespaces` from the temporary ones (unless
/// the user set it), and `allow_in_place_tablespaces` where any is in place — without it a
/// standby that replays their creation refuses to finish its recovery.
pub fn with_parameters(parameters: &mut BTreeMap<String, String>, wanted: &[Tablespace]) {
    if wanted.iter().any(|t| t.location.is_empty()) {
        parameters.insert("allow_in_place_tablespaces".to_owned(), "on".to_owned());
    }
    let temporary: Vec<&str> = wanted
        .iter()
        .filter(|t| t.temporary)
        .map(|t| t.name.as_str())
        .collect();
    if !temporary.is_empty() {
        parameters
            .entry("temp_tablespaces".to_owned())
            .or_insert_with(|| temporary.join(","));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, owner: Option<&str>, temporary: bool) -> Tablespace {
        Tablespace {
            name: name.into(),
            owner: owner.map(String::from),
            temporary,
            location: String::new(),
        }
    }

    #[test]
    fn missing_ones_are_made_and_owners_follow_the_spec() {
        let existing = vec![
            Existing {
                name: "tbs1".into(),
                owner: "postgres".into(),
            },
            Existing {
                name: "tbs2".into(),
                owner: "app".into(),
            },
            Existing {
                name: "by_hand".into(),
                owner: "postgres".into(),
            },
        ];
        let wanted = [
            t("tbs1", None, false),
            t("tbs2", Some("postgres"), false),
            t("tbs3", Some("app"), true),
        ];
        assert_eq!(
            plan(&wanted, &existing),
            vec![
                Step::Done("tbs1".into()),
                Step::ChangeOwner {
                    name: "tbs2".into(),
                    owner: "postgres".into()
                },
                Step::Create(wanted[2].clone()),
            ],
            "one step per wanted tablespace; one made by hand is left alone"
        );
    }

    #[test]
    fn temporary_ones_fill_temp_tablespaces_unless_set_and_in_place_ones_are_allowed() {
        let wanted = [t("a", None, true), t("b", None, false), t("c", None, true)];
        let mut p = BTreeMap::new();
        with_parameters(&mut p, &wanted);
        assert_eq!(p["temp_tablespaces"], "a,c");
        assert_eq!(p["allow_in_place_tablespaces"], "on", "they are in place");
        let mut p = BTreeMap::from([("temp_tablespaces".to_owned(), "x".to_owned())]);
        with_parameters(&mut p, &wanted);
        assert_eq!(p["temp_tablespaces"], "x");
        let mut p = BTreeMap::new();
        let mut elsewhere = t("b", None, false);
        elsewhere.location = kubernetes_location("b");
        with_parameters(&mut p, &[elsewhere]);
        assert!(p.is_empty());
    }
}
