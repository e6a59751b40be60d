//! The mutating admission webhook: on every create of a Ferry object it records who
//! asked (the API server's own account of the user, never anything the object says)
//! and signs it; on every update it puts the recorded requester back as it was, so
//! nobody can borrow another user's rights by editing annotations.
//!
//! The API server calls `POST /mutate` over HTTPS; the chart registers it in the
//! MutatingWebhookConfiguration `ferry` with `failurePolicy: Fail`, so a Ferry object
//! is never created without its requester.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use ferry_crd::requester::{ANNOTATION, Requester, SIGNATURE_ANNOTATION};
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use tokio_stream::StreamExt as _;
use tokio_util::sync::CancellationToken;

/// Largest admission review the webhook reads; Kubernetes objects stop at 1.5 MiB.
const MAX_BODY: usize = 3 << 20;

/// Serves the webhook on `listener` with `tls` until `shutdown`.
pub fn spawn(
    listener: tokio::net::TcpListener,
    tls: &ferry_rpc::ServerTls,
    secret: Arc<str>,
    shutdown: CancellationToken,
) {
    let mut incoming = ferry_rpc::tls::incoming(listener, tls);
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                () = shutdown.cancelled() => break,
                next = incoming.next() => match next {
                    Some(Ok(stream)) => stream,
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "webhook connection refused");
                        continue;
                    }
                    None => break,
                },
            };
            let secret = secret.clone();
            let stop = shutdown.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| answer(req, secret.clone()));
                let builder = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                );
                let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                tokio::pin!(conn);
                tokio::select! {
                    served = conn.as_mut() => {
                        if let Err(e) = served {
                            tracing::debug!(error = %e, "webhook connection ended");
                        }
                    }
                    () = stop.cancelled() => conn.as_mut().graceful_shutdown(),
                }
            });
        }
    });
}

/// The address the webhook is served on, for logs.
pub fn describe(addr: SocketAddr) -> String {
    format!("https://{addr}/mutate")
}

async fn answer(
    req: Request<Incoming>,
    secret: Arc<str>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != Method::POST || req.uri().path() != "/mutate" {
        return Ok(plain(StatusCode::NOT_FOUND, "POST /mutate only"));
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => {
            return Ok(plain(
                StatusCode::BAD_REQUEST,
                &format!("reading the review: {e}"),
            ));
        }
    };
    let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(&body) {
        Ok(review) => review,
        Err(e) => {
            return Ok(plain(
                StatusCode::BAD_REQUEST,
                &format!("not an AdmissionReview: {e}"),
            ));
        }
    };
    let request: Result<AdmissionRequest<DynamicObject>, _> = review.try_into();
    let response = match request {
        Ok(request) => mutate(&request, &secret),
        Err(e) => AdmissionResponse::invalid(e.to_string()),
    };
    let text = serde_json::to_vec(&response.into_review()).unwrap_or_default();
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(text)))
        .unwrap_or_default())
}

fn plain(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(format!("{text}\n"))));
    *response.status_mut() = status;
    response
}

/// The response to one admission request: the annotations the object must carry.
pub fn mutate(request: &AdmissionRequest<DynamicObject>, secret: &str) -> AdmissionResponse {
    let response = AdmissionResponse::from(request);
    let Some(object) = &request.object else {
        return response;
    };
    let kind = request.kind.kind.as_str();
    let namespace = request.namespace.as_deref().unwrap_or("");
    let mut annotations: BTreeMap<String, String> =
        object.metadata.annotations.clone().unwrap_or_default();
    match request.operation {
        Operation::Create => {
            let requester = Requester {
                username: request.user_info.username.clone().unwrap_or_default(),
                uid: request.user_info.uid.clone().unwrap_or_default(),
                groups: request.user_info.groups.clone().unwrap_or_default(),
            };
            if requester.username.is_empty() {
                return response.deny("the API server named no user for this request");
            }
            annotations.extend(requester.annotations(secret, kind, namespace));
            tracing::info!(kind, namespace, user = %requester.username, "recorded the requester");
        }
        Operation::Update => {
            // What the object carried before, whatever this update says.
            let old = request
                .old_object
                .as_ref()
                .and_then(|o| o.metadata.annotations.clone())
                .unwrap_or_default();
            for key in [ANNOTATION, SIGNATURE_ANNOTATION] {
                match old.get(key) {
                    Some(value) => annotations.insert(key.to_owned(), value.clone()),
                    None => annotations.remove(key),
                };
            }
        }
        _ => return response,
    }
    if object.metadata.annotations.as_ref() == Some(&annotations) {
        return response;
    }
    let value = match serde_json::to_value(&annotations) {
        Ok(value) => value,
        Err(e) => return response.deny(format!("annotations: {e}")),
    };
    let patch = json_patch::Patch(vec![json_patch::PatchOperation::Add(
        json_patch::AddOperation {
            path: json_patch::jsonptr::PointerBuf::from_tokens(["metadata", "annotations"]),
            value,
        },
    )]);
    match response.clone().with_patch(patch) {
        Ok(patched) => patched,
        Err(e) => response.deny(format!("building the patch: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn request(
        operation: &str,
        object: Value,
        old: Value,
        user: &str,
    ) -> AdmissionRequest<DynamicObject> {
        let review = json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "00000000-0000-0000-0000-000000000001",
                "kind": {"group": "ferry.dev", "version": "v1alpha1", "kind": "Migration"},
                "resource": {"group": "ferry.dev", "version": "v1alpha1", "resource": "migrations"},
                "name": "m",
                "namespace": "shop",
                "operation": operation,
                "userInfo": {"username": user, "uid": "u-7", "groups": ["shop-team"]},
                "object": object,
                "oldObject": old,
                "dryRun": false
            }
        });
        let review: AdmissionReview<DynamicObject> =
            serde_json::from_value(review).expect("a review");
        review.try_into().expect("a request")
    }

    fn migration(annotations: Value) -> Value {
        json!({
            "apiVersion": "ferry.dev/v1alpha1",
            "kind": "Migration",
            "metadata": {"name": "m", "namespace": "shop", "annotations": annotations},
            "spec": {"clusterPair": "a-to-b"}
        })
    }

    /// The object as the API server stores it after the response's patch.
    fn patched(object: &Value, response: &AdmissionResponse) -> Value {
        let mut out = object.clone();
        if let Some(patch) = &response.patch {
            let patch: json_patch::Patch = serde_json::from_slice(patch).expect("a JSON patch");
            json_patch::patch(&mut out, &patch).expect("the patch applies");
        }
        out
    }

    #[test]
    fn create_records_the_api_servers_user_whatever_the_object_claims() {
        let forged = migration(json!({ANNOTATION: "{\"username\":\"admin\"}", "keep": "me"}));
        let req = request("CREATE", forged.clone(), Value::Null, "alice");
        let response = mutate(&req, "secret");
        assert!(response.allowed);
        let stored = patched(&forged, &response);
        let notes = stored["metadata"]["annotations"].clone();
        let notes: BTreeMap<String, String> = serde_json::from_value(notes).expect("strings");
        assert_eq!(notes["keep"], "me");
        let who = Requester::of(Some(&notes), "secret", "Migration", "shop", "m").expect("signed");
        assert_eq!(who.username, "alice");
        assert_eq!(who.groups, ["shop-team"]);
    }

    #[test]
    fn update_puts_the_recorded_requester_back() {
        let original: BTreeMap<String, String> = Requester {
            username: "alice".into(),
            uid: String::new(),
            groups: vec![],
        }
        .annotations("secret", "Migration", "shop")
        .into_iter()
        .collect();
        let old = migration(serde_json::to_value(&original).expect("json"));
        let edited = migration(json!({ANNOTATION: "{\"username\":\"admin\"}"}));
        let req = request("UPDATE", edited.clone(), old, "mallory");
        let stored = patched(&edited, &mutate(&req, "secret"));
        let notes: BTreeMap<String, String> =
            serde_json::from_value(stored["metadata"]["annotations"].clone()).expect("strings");
        assert_eq!(notes, original);
    }
}
