//! The OAuth2 token endpoint: `POST /oidc/v1/token` over HTTP/1.1, the
//! client-credentials grant as the Zerobus SDKs use it (see
//! [`crate::auth`]).
//!
//! Request: HTTP Basic credentials (`client_id:client_secret`) and an
//! `application/x-www-form-urlencoded` body with `grant_type=client_credentials`
//! and optionally `scope`, `resource` (both ignored) and
//! `authorization_details` (a JSON array; the `object_full_path` of every
//! `TABLE` entry names a table the token is for). Answer:
//! `{"access_token": "...", "token_type": "Bearer", "expires_in": 3600}`,
//! or a 4xx with an OAuth error (`invalid_client`, `invalid_request`,
//! `unsupported_grant_type`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::auth::Auth;
use crate::ingest::table_name;
use crate::tls::Tls;
use crate::{Error, Result};

/// The path the SDKs post to.
pub const TOKEN_PATH: &str = "/oidc/v1/token";

/// The largest request body read.
const MAX_BODY_BYTES: usize = 64 << 10;

/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 256;

/// How long one connection may take in all (TLS handshake, requests):
/// token requests are small.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves the token endpoint on `listener` until `stop` turns true.
pub fn serve(
    listener: TcpListener,
    auth: Arc<Auth>,
    tls: Option<Tls>,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let connections = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let permit = tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                permit = Arc::clone(&connections).acquire_owned() => permit,
            };
            let Ok(permit) = permit else { return };
            let accepted = tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                accepted = listener.accept() => accepted,
            };
            let (socket, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    warn!(error = %e, "token endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let auth = Arc::clone(&auth);
            let tls = tls.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let service = hyper::service::service_fn(move |request| {
                    let auth = Arc::clone(&auth);
                    async move { Ok::<_, Infallible>(answer(&auth, request).await) }
                });
                let mut http = hyper::server::conn::http1::Builder::new();
                http.timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10));
                let served = tokio::time::timeout(CONNECTION_TIMEOUT, async move {
                    match tls {
                        Some(tls) => match tls.accept(socket).await {
                            Ok(stream) => http
                                .serve_connection(TokioIo::new(stream), service)
                                .await
                                .map_err(|e| e.to_string()),
                            Err(e) => Err(e.to_string()),
                        },
                        None => http
                            .serve_connection(TokioIo::new(socket), service)
                            .await
                            .map_err(|e| e.to_string()),
                    }
                })
                .await
                .unwrap_or_else(|_| Err("timed out".to_string()));
                if let Err(e) = served {
                    info!(%peer, error = %e, "token endpoint: connection ended");
                }
            });
        }
    })
}

/// The address the token endpoint listens on: the configured one, or the
/// gRPC address with the next port (any free port when gRPC has one of
/// the system's choosing).
pub fn address(configured: Option<SocketAddr>, grpc: SocketAddr) -> SocketAddr {
    configured.unwrap_or_else(|| {
        let mut addr = grpc;
        addr.set_port(match grpc.port() {
            0 | u16::MAX => 0,
            port => port + 1,
        });
        addr
    })
}

async fn answer(auth: &Auth, request: Request<Incoming>) -> Response<Full<Bytes>> {
    if request.uri().path() != TOKEN_PATH {
        return json(
            StatusCode::NOT_FOUND,
            error_body("not_found", "no such path"),
        );
    }
    if request.method() != Method::POST {
        return json(
            StatusCode::METHOD_NOT_ALLOWED,
            error_body("invalid_request", "use POST"),
        );
    }
    let credentials = request
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(basic_credentials);
    let body = match Limited::new(request.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(_) => {
            return json(
                StatusCode::PAYLOAD_TOO_LARGE,
                error_body("invalid_request", "the request body is too large"),
            );
        }
    };
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    // Credentials may also come in the form (client_secret_post).
    let credentials = credentials.or_else(|| {
        Some((
            field("client_id")?.to_string(),
            field("client_secret")?.to_string(),
        ))
    });
    let Some((id, secret)) = credentials else {
        return json(
            StatusCode::UNAUTHORIZED,
            error_body(
                "invalid_client",
                "send the client credentials with HTTP Basic",
            ),
        );
    };
    if field("grant_type") != Some("client_credentials") {
        return json(
            StatusCode::BAD_REQUEST,
            error_body(
                "unsupported_grant_type",
                "grant_type must be client_credentials",
            ),
        );
    }
    let tables = match field("authorization_details").map(requested_tables) {
        None => Ok(Vec::new()),
        Some(tables) => tables,
    };
    let tables = match tables {
        Ok(tables) => tables,
        Err(e) => return json(StatusCode::BAD_REQUEST, error_body("invalid_request", &e)),
    };
    match auth.mint(&id, &secret, &tables) {
        Ok((token, ttl)) => json(
            StatusCode::OK,
            serde_json::json!({
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": ttl.as_secs(),
            }),
        ),
        Err(Error::Unauthenticated(message)) => {
            warn!(client = %id, "token endpoint: refused credentials");
            json(
                StatusCode::UNAUTHORIZED,
                error_body("invalid_client", &message),
            )
        }
        Err(e) => json(
            StatusCode::BAD_REQUEST,
            error_body("invalid_request", &e.to_string()),
        ),
    }
}

/// `(id, secret)` of an `Authorization: Basic ...` header.
fn basic_credentials(header: &str) -> Option<(String, String)> {
    let encoded = header.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((id.to_string(), secret.to_string()))
}

#[derive(Deserialize)]
struct Detail {
    object_type: Option<String>,
    object_full_path: Option<String>,
}

/// The weir tables an `authorization_details` array names.
fn requested_tables(details: &str) -> Result<Vec<String>, String> {
    let details: Vec<Detail> = serde_json::from_str(details)
        .map_err(|e| format!("authorization_details must be a JSON array of objects: {e}"))?;
    details
        .iter()
        .filter(|d| d.object_type.as_deref() == Some("TABLE"))
        .filter_map(|d| d.object_full_path.as_deref())
        .map(|path| table_name(path).map_err(|e| e.to_string()))
        .collect()
}

fn error_body(error: &str, description: &str) -> serde_json::Value {
    serde_json::json!({ "error": error, "error_description": description })
}

fn json(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sdks_authorization_details_name_the_table() {
        let details = r#"[
            {"type":"unity_catalog_privileges","privileges":["USE CATALOG"],"object_type":"CATALOG","object_full_path":"main"},
            {"type":"unity_catalog_privileges","privileges":["USE SCHEMA"],"object_type":"SCHEMA","object_full_path":"main.telemetry"},
            {"type":"unity_catalog_privileges","privileges":["SELECT","MODIFY"],"object_type":"TABLE","object_full_path":"main.telemetry.sensors","operations":["zerobuswrite"]}
        ]"#;
        assert_eq!(requested_tables(details).unwrap(), vec!["sensors"]);
        assert!(requested_tables("{}").is_err());
        assert_eq!(
            basic_credentials("Basic cHJvZHVjZXI6czNjcmV0"),
            Some(("producer".into(), "s3cret".into()))
        );
        assert_eq!(basic_credentials("Bearer x"), None);
    }
}
