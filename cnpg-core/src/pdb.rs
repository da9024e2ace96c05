//! PodDisruptionBudgets: a node drain may take at most the replicas the cluster can spare,
//! and never the primary before a switchover moved it.

use crate::naming::Role;

/// A PodDisruptionBudget to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pdb {
    /// Its name: `<cluster>-primary` or `<cluster>`.
    pub name: String,
    /// The instance role it selects.
    pub role: Role,
    /// `minAvailable`.
    pub min_available: u32,
}

/// The budgets a cluster should have (upstream `pkg/specs/poddisruptionbudget.go`):
/// the primary's (`minAvailable: 1`) always, the replicas' (`instances - 2`) from three
/// instances up; during maintenance with `reusePVC` the replicas' one is dropped, and for a
/// single instance the primary's too; `enablePDB: false` drops both.
pub fn pdbs(
    cluster: &str,
    instances: u32,
    enable_pdb: bool,
    maintenance_reuse_pvc: bool,
) -> Vec<Pdb> {
    if !enable_pdb {
        return Vec::new();
    }
    let mut out = Vec::new();
    if !(maintenance_reuse_pvc && instances == 1) {
        out.push(Pdb {
            name: format!("{cluster}-primary"),
            role: Role::Primary,
            min_available: 1,
        });
    }
    if instances >= 3 && !maintenance_reuse_pvc {
        out.push(Pdb {
            name: cluster.to_owned(),
            role: Role::Replica,
            min_available: instances - 2,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_table() {
        assert_eq!(pdbs("pg", 1, true, false).len(), 1);
        assert_eq!(pdbs("pg", 2, true, false).len(), 1);
        let three = pdbs("pg", 3, true, false);
        assert_eq!(
            three[1],
            Pdb {
                name: "pg".into(),
                role: Role::Replica,
                min_available: 1
            }
        );
        assert_eq!(pdbs("pg", 5, true, false)[1].min_available, 3);
        assert_eq!(
            pdbs("pg", 3, true, true).len(),
            1,
            "maintenance drops the replicas' PDB"
        );
        assert!(pdbs("pg", 1, true, true).is_empty());
        assert!(pdbs("pg", 3, false, false).is_empty());
    }
}
