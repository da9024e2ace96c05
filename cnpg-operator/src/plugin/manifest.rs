//! `kubectl-cnpg validate` (manifests checked as the admission webhook would), `install
//! crds` and `install generate` (what to apply on a Kubernetes cluster).

use super::access::PluginError;
use super::args::InstallCommand;
use crate::manifests::{check_text, crd_files, crds_yaml};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// `install crds [--output-dir DIR]` and `install generate`.
pub(crate) fn install(
    what: InstallCommand,
    namespace: Option<String>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<i32, PluginError> {
    match what {
        InstallCommand::Generate {
            operator_namespace,
            image,
            replicas,
            watch_namespace,
        } => {
            let o = crate::kube::install::InstallOptions {
                namespace: namespace.unwrap_or(operator_namespace),
                image,
                replicas,
                watch_namespace,
            };
            write!(out, "{}", crate::kube::install::generate(&o))?;
            Ok(0)
        }
        InstallCommand::Crds { output_dir: None } => {
            write!(out, "{}", crds_yaml())?;
            Ok(0)
        }
        InstallCommand::Crds {
            output_dir: Some(dir),
        } => Ok(write_crd_files(&dir, out, err)?),
    }
}

fn write_crd_files(dir: &Path, out: &mut dyn Write, err: &mut dyn Write) -> std::io::Result<i32> {
    for (name, yaml) in crd_files() {
        let path = dir.join(&name);
        if let Err(e) = std::fs::write(&path, yaml) {
            writeln!(err, "error: cannot write {}: {e}", path.display())?;
            return Ok(1);
        }
        writeln!(out, "wrote {}", path.display())?;
    }
    Ok(0)
}

/// `validate FILE...`: every problem of every document, with its field path; 0 when all
/// are valid.
pub(crate) fn validate(
    files: &[PathBuf],
    stdin: &mut dyn Read,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<i32, PluginError> {
    let mut all_valid = true;
    let mut documents = 0usize;
    let mut invalid = 0usize;
    for file in files {
        let label = file.display().to_string();
        let text = if label == "-" {
            let mut s = String::new();
            stdin.read_to_string(&mut s).map(|_| s)
        } else {
            std::fs::read_to_string(file)
        };
        let text = match text {
            Ok(t) => t,
            Err(e) => {
                writeln!(err, "{label}: cannot read: {e}")?;
                all_valid = false;
                continue;
            }
        };
        let reports = match check_text(&text) {
            Ok(r) => r,
            Err(e) => {
                writeln!(out, "{label}: {e}")?;
                all_valid = false;
                continue;
            }
        };
        if reports.is_empty() {
            writeln!(out, "{label}: no manifest found (the file is empty)")?;
            all_valid = false;
        }
        let many = reports.len() > 1;
        for (i, report) in reports.iter().enumerate() {
            if report.skipped.is_none() {
                documents += 1;
            }
            let place = if many {
                format!("{label}: document {} ({})", i + 1, report.label())
            } else {
                format!("{label}: {}", report.label())
            };
            if let Some(why) = &report.skipped {
                writeln!(out, "{place}: skipped ({why})")?;
            } else if report.is_valid() {
                writeln!(out, "{place}: valid")?;
            } else {
                all_valid = false;
                invalid += 1;
                let n = report.errors.len();
                writeln!(out, "{place}: {n} problem{}", if n == 1 { "" } else { "s" })?;
                for e in &report.errors {
                    writeln!(out, "  {e}")?;
                }
            }
        }
    }
    writeln!(
        out,
        "{documents} document{} checked, {invalid} invalid",
        if documents == 1 { "" } else { "s" }
    )?;
    Ok(if all_valid { 0 } else { 1 })
}
