//! End-to-end tests of the `kubectl-cnpg` binary: the examples validate, broken manifests
//! are rejected with the field path, the CRDs it prints are structural and match the files
//! checked in under `config/crd/`.

use cnpg_core::api::schema::structural_problems;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate sits in the workspace")
        .to_path_buf()
}

fn kubectl_cnpg(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kubectl-cnpg"))
        .args(args)
        .current_dir(workspace())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl-cnpg runs");
    let mut input = child.stdin.take().expect("stdin is piped");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("write stdin");
    }
    drop(input);
    child.wait_with_output().expect("kubectl-cnpg finishes")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn example_files() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(workspace().join("examples"))
        .expect("examples/ exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| {
            format!(
                "examples/{}",
                p.file_name().expect("name").to_string_lossy()
            )
        })
        .collect();
    files.sort();
    files
}

#[test]
fn every_example_is_valid() {
    let files = example_files();
    assert!(
        files.len() >= 6,
        "expected the example manifests, found {files:?}"
    );
    let args: Vec<&str> = std::iter::once("validate")
        .chain(files.iter().map(String::as_str))
        .collect();
    let out = kubectl_cnpg(&args, None);
    let text = stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in &files {
        assert!(
            text.contains(&format!("{f}: ")),
            "{f} not reported:\n{text}"
        );
    }
    assert!(
        text.contains(&format!("{} documents checked, 0 invalid", files.len())),
        "{text}"
    );
}

#[test]
fn broken_manifests_are_rejected_with_the_field_path() {
    let cases = [
        (
            "unknown-field.yaml",
            "spec.postgresql.paramaters: unknown field",
            "did you mean \"parameters\"",
        ),
        (
            "wrong-type.yaml",
            "spec.instances: wrong type",
            "expected an integer, got a string \"three\"",
        ),
        (
            "min-greater-than-max-sync.yaml",
            "spec.minSyncReplicas: invalid",
            "greater than maxSyncReplicas (1)",
        ),
        (
            "two-bootstrap-methods.yaml",
            "spec.bootstrap: invalid",
            "2 bootstrap methods are given (initdb, pg_basebackup)",
        ),
        (
            "forbidden-parameter.yaml",
            "spec.postgresql.parameters.synchronous_standby_names: invalid",
            "managed by the operator",
        ),
    ];
    for (file, path, detail) in cases {
        let rel = format!("cnpg-operator/tests/data/broken/{file}");
        let out = kubectl_cnpg(&["validate", &rel], None);
        let text = stdout(&out);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{file} should be rejected:\n{text}"
        );
        assert!(
            text.contains(path) && text.contains(detail),
            "{file}: expected {path:?} / {detail:?} in:\n{text}"
        );
    }
}

#[test]
fn stdin_and_multi_document_streams() {
    let good = std::fs::read_to_string(workspace().join("examples/cluster-minimal.yaml"))
        .expect("example");
    let bad = std::fs::read_to_string(
        workspace().join("cnpg-operator/tests/data/broken/wrong-type.yaml"),
    )
    .expect("broken");
    let out = kubectl_cnpg(&["validate", "-"], Some(&format!("{good}\n---\n{bad}")));
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("-: document 1 (Cluster/cluster-example): valid"),
        "{text}"
    );
    assert!(
        text.contains("-: document 2 (Cluster/wrong-type): 1 problem"),
        "{text}"
    );

    let out = kubectl_cnpg(&["validate", "-"], Some(&good));
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

#[test]
fn unreadable_empty_and_garbage_input_fail_cleanly() {
    let out = kubectl_cnpg(&["validate", "no/such/file.yaml"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no/such/file.yaml: cannot read"));

    let out = kubectl_cnpg(&["validate", "-"], Some(""));
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("no manifest found"));

    for garbage in [
        "{{{",
        "\u{0}\u{1}\u{2}",
        "- - - [",
        "kind: [Cluster",
        ": : :",
    ] {
        let out = kubectl_cnpg(&["validate", "-"], Some(garbage));
        assert_eq!(out.status.code(), Some(1), "{garbage:?}: {}", stdout(&out));
        assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
    }

    let out = kubectl_cnpg(&["validate"], None);
    assert_eq!(out.status.code(), Some(2), "a usage error is clap's exit 2");
}

fn printed_crds() -> Vec<CustomResourceDefinition> {
    let out = kubectl_cnpg(&["install", "crds"], None);
    assert_eq!(out.status.code(), Some(0));
    serde_saphyr::from_multiple(&stdout(&out)).expect("install crds prints CRD YAML")
}

#[test]
fn printed_crds_are_our_structural_crds() {
    let crds = printed_crds();
    let names: Vec<&str> = crds
        .iter()
        .filter_map(|c| c.metadata.name.as_deref())
        .collect();
    assert_eq!(
        names,
        [
            "backups.postgresql.cnpg.io",
            "clusterimagecatalogs.postgresql.cnpg.io",
            "clusters.postgresql.cnpg.io",
            "databases.postgresql.cnpg.io",
            "imagecatalogs.postgresql.cnpg.io",
            "poolers.postgresql.cnpg.io",
            "scheduledbackups.postgresql.cnpg.io"
        ]
    );
    for crd in &crds {
        let problems = structural_problems(crd);
        assert!(
            problems.is_empty(),
            "{:?} is not structural: {problems:#?}",
            crd.metadata.name
        );
        let v = &crd.spec.versions[0];
        assert!(v.served && v.storage);
        // Catalogs are plain lists, with no status (as upstream's).
        let has_status = !crd.spec.names.kind.contains("ImageCatalog");
        assert_eq!(
            v.subresources.as_ref().is_some_and(|s| s.status.is_some()),
            has_status,
            "{:?}",
            crd.metadata.name
        );
    }
}

#[test]
fn checked_in_crds_are_up_to_date() {
    for (name, yaml) in cnpg_operator::manifests::crd_files() {
        let path = workspace().join("config/crd").join(&name);
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == yaml,
            "{} is stale or missing; regenerate with:\n  cargo run -p cnpg-operator --bin kubectl-cnpg -- install crds --output-dir config/crd",
            path.display()
        );
    }
}

#[test]
fn version_and_shell_completion() {
    let v = kubectl_cnpg(&["version"], None);
    assert!(v.status.success());
    assert!(
        stdout(&v).contains(&format!("Version:{}", env!("CARGO_PKG_VERSION")))
            && stdout(&v).contains("API:postgresql.cnpg.io/v1"),
        "{}",
        stdout(&v)
    );
    // The bash script, loaded by a real bash, completes the subcommands.
    let script = kubectl_cnpg(&["completion", "bash"], None);
    assert!(script.status.success());
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kubectl-cnpg.bash");
    std::fs::write(&path, &script.stdout).expect("script");
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {} && f=$(complete -p kubectl-cnpg | sed -E 's/.*-F ([^ ]+).*/\\1/') && \
             COMP_WORDS=(kubectl-cnpg val) COMP_CWORD=1 COMP_LINE='kubectl-cnpg val' COMP_POINT=16 && \
             $f kubectl-cnpg val kubectl-cnpg && echo \"${{COMPREPLY[@]}}\"",
            path.display()
        ))
        .output()
        .expect("bash runs");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "validate",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for shell in ["zsh", "fish"] {
        let s = kubectl_cnpg(&["completion", shell], None);
        assert!(s.status.success() && !s.stdout.is_empty(), "{shell}");
    }
    let bad = kubectl_cnpg(&["completion", "cmd"], None);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("possible values"));
}
