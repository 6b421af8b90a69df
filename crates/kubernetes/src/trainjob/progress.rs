//! Trainer v2.2+'s progress API: ranks report `trainerStatus`
//! (`progressPercentage`, `estimatedRemainingSeconds`, `metrics`) with
//! `POST /apis/trainer.kubeflow.org/v1alpha1/namespaces/{ns}/trainjobs/{name}/status`
//! over TLS, authenticated by a projected service-account token whose
//! audience names that one TrainJob — so a pod can update only its own job.
//!
//! As Trainer does, each trainer pod gets `KUBEFLOW_TRAINER_SERVER_URL`,
//! `KUBEFLOW_TRAINER_SERVER_CA_CERT` and `KUBEFLOW_TRAINER_SERVER_TOKEN` (file
//! paths under `/var/run/secrets/kubeflow/trainer`), the token projected with
//! that audience and the CA from the ConfigMap `<job>-tls-config`. The CA and
//! the server's certificate are made when the operator starts (rcgen); the
//! token is checked with a TokenReview for the audience (Trainer verifies
//! the same JWT against the cluster's OIDC keys), and its namespace must be
//! the job's. Off unless the operator is given `--progress-listen` and
//! `--progress-url` (Trainer's `TrainJobStatus` gate is off by default too).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::api::{TrainJob, TrainerStatus};
use super::resolve::Gang;

pub const ENV_URL: &str = "KUBEFLOW_TRAINER_SERVER_URL";
pub const ENV_CA: &str = "KUBEFLOW_TRAINER_SERVER_CA_CERT";
pub const ENV_TOKEN: &str = "KUBEFLOW_TRAINER_SERVER_TOKEN";
pub const MOUNT: &str = "/var/run/secrets/kubeflow/trainer";
const VOLUME: &str = "kubeflow-trainer-token";
const TOKEN_SECONDS: i64 = 3600;
/// The largest request body read (Trainer's limit).
const MAX_BODY: usize = 1 << 16;

/// Where ranks reach the endpoint, and the CA that signed its certificate.
#[derive(Debug, Clone)]
pub struct Progress {
    /// `https://host:port`, as pods reach the operator.
    pub url: String,
    pub ca_pem: String,
}

/// `trainer.kubeflow.org/v1alpha1/namespaces/<ns>/trainjobs/<name>/status`.
pub fn audience(ns: &str, name: &str) -> String {
    format!("trainer.kubeflow.org/v1alpha1/namespaces/{ns}/trainjobs/{name}/status")
}

fn path(ns: &str, name: &str) -> String {
    format!("/apis/{}", audience(ns, name))
}

/// The ConfigMap with the CA certificate the pods trust.
pub fn ca_config_map(job: &TrainJob, p: &Progress) -> ConfigMap {
    ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some(format!(
                "{}-tls-config",
                job.metadata.name.clone().unwrap_or_default()
            )),
            namespace: job.metadata.namespace.clone(),
            owner_references: job.controller_owner_ref(&()).map(|o| vec![o]),
            ..Default::default()
        },
        data: Some([("ca.crt".to_string(), p.ca_pem.clone())].into()),
        ..Default::default()
    }
}

/// Gives every pod of the trainer step the variables, the projected token
/// and the CA (the initializers report no progress).
pub fn inject(gang: &mut Gang, ns: &str, name: &str, p: &Progress) {
    let env = [
        (ENV_URL, format!("{}{}", p.url, path(ns, name))),
        (ENV_CA, format!("{MOUNT}/ca.crt")),
        (ENV_TOKEN, format!("{MOUNT}/token")),
    ];
    let volume: k8s_openapi::api::core::v1::Volume = serde_json::from_value(json!({
        "name": VOLUME,
        "projected": {"sources": [
            {"serviceAccountToken": {"audience": audience(ns, name), "expirationSeconds": TOKEN_SECONDS, "path": "token"}},
            {"configMap": {"name": format!("{name}-tls-config"), "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        ]},
    }))
    .unwrap_or_default();
    // As Trainer's status plugin: the trainer's pods only.
    for gj in gang.jobs.iter_mut().filter(|j| j.trainer) {
        let Some(spec) = gj.template.spec.as_mut() else {
            continue;
        };
        let volumes = spec.volumes.get_or_insert_with(Vec::new);
        volumes.retain(|v| v.name != VOLUME);
        volumes.push(volume.clone());
        for c in &mut spec.containers {
            let vars = c.env.get_or_insert_with(Vec::new);
            for (k, v) in &env {
                vars.retain(|e| e.name != *k);
                vars.push(k8s_openapi::api::core::v1::EnvVar {
                    name: k.to_string(),
                    value: Some(v.clone()),
                    value_from: None,
                });
            }
            let mounts = c.volume_mounts.get_or_insert_with(Vec::new);
            mounts.retain(|m| m.name != VOLUME);
            mounts.push(k8s_openapi::api::core::v1::VolumeMount {
                name: VOLUME.into(),
                mount_path: MOUNT.into(),
                read_only: Some(true),
                ..Default::default()
            });
        }
    }
}

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProgressError {
    #[error("progress endpoint certificate: {0}")]
    Cert(String),
    #[error("progress endpoint: cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
}

/// Makes a CA and a certificate for `url`'s host, listens on `listen`, and
/// serves the endpoint until the process ends. Returns what pods need.
pub async fn start(
    client: Client,
    listen: SocketAddr,
    url: &str,
) -> Result<Progress, ProgressError> {
    let host = url_host(url);
    let (ca_pem, config) = certificates(&host).map_err(ProgressError::Cert)?;
    let tcp = TcpListener::bind(listen)
        .await
        .map_err(|e| ProgressError::Listen(listen, e))?;
    let listener = Tls::new(tcp, TlsAcceptor::from(Arc::new(config)))
        .map_err(|e| ProgressError::Listen(listen, e))?;
    let app = Router::new()
        .route(
            "/apis/trainer.kubeflow.org/v1alpha1/namespaces/{ns}/trainjobs/{name}/status",
            post(report),
        )
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(client);
    tracing::info!(%listen, url, "TrainJob progress endpoint");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the progress endpoint stopped");
        }
    });
    Ok(Progress {
        url: url.trim_end_matches('/').to_string(),
        ca_pem,
    })
}

/// The host of an `https://HOST[:PORT][/…]` URL (an IPv6 address without
/// its brackets).
fn url_host(url: &str) -> String {
    let rest = url.trim_start_matches("https://");
    let authority = rest.split('/').next().unwrap_or_default();
    match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default().to_string(),
        None => authority.split(':').next().unwrap_or_default().to_string(),
    }
}

/// A CA (its PEM) and a server configuration with a certificate it signed
/// for `host` (an IP address or a DNS name).
fn certificates(host: &str) -> Result<(String, rustls::ServerConfig), String> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let e = |e: rcgen::Error| e.to_string();
    let ca_key = KeyPair::generate().map_err(e)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "switchyard TrainJob progress CA");
    let ca_cert = ca.self_signed(&ca_key).map_err(e)?;
    let key = KeyPair::generate().map_err(e)?;
    let mut names = vec![host.to_string()];
    if host != "localhost" {
        names.push("localhost".into());
    }
    let mut params = CertificateParams::new(names).map_err(e)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "switchyard-operator");
    let cert = params.signed_by(&key, &ca_cert, &ca_key).map_err(e)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .map_err(|e| e.to_string())?;
    Ok((ca_cert.pem(), config))
}

/// TLS connections for `axum::serve`. Handshakes run in tasks of their own
/// (at most [`HANDSHAKES`] at once, each within 5 s), so a client that
/// connects and sends nothing holds up no one else.
struct Tls {
    ready: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    addr: SocketAddr,
}

const HANDSHAKES: usize = 64;

impl Tls {
    fn new(tcp: TcpListener, acceptor: TlsAcceptor) -> std::io::Result<Tls> {
        let addr = tcp.local_addr()?;
        let (tx, ready) = tokio::sync::mpsc::channel(HANDSHAKES);
        let slots = Arc::new(tokio::sync::Semaphore::new(HANDSHAKES));
        tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::debug!(error = %e, "accept");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let _slot = slot;
                    match tokio::time::timeout(Duration::from_secs(5), acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Tls { ready, addr })
    }
}

impl axum::serve::Listener for Tls {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accepting task ended (the process is stopping).
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.addr)
    }
}

/// A Kubernetes-style failure status.
fn refuse(code: StatusCode, reason: &str, message: &str) -> Response {
    (
        code,
        Json(
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "message": message, "reason": reason, "code": code.as_u16()}),
        ),
    )
        .into_response()
}

/// Whether `authorization` carries a token the API server vouches for with
/// the job's audience, of a service account in the job's namespace.
async fn authorized(
    client: &Client,
    authorization: &str,
    ns: &str,
    name: &str,
) -> Result<bool, kube::Error> {
    let mut parts = authorization.split_whitespace();
    let (Some(scheme), Some(token), None) = (parts.next(), parts.next(), parts.next()) else {
        return Ok(false);
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Ok(false);
    }
    let aud = audience(ns, name);
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: token.to_string(),
            audiences: Some(vec![aud.clone()]),
        },
        ..Default::default()
    };
    let reviews: Api<TokenReview> = Api::all(client.clone());
    let st = reviews
        .create(&PostParams::default(), &review)
        .await?
        .status
        .unwrap_or_default();
    let user = st.user.and_then(|u| u.username).unwrap_or_default();
    Ok(st.authenticated == Some(true)
        && st.audiences.unwrap_or_default().contains(&aud)
        && user.starts_with(&format!("system:serviceaccount:{ns}:")))
}

async fn report(
    State(client): State<Client>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let auth = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    match authorized(&client, auth, &ns, &name).await {
        Ok(true) => {}
        Ok(false) => return refuse(StatusCode::FORBIDDEN, "Forbidden", "Forbidden"),
        Err(e) => {
            tracing::warn!(error = %e, "TokenReview failed");
            return refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "Internal error",
            );
        }
    }
    let request: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => {
            return refuse(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid",
                "Invalid payload",
            )
        }
    };
    let Some(raw) = request.get("trainerStatus").filter(|v| !v.is_null()) else {
        return (StatusCode::OK, Json(request)).into_response();
    };
    let mut status: TrainerStatus = match serde_json::from_value(raw.clone()) {
        Ok(s) => s,
        Err(e) => {
            return refuse(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid",
                &format!("trainerStatus: {e}"),
            )
        }
    };
    status.last_updated_time = Some(Time(Timestamp::now()));
    let jobs: Api<TrainJob> = Api::namespaced(client, &ns);
    // A job another controller manages (MultiKueue) is not this endpoint's.
    match jobs.get_opt(&name).await {
        Ok(Some(j)) if super::plan::managed_elsewhere(&j) => {
            return refuse(StatusCode::FORBIDDEN, "Forbidden", "Forbidden");
        }
        Ok(Some(_)) => {}
        Ok(None) => {
            return refuse(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("TrainJob {ns}/{name} not found"),
            )
        }
        Err(e) => {
            tracing::warn!(error = %e, "reading the TrainJob");
            return refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "Internal error",
            );
        }
    }
    // Each report replaces the last (a merge patch keeps what it does not
    // name: absent fields are named as null).
    let patch = json!({"status": {"trainerStatus": {
        "progressPercentage": status.progress_percentage,
        "estimatedRemainingSeconds": status.estimated_remaining_seconds,
        "metrics": status.metrics,
        "lastUpdatedTime": status.last_updated_time,
    }}});
    match jobs
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => (StatusCode::OK, Json(json!({"trainerStatus": status}))).into_response(),
        Err(kube::Error::Api(e)) if e.code == 422 || e.code == 400 => {
            refuse(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", &e.message)
        }
        Err(kube::Error::Api(e)) if e.code == 404 => refuse(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("TrainJob {ns}/{name} not found"),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "writing trainerStatus");
            refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "Internal error",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_certificate_names_the_urls_host() {
        assert_eq!(super::url_host("https://10.0.0.1:10443"), "10.0.0.1");
        assert_eq!(super::url_host("https://op.ns.svc:10443/x"), "op.ns.svc");
        assert_eq!(super::url_host("https://[fd00::1]:10443"), "fd00::1");
        assert_eq!(super::url_host("https://host"), "host");
    }
}
