//! TLS and certificate authentication against real PostgreSQL servers: clients verify the
//! server (`verify-full`), standbys stream as `streaming_replica` with its certificate,
//! replication without TLS or without a certificate is refused, a certificate from another
//! CA is refused and the standby's status says why, and a renewed server certificate is
//! loaded without a restart.

use cnpg_instance::testkit::Harness;
use cnpg_instance::tls;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

async fn streaming(h: &mut Harness) {
    h.running_primary("pg-1").await;
    h.running_replica("pg-2", "pg-1").await;
}

/// libpq parameters to log in to `port` as `user` with its password, verifying the server.
fn login(h: &Harness, port: u16, user: &str) -> String {
    let (db, pw) = match user {
        "postgres" => ("postgres", h.secrets.superuser()),
        _ => ("app", h.secrets.app()),
    };
    let pw = std::fs::read_to_string(pw).expect("password");
    format!(
        "host=127.0.0.1 port={port} dbname={db} user={user} password={} sslmode=verify-full sslrootcert={}",
        pw.trim(),
        h.secrets.tls().server_ca().display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_verify_the_server_and_standbys_stream_by_certificate_only() {
    let mut h = Harness::new("pg");
    streaming(&mut h).await;
    let port = h.instances["pg-1"].port;
    let files = h.secrets.tls();

    // A client checks the server's certificate and name against the cluster's CA.
    let ssl = h
        .psql(
            &login(&h, port, "app"),
            "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        )
        .await
        .expect("verify-full login");
    assert_eq!(ssl, "t|TLSv1.3");
    // The standby streams over TLS as the certificate's common name.
    let walsender = h
        .psql(
            &login(&h, port, "postgres"),
            "SELECT s.ssl, s.client_dn, r.usename FROM pg_stat_ssl s JOIN pg_stat_replication r USING (pid)",
        )
        .await
        .expect("superuser login");
    assert_eq!(walsender, "t|/CN=streaming_replica|streaming_replica");

    // streaming_replica has no password: without TLS replication matches no rule, and
    // over TLS it needs a certificate.
    let plain = format!(
        "host=127.0.0.1 port={port} user=streaming_replica dbname=postgres replication=true sslmode=disable"
    );
    let e = h
        .psql(&plain, "IDENTIFY_SYSTEM")
        .await
        .expect_err("refused");
    assert!(e.contains("no pg_hba.conf entry"), "{e}");
    let no_cert = format!(
        "host=127.0.0.1 port={port} user=streaming_replica dbname=postgres replication=true sslmode=verify-full sslrootcert={}",
        files.server_ca().display()
    );
    let e = h
        .psql(&no_cert, "IDENTIFY_SYSTEM")
        .await
        .expect_err("refused");
    assert!(e.contains("certificate"), "{e}");
    let with_cert = format!(
        "host=127.0.0.1 port={port} dbname=postgres replication=true {}",
        files.replication_conninfo()
    );
    let id = h
        .psql(&with_cert, "IDENTIFY_SYSTEM")
        .await
        .expect("by certificate");
    assert!(id.contains('|'), "{id}");

    // A certificate signed by another CA is refused, and the standby says why.
    let good = (
        std::fs::read_to_string(files.replication_cert()).expect("crt"),
        std::fs::read_to_string(files.replication_key()).expect("key"),
    );
    let other = tls::issue_ca("intruder", now_ms()).expect("ca");
    let forged = tls::issue_leaf(
        &other.cert,
        &other.key,
        "streaming_replica",
        vec![],
        true,
        now_ms(),
    )
    .expect("leaf");
    tls::write_private(&files.replication_key(), &forged.key, h.run_as).expect("key");
    tls::write_private(&files.replication_cert(), &forged.cert, h.run_as).expect("crt");
    // End the stream from the primary's side (a WAL receiver cannot be terminated): the
    // standby reconnects with the certificate it has now.
    let primary = login(&h, port, "postgres");
    h.psql(
        &primary,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_replication",
    )
    .await
    .expect("end the stream");
    h.wait_until("pg-2 to say its certificate is refused", T, async |h| {
        let s = h.status("pg-2").await;
        match &s.wal_receiver_error {
            Some(e) if !s.is_wal_receiver_active && e.contains("SSL") => {
                println!("pg-2 says: {e}");
                Ok(())
            }
            _ => Err(format!("{s:?}")),
        }
    })
    .await;
    // The right certificate back: the standby streams again by itself.
    tls::write_private(&files.replication_key(), &good.1, h.run_as).expect("key");
    tls::write_private(&files.replication_cert(), &good.0, h.run_as).expect("crt");
    h.wait_until("pg-2 streaming again", T, async |h| {
        let s = h.status("pg-2").await;
        if s.is_wal_receiver_active && s.wal_receiver_error.is_none() {
            Ok(())
        } else {
            Err(format!("{s:?}"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_server_certificate_is_served_without_a_restart() {
    let mut h = Harness::new("pg");
    streaming(&mut h).await;
    let port = h.instances["pg-1"].port;
    let files = h.secrets.tls();
    let started = h
        .psql(&login(&h, port, "app"), "SELECT pg_postmaster_start_time()")
        .await
        .expect("login");
    // Rotate to a certificate from another CA (as a user's cert-manager may): clients that
    // trust only the new CA get in once PostgreSQL serves it.
    let ca2 = tls::issue_ca("rotated", now_ms()).expect("ca");
    let leaf = tls::issue_leaf(
        &ca2.cert,
        &ca2.key,
        "pg-rw",
        tls::local_names(&[]),
        false,
        now_ms(),
    )
    .expect("leaf");
    let ca2_file = h.root.path().join("rotated-ca.crt");
    tls::write_private(&ca2_file, &ca2.cert, h.run_as).expect("ca file");
    let trusting_ca2 = login(&h, port, "app").replace(
        &files.server_ca().display().to_string(),
        &ca2_file.display().to_string(),
    );
    let e = h
        .psql(&trusting_ca2, "SELECT 1")
        .await
        .expect_err("not yet");
    assert!(e.contains("certificate verify failed"), "{e}");
    tls::write_private(&files.server_key(), &leaf.key, h.run_as).expect("key");
    tls::write_private(&files.server_cert(), &leaf.cert, h.run_as).expect("crt");
    h.wait_until("the rotated certificate served", T, async |h| {
        h.psql(&trusting_ca2, "SELECT pg_postmaster_start_time()")
            .await
            .map(|t| assert_eq!(t, started, "reloaded, not restarted"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn superuser_access_off_leaves_postgres_without_a_password() {
    let mut h = Harness::new("pg");
    h.view.update(|v| v.superuser_access = Some(false));
    streaming(&mut h).await;
    let port = h.instances["pg-1"].port;
    h.wait_until("postgres to lose its password", T, async |h| {
        match h.psql(&login(h, port, "postgres"), "SELECT 1").await {
            Err(e) if e.contains("password authentication failed") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    h.view.update(|v| v.superuser_access = Some(true));
    h.wait_until("postgres to have its password again", T, async |h| {
        h.psql(&login(h, port, "postgres"), "SELECT current_user")
            .await
            .map(|_| ())
    })
    .await;
    let log = std::fs::read_to_string(&h.instances["pg-1"].log_file).expect("log");
    let pw = std::fs::read_to_string(h.secrets.superuser()).expect("pw");
    assert!(
        !log.contains(pw.trim()),
        "the password is not in PostgreSQL's log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_endpoint_wants_the_status_token_and_the_probes_do_not() {
    use cnpg_instance::testkit::http_get;
    let mut h = Harness::new("pg");
    h.require_status_token();
    h.running_primary("pg-1").await;
    let port = h.instances["pg-1"].status_port;
    let (code, body) = http_get(port, "/pg/status").await.expect("answers");
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("status-token"), "{body}");
    let token = h.status_token.clone().expect("token");
    let wrong = cnpg_instance::http::get_authorized(
        "127.0.0.1",
        port,
        "/pg/status",
        Duration::from_secs(5),
        Some(&token.replace(|c: char| c.is_ascii_digit(), "x")),
    )
    .await
    .expect("answers");
    assert_eq!(wrong.0, 401);
    assert!(h.status("pg-1").await.is_primary, "with the token");
    for probe in ["/healthz", "/readyz", "/startupz"] {
        let (code, _) = http_get(port, probe).await.expect("answers");
        assert_eq!(code, 200, "{probe}");
    }
    let files = std::fs::metadata(h.secrets.status_token()).expect("token file");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(files.permissions().mode() & 0o777, 0o600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_https_the_status_answers_the_operator_or_the_token_and_the_probes_anyone() {
    use cnpg_instance::https;
    let mut h = Harness::new("pg");
    h.require_status_token();
    h.serve_status_over_tls();
    // Started and awaited through `status`: over HTTPS, with the operator's certificate.
    h.running_primary("pg-1").await;
    let port = h.instances["pg-1"].status_port;
    let get = async |tls: &https::ClientTls, path: &str, token: Option<&str>| {
        https::get("127.0.0.1", port, path, Duration::from_secs(5), tls, token).await
    };
    // Plain HTTP gets no answer at all.
    let plain = cnpg_instance::testkit::http_get(port, "/healthz").await;
    assert!(plain.is_err(), "{plain:?}");
    // No client certificate: the probes and metrics answer, the status does not.
    let anonymous = h.status_tls(None);
    for probe in ["/healthz", "/readyz", "/startupz", "/metrics"] {
        let (code, _) = get(&anonymous, probe, None).await.expect("answers");
        assert_eq!(code, 200, "{probe}");
    }
    let (code, body) = get(&anonymous, "/pg/status", None).await.expect("answers");
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("client certificate"), "{body}");
    // The cluster's status token (how `kubectl cnpg status` comes, through the pod proxy).
    let token = h.status_token.clone().expect("token");
    let (code, _) = get(&anonymous, "/pg/status", Some(&token))
        .await
        .expect("answers");
    assert_eq!(code, 200);
    // A certificate named like the operator's from another CA: refused by TLS itself.
    let now = now_ms();
    let other = tls::issue_ca("impostor", now).expect("ca");
    let fake =
        tls::issue_leaf(&other.cert, &other.key, "cnpg-operator", vec![], true, now).expect("leaf");
    let refused = get(
        &h.status_tls(Some((&fake.cert, &fake.key))),
        "/pg/status",
        None,
    )
    .await;
    assert!(
        matches!(&refused, Err(e) if e.starts_with("TLS:")),
        "{refused:?}"
    );
    // The operator's own certificate.
    let (cert, key) = h.operator_client.clone().expect("operator");
    let operator = h.status_tls(Some((&cert, &key)));
    let (code, body) = get(&operator, "/pg/status", None).await.expect("answers");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"isPrimary\":true"), "{body}");
    // The server verifies as the cluster's: a client expecting another name refuses it.
    let ca = std::fs::read_to_string(h.secrets.tls().server_ca()).expect("ca");
    let misnamed =
        https::ClientTls::new(&ca, Some((&cert, &key)), "elsewhere.example").expect("client");
    let wrong = get(&misnamed, "/pg/status", None).await;
    assert!(
        matches!(&wrong, Err(e) if e.starts_with("TLS:")),
        "{wrong:?}"
    );
    // A renewed operator CA is taken from the next connection on, without a restart:
    // the old certificate is refused, the new one accepted.
    let renewed = tls::issue_ca("pg-operator", now).expect("ca");
    let leaf = tls::issue_leaf(
        &renewed.cert,
        &renewed.key,
        "cnpg-operator",
        vec![],
        true,
        now,
    )
    .expect("leaf");
    tls::write_private(&h.secrets.tls().operator_ca(), &renewed.cert, h.run_as).expect("write");
    let old = get(&operator, "/pg/status", None).await;
    assert!(matches!(&old, Err(e) if e.starts_with("TLS:")), "{old:?}");
    let new = h.status_tls(Some((&leaf.cert, &leaf.key)));
    let (code, _) = get(&new, "/pg/status", None).await.expect("answers");
    assert_eq!(code, 200);
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}
