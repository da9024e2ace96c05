//! What the first instance of a cluster made from backups (`bootstrap.recovery`) is
//! given, on either platform: the arguments of `cnpg-instance recover` — the source's store
//! configuration (a file the platform writes: among the local secrets, or from a Secret
//! in the pod), the backup, the target, the application database and owner.

use cnpg_core::api::cluster::Cluster;

/// `recover`'s arguments after the instance's own, for `c`'s `bootstrap.recovery` (none
/// without one). `config` is where the source's store configuration is; `backup_id` the
/// backup a `Backup` object named, when the recovery names one.
pub fn recover_args(c: &Cluster, config: &str, backup_id: Option<String>) -> Vec<String> {
    let Some(rec) = c.spec.bootstrap.as_ref().and_then(|b| b.recovery.as_ref()) else {
        return vec![];
    };
    let mut args = vec!["--source-config".to_owned(), config.to_owned()];
    let t = rec.recovery_target.clone().unwrap_or_default();
    let mut flag = |name: &str, v: Option<String>| {
        if let Some(v) = v {
            args.push(format!("--{name}"));
            args.push(v);
        }
    };
    flag("backup-id", t.backup_id.clone().or(backup_id));
    flag("target-time", t.target_time.clone());
    flag("target-lsn", t.target_lsn.clone());
    flag("target-xid", t.target_xid.clone());
    flag("target-name", t.target_name.clone());
    flag("target-tli", t.target_tli.clone());
    flag("app-db", rec.database.clone());
    flag("app-owner", rec.owner.clone());
    if t.target_immediate == Some(true) {
        args.push("--target-immediate".into());
    }
    if t.exclusive == Some(true) {
        args.push("--exclusive".into());
    }
    args
}

/// Whether `c` is made from backups.
pub fn recovering(c: &Cluster) -> bool {
    c.spec
        .bootstrap
        .as_ref()
        .is_some_and(|b| b.recovery.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_field_becomes_its_flag() {
        let c: Cluster = serde_json::from_value(serde_json::json!({
            "apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster",
            "metadata": {"name": "r"},
            "spec": {"instances": 1, "storage": {"size": "1Gi"}, "bootstrap": {"recovery": {
                "source": "origin", "database": "shop", "owner": "shopper",
                "recoveryTarget": {"targetXID": "742", "exclusive": true, "targetTLI": "2"}
            }}}
        }))
        .expect("a cluster");
        assert_eq!(
            recover_args(
                &c,
                "/s/recovery-source.json",
                Some("20261202T000000".into())
            ),
            [
                "--source-config",
                "/s/recovery-source.json",
                "--backup-id",
                "20261202T000000",
                "--target-xid",
                "742",
                "--target-tli",
                "2",
                "--app-db",
                "shop",
                "--app-owner",
                "shopper",
                "--exclusive"
            ]
        );
        assert!(recovering(&c));
    }
}
