//! Wire tests: the exact HTTP requests the operator and the instance manager send to the
//! API server (verbs, paths, server-side-apply parameters, content types, the status
//! subresource), pinned with tower-test's mock service behind kube's real `Client`.

use cnpg_core::api::{Cluster, ClusterStatus};
use cnpg_core::naming::Role;
use cnpg_core::reconcile::{Bootstrap, Event, EventType};
use cnpg_instance::kube_view::KubeView;
use cnpg_instance::view::ClusterView;
use cnpg_operator::kube::platform::{HttpInstanceClient, KubePlatform};
use cnpg_operator::kube::specs::OperatorSettings;
use cnpg_operator::platform::{Platform, PlatformError, StatusUpdate};
use http::{Request, Response};
use kube::client::Body;
use serde_json::{Value, json};
use std::sync::Arc;
use tower_test::mock::{self, Handle};

type ApiHandle = Handle<Request<Body>, Response<Body>>;

fn cluster() -> Cluster {
    let mut c: Cluster = serde_saphyr::from_str(
        "apiVersion: postgresql.cnpg.io/v1\nkind: Cluster\nmetadata: {name: pg, namespace: db}\nspec: {instances: 3}\n",
    )
    .expect("manifest");
    c.metadata.uid = Some("uid-1".into());
    c.metadata.resource_version = Some("42".into());
    c
}

fn platform() -> (KubePlatform, ApiHandle) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let p = KubePlatform::new(
        client,
        Arc::new(HttpInstanceClient::default()),
        OperatorSettings::default(),
        Some("wire".into()),
    );
    (p, handle)
}

type Sent = (String, String, Option<String>, Value);
type Responder = tower_test::mock::SendResponse<Response<Body>>;

/// The next request: method, path and query, content type, JSON body; and its responder.
async fn next(handle: &mut ApiHandle) -> (Sent, Responder) {
    let (req, send) =
        tokio::time::timeout(std::time::Duration::from_secs(5), handle.next_request())
            .await
            .expect("a request within 5 s")
            .expect("the client is alive");
    let method = req.method().to_string();
    let uri = req.uri().to_string();
    let ct = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = http_body_util::BodyExt::collect(req.into_body())
        .await
        .expect("body")
        .to_bytes();
    let body: Value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("JSON body")
    };
    ((method, uri, ct, body), send)
}

fn respond(send: Responder, reply: (u16, Value)) {
    send.send_response(
        Response::builder()
            .status(reply.0)
            .body(Body::from(serde_json::to_vec(&reply.1).expect("json")))
            .expect("response"),
    );
}

/// The next request, answered with `reply`.
async fn expect(handle: &mut ApiHandle, reply: (u16, Value)) -> Sent {
    let (sent, send) = next(handle).await;
    respond(send, reply);
    sent
}

fn ok_object(kind: &str, name: &str) -> (u16, Value) {
    (
        200,
        json!({"apiVersion": "v1", "kind": kind, "metadata": {"name": name, "namespace": "db"}}),
    )
}

#[tokio::test]
async fn status_is_server_side_applied_on_the_subresource_with_an_optimistic_lock() {
    let (p, mut h) = platform();
    let c = cluster();
    let task = tokio::spawn(async move {
        let status = ClusterStatus {
            phase: Some("Cluster in healthy state".into()),
            target_primary: Some("pg-1".into()),
            ..Default::default()
        };
        p.write_status(&c, &StatusUpdate { status }).await
    });
    // First the cluster's Poolers (whether the primary makes what auth_query needs, and
    // which poolers a switchover pauses): none.
    let (method, uri, _, _) = expect(
        &mut h,
        (
            200,
            json!({"apiVersion": "postgresql.cnpg.io/v1", "kind": "PoolerList",
                   "metadata": {"resourceVersion": "1"}, "items": []}),
        ),
    )
    .await;
    assert_eq!(
        (method.as_str(), uri.as_str()),
        ("GET", "/apis/postgresql.cnpg.io/v1/namespaces/db/poolers?")
    );
    let reply = (200, serde_json::to_value(cluster()).expect("json"));
    let (method, uri, ct, body) = expect(&mut h, reply).await;
    assert_eq!(method, "PATCH");
    assert_eq!(
        uri,
        "/apis/postgresql.cnpg.io/v1/namespaces/db/clusters/pg/status?&force=true&fieldManager=cnpg-operator"
    );
    assert_eq!(ct.as_deref(), Some("application/apply-patch+yaml"));
    assert_eq!(body["apiVersion"], "postgresql.cnpg.io/v1");
    assert_eq!(body["kind"], "Cluster");
    assert_eq!(body["metadata"]["resourceVersion"], "42");
    assert_eq!(body["status"]["targetPrimary"], "pg-1");
    assert!(
        body["status"].get("currentPrimary").is_none(),
        "currentPrimary is the instances' to write"
    );
    task.await.expect("task").expect("write_status");
}

#[tokio::test]
async fn a_stale_status_write_is_a_conflict() {
    let (p, mut h) = platform();
    let c = cluster();
    let task = tokio::spawn(async move {
        p.write_status(
            &c,
            &StatusUpdate {
                status: ClusterStatus::default(),
            },
        )
        .await
    });
    let conflict = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": "the object has been modified", "reason": "Conflict", "code": 409});
    expect(&mut h, (409, conflict)).await;
    assert!(matches!(
        task.await.expect("task"),
        Err(PlatformError::Conflict(_))
    ));
}

#[tokio::test]
async fn role_labels_change_by_merge_patch() {
    let (p, mut h) = platform();
    let c = cluster();
    let task = tokio::spawn(async move { p.set_role(&c, "pg-1", Role::Unhealthy).await });
    let (method, uri, ct, body) = expect(&mut h, ok_object("Pod", "pg-1")).await;
    assert_eq!(method, "PATCH");
    assert_eq!(uri, "/api/v1/namespaces/db/pods/pg-1?");
    assert_eq!(ct.as_deref(), Some("application/merge-patch+json"));
    assert_eq!(
        body,
        json!({"metadata": {"labels": {"cnpg.io/instanceRole": "unhealthy", "role": "unhealthy"}}})
    );
    task.await.expect("task").expect("set_role");
}

#[tokio::test]
async fn an_instance_is_its_pvc_then_its_pod_created_once() {
    let (p, mut h) = platform();
    let c = cluster();
    let task = tokio::spawn(async move {
        p.create_instance(
            &c,
            "pg-2",
            &Bootstrap::Join {
                source: "pg-1".into(),
            },
        )
        .await
    });
    // First: is storage of an earlier pg-2 still on its way out? (No.)
    let none = json!({"kind": "PersistentVolumeClaimList", "apiVersion": "v1",
        "metadata": {}, "items": []});
    let (method, uri, _, _) = expect(&mut h, (200, none)).await;
    assert_eq!(
        (method.as_str(), uri.as_str()),
        (
            "GET",
            "/api/v1/namespaces/db/persistentvolumeclaims?&labelSelector=cnpg.io%2Fcluster%3Dpg%2Ccnpg.io%2FinstanceName%3Dpg-2"
        )
    );
    let (method, uri, _, body) = expect(&mut h, ok_object("PersistentVolumeClaim", "pg-2")).await;
    assert_eq!(
        (method.as_str(), uri.as_str()),
        ("POST", "/api/v1/namespaces/db/persistentvolumeclaims?")
    );
    assert_eq!(body["metadata"]["labels"]["cnpg.io/pvcRole"], "PG_DATA");
    // Made before the instance is: marked ready once the instance first answers.
    assert_eq!(
        body["metadata"]["annotations"]["cnpg.io/pvcStatus"],
        "initializing"
    );
    assert_eq!(body["metadata"]["ownerReferences"][0]["uid"], "uid-1");
    let (method, uri, _, body) = expect(&mut h, ok_object("Pod", "pg-2")).await;
    assert_eq!(
        (method.as_str(), uri.as_str()),
        ("POST", "/api/v1/namespaces/db/pods?")
    );
    assert_eq!(
        body["metadata"]["labels"]["cnpg.io/instanceRole"],
        "replica"
    );
    assert_eq!(body["spec"]["initContainers"][1]["args"][0], "join");
    task.await.expect("task").expect("create_instance");
}

#[tokio::test]
async fn events_go_to_events_k8s_io() {
    let (p, mut h) = platform();
    let c = cluster();
    let task = tokio::spawn(async move {
        p.record_event(
            &c,
            &Event {
                type_: EventType::Warning,
                reason: "FailingOver",
                message: "Initiating a failover from pg-1".into(),
            },
        )
        .await
    });
    let reply = (
        200,
        json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "pg.1", "namespace": "db"}, "eventTime": "2026-01-01T00:00:00.000000Z"}),
    );
    let (method, uri, _, body) = expect(&mut h, reply).await;
    assert_eq!(
        (method.as_str(), uri.as_str()),
        ("POST", "/apis/events.k8s.io/v1/namespaces/db/events?")
    );
    assert_eq!(body["reason"], "FailingOver");
    assert_eq!(body["type"], "Warning");
    assert_eq!(body["regarding"]["kind"], "Cluster");
    assert_eq!(body["reportingController"], "cnpg-operator");
    task.await.expect("task").expect("record_event");
}

#[tokio::test]
async fn the_instance_takes_the_lease_then_publishes_current_primary() {
    let (service, mut h) = mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let task = tokio::spawn(async move {
        let view = KubeView::start(client, "db", "pg", "pg-2", 5432);
        let granted = view.acquire_primary_lease("pg-2").await.expect("lease");
        assert!(granted);
        view.publish_current_primary("pg-2").await.expect("publish");
    });
    // The watch of the Cluster and the lease requests interleave: answer by path.
    let mut seen = Vec::new();
    let mut published = None;
    while published.is_none() {
        let ((method, uri, ct, body), send) = next(&mut h).await;
        let reply = if uri.starts_with("/apis/coordination.k8s.io/v1/namespaces/db/leases/pg")
            && method == "GET"
        {
            (
                404,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}),
            )
        } else if uri.starts_with("/apis/coordination.k8s.io/v1/namespaces/db/leases") {
            assert_eq!(method, "POST");
            assert_eq!(body["spec"]["holderIdentity"], "pg-2");
            (
                201,
                json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "pg", "resourceVersion": "1"}, "spec": body["spec"]}),
            )
        } else if uri.contains("/clusters/pg/status") {
            published = Some((method.clone(), uri.clone(), ct.clone(), body.clone()));
            (200, serde_json::to_value(cluster()).expect("json"))
        } else {
            // The Cluster watch: an empty list, then nothing.
            (
                200,
                json!({"apiVersion": "postgresql.cnpg.io/v1", "kind": "ClusterList", "metadata": {"resourceVersion": "1"}, "items": []}),
            )
        };
        seen.push(format!("{method} {uri}"));
        respond(send, reply);
    }
    let (method, uri, ct, body) = published.expect("published");
    assert_eq!(method, "PATCH");
    assert_eq!(
        uri,
        "/apis/postgresql.cnpg.io/v1/namespaces/db/clusters/pg/status?&force=true&fieldManager=cnpg-instance"
    );
    assert_eq!(ct.as_deref(), Some("application/apply-patch+yaml"));
    assert_eq!(body["status"]["currentPrimary"], "pg-2");
    let lease_at = seen
        .iter()
        .position(|s| s.starts_with("POST /apis/coordination.k8s.io"))
        .expect("a lease create");
    let publish_at = seen
        .iter()
        .position(|s| s.contains("/clusters/pg/status"))
        .expect("a publish");
    assert!(lease_at < publish_at, "the lease comes first: {seen:?}");
    task.await.expect("task");
}
