//! Who may talk to the server: the bearer token (compared in constant time),
//! the `Host` names it answers to (DNS rebinding), and no cross-site requests
//! from a browser (a web page the user visits must not drive the API).
//!
//! Browsers send `Origin` on every cross-origin request that can change state
//! and `Sec-Fetch-Site` on every request; programs (`kfp.Client`, curl, the
//! CLI) send neither, so they pass. A rebinding page has a same-origin
//! `Origin`, but its `Host` is the attacker's name, which the host check
//! refuses.

use std::net::IpAddr;

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, HOST, ORIGIN};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::AppState;

/// Which `Host` headers the server answers.
#[derive(Debug, Clone, Default)]
pub struct HostPolicy {
    /// The address the server is bound to.
    pub bound: Option<IpAddr>,
    /// Extra names (lowercase, without port), e.g. a Service's DNS name; `*` allows any.
    pub allowed: Vec<String>,
    /// This machine's host name (accepted when bound to every interface).
    pub hostname: Option<String>,
}

impl HostPolicy {
    /// Whether a request naming `host` (a `Host` header, port included) is for us.
    pub fn allows(&self, host: &str) -> bool {
        let name = strip_port(host).to_ascii_lowercase();
        if self.allowed.iter().any(|a| a == "*" || *a == name) {
            return true;
        }
        if name == "localhost" {
            return true;
        }
        match name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            Ok(ip) if ip.is_loopback() => true,
            // Bound to every interface: any address of this machine is fine
            // (a rebinding attack needs a *name*).
            Ok(ip) => self.bound.is_some_and(|b| b.is_unspecified() || b == ip),
            Err(_) => {
                self.bound.is_some_and(|b| b.is_unspecified())
                    && self.hostname.as_deref() == Some(name.as_str())
            }
        }
    }
}

/// `name:port` → `name`; `[::1]:80` → `[::1]`.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.chars().all(|c| c.is_ascii_digit()) => {
            name
        }
        _ => host,
    }
}

/// The token check, in constant time (digests of equal length are compared,
/// so neither the content nor the length of the token leaks through timing).
pub fn token_matches(expected: &str, header: Option<&str>) -> bool {
    let Some(given) = header.and_then(bearer) else {
        return false;
    };
    let (a, b) = (Sha256::digest(expected), Sha256::digest(given));
    a.ct_eq(&b).into()
}

/// The credentials of an `Authorization` value with the `Bearer` scheme (any case, RFC 7235).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim())
        .filter(|t| !t.is_empty())
}

/// Why a browser request from another site is refused, if it is.
fn cross_site(req: &Request) -> Option<String> {
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if let Some(site) = header("sec-fetch-site") {
        let navigation =
            *req.method() == Method::GET && header("sec-fetch-mode") == Some("navigate");
        let ok = match site {
            "same-origin" | "none" => true,
            // A link from elsewhere may open the dashboard, but nothing more.
            _ => navigation && !req.uri().path().starts_with("/apis/"),
        };
        if !ok {
            return Some(format!(
                "cross-site request refused (Sec-Fetch-Site: {site}); use the dashboard served by this server or a non-browser client"
            ));
        }
    }
    if !safe {
        if let Some(origin) = req.headers().get(ORIGIN) {
            let origin = origin.to_str().unwrap_or("null");
            let host = req.headers().get(HOST).and_then(|v| v.to_str().ok());
            let same = origin
                .split_once("://")
                .map(|(_, authority)| authority.trim_end_matches('/'))
                .is_some_and(|authority| Some(authority) == host);
            if !same {
                return Some(format!(
                    "cross-origin {} refused (Origin: {origin}); the API accepts changes only from its own pages or from non-browser clients",
                    req.method()
                ));
            }
        }
    }
    None
}

/// The middleware: host, then cross-site, then token.
pub async fn check(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if let Some(host) = req.headers().get(HOST) {
        let host = host.to_str().unwrap_or("");
        if !state.config.hosts.allows(host) {
            return Err(ApiError::Forbidden(format!(
                "host '{host}' is not one this server answers to; add it with --allowed-host if it is yours"
            )));
        }
    }
    if let Some(why) = cross_site(&req) {
        return Err(ApiError::Forbidden(why));
    }
    if let Some(token) = &state.config.auth_token {
        let open = ["/apis/v2beta1/healthz", "/apis/switchyard/v1/openapi.json"];
        let path = req.uri().path();
        if !open.contains(&path) && !crate::ui::is_asset_path(path) {
            let given = req
                .headers()
                .get(AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            if !token_matches(token, given) {
                return Err(ApiError::Unauthorized(
                    "missing or wrong bearer token (Authorization: Bearer …; the token is in the server's start line)".into(),
                ));
            }
        }
    }
    Ok(next.run(req).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(bound: &str) -> HostPolicy {
        HostPolicy {
            bound: bound.parse().ok(),
            allowed: vec!["switchyard.switchyard.svc".into()],
            hostname: Some("box".into()),
        }
    }

    #[test]
    fn loopback_server_answers_only_loopback_names() {
        let p = policy("127.0.0.1");
        for ok in [
            "127.0.0.1:8888",
            "localhost:8888",
            "LOCALHOST",
            "[::1]:8888",
            "127.0.0.2",
            "switchyard.switchyard.svc:8888",
        ] {
            assert!(p.allows(ok), "{ok}");
        }
        for bad in [
            "evil.example:8888",
            "box:8888",
            "10.0.0.1:8888",
            "localhost.evil.example",
        ] {
            assert!(!p.allows(bad), "{bad}");
        }
    }

    #[test]
    fn wildcard_bind_answers_addresses_and_own_name() {
        let p = policy("0.0.0.0");
        assert!(p.allows("10.244.0.1:8888"));
        assert!(p.allows("box:8888"));
        assert!(!p.allows("evil.example"));
        let any = HostPolicy {
            allowed: vec!["*".into()],
            ..Default::default()
        };
        assert!(any.allows("evil.example"));
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_compared_whole() {
        assert!(token_matches("s3cret", Some("Bearer s3cret")));
        assert!(token_matches("s3cret", Some("bearer s3cret")));
        assert!(token_matches("s3cret", Some("BEARER  s3cret")));
        assert!(!token_matches("s3cret", Some("Bearer s3cre")));
        assert!(!token_matches("s3cret", Some("Bearer s3cretx")));
        assert!(!token_matches("s3cret", Some("Basic s3cret")));
        assert!(!token_matches("s3cret", Some("Bearer")));
        assert!(!token_matches("s3cret", None));
    }

    fn req(method: &str, path: &str, headers: &[(&str, &str)]) -> Request {
        let mut b = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(axum::body::Body::empty()).expect("request")
    }

    #[test]
    fn cross_site_browser_requests_are_refused() {
        let host = ("host", "127.0.0.1:8888");
        // A form post or fetch from another site.
        let r = req(
            "POST",
            "/apis/switchyard/v1/jobs",
            &[
                host,
                ("origin", "https://evil.example"),
                ("sec-fetch-site", "cross-site"),
            ],
        );
        assert!(cross_site(&r).is_some());
        let r = req(
            "POST",
            "/apis/v2beta1/pipelines/upload",
            &[host, ("origin", "https://evil.example")],
        );
        assert!(cross_site(&r).is_some());
        let r = req(
            "DELETE",
            "/apis/v2beta1/runs/x",
            &[host, ("origin", "null")],
        );
        assert!(cross_site(&r).is_some());
        // Cross-site reads of the API (e.g. <img>, <script>) too.
        let r = req(
            "GET",
            "/apis/v2beta1/runs",
            &[
                host,
                ("sec-fetch-site", "cross-site"),
                ("sec-fetch-mode", "no-cors"),
            ],
        );
        assert!(cross_site(&r).is_some());
        // The dashboard's own calls and a link that opens it.
        let r = req(
            "POST",
            "/apis/v2beta1/runs",
            &[
                host,
                ("origin", "http://127.0.0.1:8888"),
                ("sec-fetch-site", "same-origin"),
            ],
        );
        assert!(cross_site(&r).is_none());
        let r = req(
            "GET",
            "/",
            &[
                host,
                ("sec-fetch-site", "cross-site"),
                ("sec-fetch-mode", "navigate"),
            ],
        );
        assert!(cross_site(&r).is_none());
        // Programs send neither header.
        let r = req("POST", "/apis/v2beta1/runs", &[host]);
        assert!(cross_site(&r).is_none());
    }
}
