//! The `cnpg-instance` binary: bad input fails with a clear message and starts nothing; a
//! real initdb → run → status → SIGTERM cycle works.

use cnpg_instance::runas::{self, RunAs};
use cnpg_instance::testkit::free_port;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cnpg-instance"))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn tempdir() -> tempfile::TempDir {
    let t = tempfile::tempdir().expect("tempdir");
    runas::own(RunAs::detect().expect("user"), t.path()).expect("own");
    t
}

fn run_args(
    pgdata: &std::path::Path,
    secrets: &std::path::Path,
    status: &std::path::Path,
    port: u16,
    sport: u16,
) -> Vec<String> {
    [
        "run",
        "--pgdata",
        &pgdata.display().to_string(),
        "--cluster",
        "pg",
        "--name",
        "pg-1",
        "--secrets",
        &secrets.display().to_string(),
        "--port",
        &port.to_string(),
        "--status-port",
        &sport.to_string(),
        "--cluster-status",
        &status.display().to_string(),
        "--parameter",
        "fsync=off",
    ]
    .map(String::from)
    .to_vec()
}

/// Stops the instance manager (SIGTERM) even when the test fails.
struct Running(Option<std::process::Child>);

impl Running {
    fn stop(&mut self) -> std::process::ExitStatus {
        let mut c = self.0.take().expect("running");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("SIGTERM");
        c.wait().expect("exits")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.0.is_some() {
            let _ = self.stop();
        }
    }
}

#[test]
fn bad_input_fails_clearly_and_starts_nothing() {
    let t = tempdir();
    let pgdata = t.path().join("data");
    let status = t.path().join("status.json");
    std::fs::write(
        &status,
        r#"{"currentPrimary":"pg-1","targetPrimary":"pg-1"}"#,
    )
    .expect("status");
    let args = run_args(
        &pgdata,
        &t.path().join("secrets"),
        &status,
        free_port(),
        free_port(),
    );

    let o = bin().args(&args).output().expect("runs");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("is not a PostgreSQL data directory"),
        "{}",
        text(&o)
    );

    std::fs::create_dir_all(&pgdata).expect("mkdir");
    std::fs::write(pgdata.join("PG_VERSION"), "15\n").expect("write");
    let o = bin().args(&args).output().expect("runs");
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("that cnpg-instance did not create"),
        "{}",
        text(&o)
    );

    let o = bin()
        .arg("--pg-bin")
        .arg("/nonexistent/bin")
        .args(&args)
        .output()
        .expect("runs");
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("--pg-bin points at /nonexistent/bin, which lacks postgres"),
        "{}",
        text(&o)
    );

    let o = bin()
        .args([
            "initdb",
            "--pgdata",
            &pgdata.display().to_string(),
            "--cluster",
            "pg",
            "--name",
            "pg-1",
            "--secrets",
            &t.path().join("s").display().to_string(),
        ])
        .output()
        .expect("runs");
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("already holds a data directory; refusing to overwrite it"),
        "{}",
        text(&o)
    );
    assert_eq!(
        std::fs::read_to_string(pgdata.join("PG_VERSION")).expect("kept"),
        "15\n",
        "nothing was touched"
    );
}

#[test]
fn initdb_run_status_and_clean_stop() {
    let t = tempdir();
    let pgdata = t.path().join("pg-1").join("data");
    let secrets = t.path().join("secrets");
    let o = bin()
        .args([
            "initdb",
            "--pgdata",
            &pgdata.display().to_string(),
            "--cluster",
            "pg",
            "--name",
            "pg-1",
            "--secrets",
            &secrets.display().to_string(),
        ])
        .output()
        .expect("runs");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        secrets.join("superuser-password").exists(),
        "passwords are generated"
    );

    let status_file = t.path().join("status.json");
    std::fs::write(
        &status_file,
        r#"{"targetPrimary":"pg-1","instances":["pg-1"]}"#,
    )
    .expect("status");
    let (port, sport) = (free_port(), free_port());
    let mut args = run_args(&pgdata, &secrets, &status_file, port, sport);
    args.extend(["--parameter".into(), "port=1".into()]);
    let o = bin().args(&args).output().expect("runs");
    assert_eq!(o.status.code(), Some(1), "port is the manager's");
    assert!(
        text(&o).contains("--parameter port: managed by the instance manager"),
        "{}",
        text(&o)
    );
    args.truncate(args.len() - 2);

    let mut child = Running(Some(
        bin()
            .args(&args)
            .env("RUST_LOG", "warn")
            .spawn()
            .expect("run starts"),
    ));
    let start = Instant::now();
    let status = loop {
        let o = bin()
            .args(["status", "--status-port", &sport.to_string()])
            .output()
            .expect("status runs");
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        if o.status.success() && out.contains("\"isPrimary\": true") {
            break out;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "never became primary: {}",
            text(&o)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        status.contains("\"timeLineID\": 1") && status.contains("\"currentLsn\""),
        "{status}"
    );
    // It publishes itself beside the status file.
    loop {
        let published = std::fs::read_to_string(status_file.with_file_name("current-primary.json"))
            .unwrap_or_default();
        if published.contains("\"currentPrimary\":\"pg-1\"") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "never published: {published}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let code = child.stop();
    assert!(code.success(), "{code:?}");
    assert!(
        !pgdata.join("postmaster.pid").exists(),
        "PostgreSQL was stopped"
    );
}

/// The pod init container's step: the program, the passwords and the certificates land in
/// the shared volume, runnable and private; a CA's key is never taken.
#[test]
fn install_copies_the_program_and_the_passwords() {
    use std::os::unix::fs::PermissionsExt;
    let to = tempdir();
    let passwords = tempdir();
    for f in ["superuser-password", "app-password"] {
        std::fs::write(passwords.path().join(f), format!("{f}-value")).expect("write");
    }
    let certificates = tempdir();
    for f in ["ca.crt", "ca.key", "server.crt", "server.key"] {
        std::fs::write(certificates.path().join(f), format!("{f}-value")).expect("write");
    }
    let o = bin()
        .args(["install", "--to"])
        .arg(to.path())
        .arg("--passwords")
        .arg(passwords.path())
        .arg("--certificates")
        .arg(certificates.path())
        .output()
        .expect("runs");
    assert!(o.status.success(), "{}", text(&o));
    let copied = to.path().join("cnpg-instance");
    let mode = std::fs::metadata(&copied)
        .expect("copied")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    let version = Command::new(&copied)
        .arg("--version")
        .output()
        .expect("the copy runs");
    assert!(version.status.success());
    for (file, value) in [
        ("superuser-password", "superuser-password-value"),
        ("server.key", "server.key-value"),
        ("ca.crt", "ca.crt-value"),
    ] {
        let secret = to.path().join("secrets").join(file);
        assert_eq!(std::fs::read_to_string(&secret).expect("copied"), value);
        let mode = std::fs::metadata(&secret)
            .expect("secret")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
    assert!(!to.path().join("secrets/ca.key").exists());
    for d in ["run", "tmp", "log"] {
        assert!(to.path().join(d).is_dir(), "{d}");
    }
    // An unwritable target is named.
    let o = bin()
        .args(["install", "--to", "/proc/nonexistent/dir"])
        .output()
        .expect("runs");
    assert!(!o.status.success());
    assert!(text(&o).contains("/proc/nonexistent/dir"), "{}", text(&o));
}

/// `run` needs a source of cluster status: a file or `--kubernetes`, not both.
#[test]
fn run_needs_a_status_file_or_kubernetes() {
    let d = tempdir();
    let o = bin()
        .args(["run", "--pgdata"])
        .arg(d.path().join("data"))
        .args(["--cluster", "pg", "--name", "pg-1", "--secrets"])
        .arg(d.path().join("s"))
        .args(["--port", "5432", "--status-port", "8000"])
        .output()
        .expect("runs");
    assert!(!o.status.success());
    assert!(text(&o).contains("--cluster-status"), "{}", text(&o));
    let o = bin()
        .args(["run", "--pgdata"])
        .arg(d.path().join("data"))
        .args(["--cluster", "pg", "--name", "pg-1", "--secrets"])
        .arg(d.path().join("s"))
        .args([
            "--port",
            "5432",
            "--status-port",
            "8000",
            "--kubernetes",
            "--cluster-status",
            "/x",
        ])
        .output()
        .expect("runs");
    assert!(!o.status.success());
    assert!(text(&o).contains("cannot be used with"), "{}", text(&o));
}
