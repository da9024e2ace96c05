//! Finding PostgreSQL: against this machine's real installation, and against fake
//! installations laid out in temp directories to pin the search order.

use cnpg_instance::pg_bin::{PgBinError, REQUIRED, Search, Source};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

fn fake_install(dir: &Path, version: &str) {
    std::fs::create_dir_all(dir).expect("mkdir");
    for p in REQUIRED {
        let path = dir.join(p);
        std::fs::write(
            &path,
            format!("#!/bin/sh\necho 'postgres (PostgreSQL) {version}'\n"),
        )
        .expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
}

fn search(flag: Option<PathBuf>, env: Option<&Path>, roots: Vec<PathBuf>) -> Search {
    Search {
        flag,
        env: env.map(|p| p.as_os_str().to_owned()),
        pg_config: None,
        versioned_roots: roots,
    }
}

#[test]
fn finds_the_real_postgresql_of_this_machine() {
    let found = Search::standard(None).find().unwrap_or_else(|e| {
        panic!("these tests need PostgreSQL installed (.ci/run installs it): {e}")
    });
    assert!(found.major >= 13, "{found:?}");
    for p in REQUIRED {
        assert!(found.program(p).exists(), "{p} missing in {found:?}");
    }
}

#[test]
fn highest_versioned_directory_wins() {
    let tmp = tempfile::tempdir().expect("tempdir");
    fake_install(&tmp.path().join("13/bin"), "13.9");
    fake_install(&tmp.path().join("16/bin"), "16.4");
    std::fs::create_dir_all(tmp.path().join("17/bin")).expect("an empty, incomplete 17");
    let found = search(None, None, vec![tmp.path().to_owned()])
        .find()
        .expect("found");
    assert_eq!(
        (found.major, found.version.as_str(), found.source),
        (16, "16.4", Source::Versioned)
    );
    assert_eq!(found.dir, tmp.path().join("16/bin"));
}

#[test]
fn flag_beats_env_beats_search_and_wrong_choices_are_errors() {
    let tmp = tempfile::tempdir().expect("tempdir");
    fake_install(&tmp.path().join("root/16/bin"), "16.4");
    fake_install(&tmp.path().join("env"), "14.1");
    fake_install(&tmp.path().join("flag"), "15.2");
    let roots = vec![tmp.path().join("root")];

    let f = search(
        Some(tmp.path().join("flag")),
        Some(&tmp.path().join("env")),
        roots.clone(),
    )
    .find();
    assert_eq!(f.expect("flag").source, Source::Flag);
    let e = search(None, Some(&tmp.path().join("env")), roots.clone()).find();
    assert_eq!(e.expect("env").major, 14);

    let err = search(Some(tmp.path().join("nowhere")), None, roots.clone())
        .find()
        .expect_err("a wrong --pg-bin is not replaced by another install");
    let msg = err.to_string();
    assert!(matches!(err, PgBinError::Incomplete { .. }));
    assert!(
        msg.contains("--pg-bin points at") && msg.contains("nowhere") && msg.contains("pg_ctl"),
        "{msg}"
    );
}

#[test]
fn nothing_found_says_how_to_install() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let err = search(None, None, vec![tmp.path().to_owned()])
        .find()
        .expect_err("empty root");
    let msg = err.to_string();
    assert!(
        msg.contains("apt-get install postgresql") && msg.contains("--pg-bin"),
        "{msg}"
    );
}

#[test]
fn binary_reports_its_choice() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cnpg-instance"))
        .args(["find-postgres", "--pg-bin", "/nonexistent/bin"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--pg-bin points at /nonexistent/bin"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cnpg-instance"))
        .arg("find-postgres")
        .output()
        .expect("runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("PostgreSQL "));
}
