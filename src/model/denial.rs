//! Every answer the gateway writes itself: a small [`Denial`] value mapped, in
//! this one place, to status, `{"code","message"}` body, metric reason and the
//! extra headers (`WWW-Authenticate`, `Allow`, `Retry-After`).

use crate::model::limit::Limit;
use crate::model::scope::Scope;
use bytes::Bytes;
use std::borrow::Cow;
use std::sync::Arc;

/// Why the gateway answered instead of the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// Request head over `max_header_bytes` or `max_headers` (before row 1).
    HeadersTooLarge,
    /// Framing that two parsers could read differently (`Content-Length` with
    /// `Transfer-Encoding`), or a request Pingora refuses to forward.
    InvalidRequest,
    /// The client stopped sending its request body for `body_timeout_ms`.
    RequestTimeout,
    /// The client began a request head but did not finish it within
    /// `header_timeout_ms`.
    HeadTimeout,
    /// `CONNECT`, which Pingora refuses to proxy before keygate sees it.
    ConnectNotSupported,
    /// Row 1.
    BadPath,
    /// Row 2.
    NoRoute {
        /// Request method.
        method: http::Method,
        /// Request path (no query).
        path: Box<str>,
    },
    /// Row 3.
    MethodNotAllowed {
        /// Request method.
        method: http::Method,
        /// The route's methods, for the `Allow` header.
        allowed: Arc<str>,
    },
    /// Row 4.
    HttpsRequired,
    /// Row 5.
    MissingToken,
    /// Row 6.
    InvalidKey,
    /// Row 7.
    Expired {
        /// Seconds since expiry.
        ago: u64,
    },
    /// Row 8.
    Revoked {
        /// Seconds since revocation.
        ago: u64,
    },
    /// Row 9.
    NeedsCompanyKey,
    /// Row 10.
    NeedsWorkspaceKey,
    /// Row 11.
    Workspace {
        /// The workspace the path names.
        workspace: Box<str>,
    },
    /// Row 12.
    MissingScope(Scope),
    /// Row 13.
    RateLimited {
        /// The limit applied.
        limit: Limit,
        /// Seconds until one token is back.
        retry_after: u64,
    },
    /// Row 13 with `[cluster] on_unavailable = "deny"` while Redis cannot
    /// be reached (CONTRACT §7).
    LimiterUnavailable,
    /// Row 14.
    UpstreamUnavailable {
        /// Upstream name.
        upstream: Arc<str>,
    },
    /// Row 15.
    UpstreamTimeout {
        /// Upstream name.
        upstream: Arc<str>,
    },
    /// A failure inside keygate or Pingora that no other row describes.
    Internal,
}

/// The `reason` label of `keygate_auth_denials_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DenialReason {
    /// Row 5.
    MissingToken,
    /// Row 6.
    InvalidKey,
    /// Row 7.
    Expired,
    /// Row 8.
    Revoked,
    /// Rows 9-10.
    WrongKeyType,
    /// Row 11.
    Workspace,
    /// Row 12.
    Scope,
    /// Row 4.
    HttpsRequired,
    /// Row 1.
    BadPath,
}

impl DenialReason {
    /// Every reason, in label order.
    pub const ALL: [DenialReason; 9] = [
        DenialReason::MissingToken,
        DenialReason::InvalidKey,
        DenialReason::Expired,
        DenialReason::Revoked,
        DenialReason::WrongKeyType,
        DenialReason::Workspace,
        DenialReason::Scope,
        DenialReason::HttpsRequired,
        DenialReason::BadPath,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DenialReason::MissingToken => "missing_token",
            DenialReason::InvalidKey => "invalid_key",
            DenialReason::Expired => "expired",
            DenialReason::Revoked => "revoked",
            DenialReason::WrongKeyType => "wrong_key_type",
            DenialReason::Workspace => "workspace",
            DenialReason::Scope => "scope",
            DenialReason::HttpsRequired => "https_required",
            DenialReason::BadPath => "bad_path",
        }
    }

    /// Index into per-reason arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// What a shadow route tells its upstream in `x-keygate-shadow`: the first
/// check that failed (the `reason` words of `keygate_auth_denials_total`) or
/// `rate_limited`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShadowReason {
    /// A check of rows 4-12.
    Check(DenialReason),
    /// Row 13.
    RateLimited,
}

impl ShadowReason {
    /// Every reason, in label order (the auth reasons, then `rate_limited`).
    pub const ALL: [ShadowReason; 10] = [
        ShadowReason::Check(DenialReason::MissingToken),
        ShadowReason::Check(DenialReason::InvalidKey),
        ShadowReason::Check(DenialReason::Expired),
        ShadowReason::Check(DenialReason::Revoked),
        ShadowReason::Check(DenialReason::WrongKeyType),
        ShadowReason::Check(DenialReason::Workspace),
        ShadowReason::Check(DenialReason::Scope),
        ShadowReason::Check(DenialReason::HttpsRequired),
        ShadowReason::Check(DenialReason::BadPath),
        ShadowReason::RateLimited,
    ];

    /// The label value and header value.
    pub fn as_str(self) -> &'static str {
        match self {
            ShadowReason::Check(r) => r.as_str(),
            ShadowReason::RateLimited => "rate_limited",
        }
    }

    /// Index into per-reason arrays (as [`ShadowReason::ALL`]).
    pub fn index(self) -> usize {
        match self {
            ShadowReason::Check(r) => r.index(),
            ShadowReason::RateLimited => DenialReason::ALL.len(),
        }
    }
}

impl Denial {
    /// HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            Denial::HeadersTooLarge => 431,
            Denial::InvalidRequest => 400,
            Denial::RequestTimeout | Denial::HeadTimeout => 408,
            Denial::ConnectNotSupported => 405,
            Denial::BadPath => 400,
            Denial::NoRoute { .. } => 404,
            Denial::MethodNotAllowed { .. } => 405,
            Denial::MissingToken | Denial::InvalidKey | Denial::Expired { .. } => 401,
            Denial::HttpsRequired
            | Denial::Revoked { .. }
            | Denial::NeedsCompanyKey
            | Denial::NeedsWorkspaceKey
            | Denial::Workspace { .. }
            | Denial::MissingScope(_) => 403,
            Denial::RateLimited { .. } => 429,
            Denial::LimiterUnavailable => 503,
            Denial::UpstreamUnavailable { .. } => 502,
            Denial::UpstreamTimeout { .. } => 504,
            Denial::Internal => 500,
        }
    }

    /// The `code` field.
    pub fn code(&self) -> &'static str {
        match self {
            Denial::InvalidRequest | Denial::BadPath => "BAD_REQUEST",
            Denial::MissingToken | Denial::InvalidKey | Denial::Expired { .. } => "UNAUTHORIZED",
            Denial::HttpsRequired
            | Denial::Revoked { .. }
            | Denial::NeedsCompanyKey
            | Denial::NeedsWorkspaceKey
            | Denial::Workspace { .. }
            | Denial::MissingScope(_) => "FORBIDDEN",
            Denial::NoRoute { .. } => "NOT_FOUND",
            Denial::MethodNotAllowed { .. } | Denial::ConnectNotSupported => "METHOD_NOT_ALLOWED",
            Denial::RequestTimeout | Denial::HeadTimeout => "REQUEST_TIMEOUT",
            Denial::RateLimited { .. } => "TOO_MANY_REQUESTS",
            Denial::LimiterUnavailable => "SERVICE_UNAVAILABLE",
            Denial::HeadersTooLarge => "REQUEST_HEADER_FIELDS_TOO_LARGE",
            Denial::UpstreamUnavailable { .. } => "BAD_GATEWAY",
            Denial::UpstreamTimeout { .. } => "GATEWAY_TIMEOUT",
            Denial::Internal => "INTERNAL_ERROR",
        }
    }

    /// The access log's `outcome` for a request answered with this denial
    /// (the metric reason where there is one).
    pub fn label(&self) -> &'static str {
        match self {
            Denial::HeadersTooLarge => "headers_too_large",
            Denial::InvalidRequest | Denial::ConnectNotSupported => "invalid_request",
            Denial::RequestTimeout | Denial::HeadTimeout => "client_error",
            Denial::BadPath => "bad_path",
            Denial::NoRoute { .. } => "no_route",
            Denial::MethodNotAllowed { .. } => "method_not_allowed",
            Denial::HttpsRequired => "https_required",
            Denial::MissingToken => "missing_token",
            Denial::InvalidKey => "invalid_key",
            Denial::Expired { .. } => "expired",
            Denial::Revoked { .. } => "revoked",
            Denial::NeedsCompanyKey | Denial::NeedsWorkspaceKey => "wrong_key_type",
            Denial::Workspace { .. } => "workspace",
            Denial::MissingScope(_) => "scope",
            Denial::RateLimited { .. } => "rate_limited",
            Denial::LimiterUnavailable => "limiter_unavailable",
            Denial::UpstreamUnavailable { .. } => "upstream_unavailable",
            Denial::UpstreamTimeout { .. } => "upstream_timeout",
            Denial::Internal => "error",
        }
    }

    /// The `message` field.
    pub fn message(&self) -> Cow<'static, str> {
        match self {
            Denial::HeadersTooLarge => "Request header fields too large".into(),
            Denial::InvalidRequest => "Invalid request".into(),
            Denial::RequestTimeout => "Request body not received in time".into(),
            Denial::HeadTimeout => "Request head not received in time".into(),
            Denial::ConnectNotSupported => "Method CONNECT is not supported".into(),
            Denial::BadPath => "Invalid request path".into(),
            Denial::NoRoute { method, path } => format!("No route for {method} {path}").into(),
            Denial::MethodNotAllowed { method, .. } => {
                format!("Method {method} is not allowed on this route").into()
            }
            Denial::HttpsRequired => "HTTPS is required".into(),
            Denial::MissingToken => "Missing bearer token".into(),
            Denial::InvalidKey => "Invalid or unauthorized API key".into(),
            Denial::Expired { ago } => format!("API key expired {} ago", age(*ago)).into(),
            Denial::Revoked { ago } => format!("API key was revoked {} ago", age(*ago)).into(),
            Denial::NeedsCompanyKey => "This endpoint requires a company API key. Use a company-scoped API key to access company-level resources.".into(),
            Denial::NeedsWorkspaceKey => "This endpoint requires a workspace API key. Use a workspace-scoped API key to access workspace resources.".into(),
            Denial::Workspace { workspace } => {
                format!("API key does not have access to workspace {workspace}").into()
            }
            Denial::MissingScope(s) => {
                format!("API key is missing the required scope: {}", s.as_str()).into()
            }
            Denial::RateLimited { limit, retry_after } => format!(
                "Rate limit of {} requests per {}s exceeded. Quota resets in {}",
                limit.requests,
                limit.per_secs,
                plural(*retry_after, "second")
            )
            .into(),
            Denial::LimiterUnavailable => "Rate limiter unavailable".into(),
            Denial::UpstreamUnavailable { upstream } => {
                format!("Upstream {upstream} is unavailable").into()
            }
            Denial::UpstreamTimeout { upstream } => format!("Upstream {upstream} timed out").into(),
            Denial::Internal => "Internal gateway error".into(),
        }
    }

    /// The JSON body `{"code": ..., "message": ...}`. The fixed bodies of the
    /// most frequent denials are static, so a flood of bad keys allocates nothing.
    pub fn body(&self) -> Bytes {
        match self {
            Denial::MissingToken => {
                Bytes::from_static(br#"{"code":"UNAUTHORIZED","message":"Missing bearer token"}"#)
            }
            Denial::InvalidKey => Bytes::from_static(
                br#"{"code":"UNAUTHORIZED","message":"Invalid or unauthorized API key"}"#,
            ),
            Denial::BadPath => {
                Bytes::from_static(br#"{"code":"BAD_REQUEST","message":"Invalid request path"}"#)
            }
            _ => json_body(self.code(), &self.message()),
        }
    }

    /// The metric reason, for rows 1 and 4-12.
    pub fn reason(&self) -> Option<DenialReason> {
        Some(match self {
            Denial::BadPath => DenialReason::BadPath,
            Denial::HttpsRequired => DenialReason::HttpsRequired,
            Denial::MissingToken => DenialReason::MissingToken,
            Denial::InvalidKey => DenialReason::InvalidKey,
            Denial::Expired { .. } => DenialReason::Expired,
            Denial::Revoked { .. } => DenialReason::Revoked,
            Denial::NeedsCompanyKey | Denial::NeedsWorkspaceKey => DenialReason::WrongKeyType,
            Denial::Workspace { .. } => DenialReason::Workspace,
            Denial::MissingScope(_) => DenialReason::Scope,
            Denial::HeadersTooLarge
            | Denial::InvalidRequest
            | Denial::RequestTimeout
            | Denial::HeadTimeout
            | Denial::ConnectNotSupported
            | Denial::NoRoute { .. }
            | Denial::MethodNotAllowed { .. }
            | Denial::RateLimited { .. }
            | Denial::LimiterUnavailable
            | Denial::UpstreamUnavailable { .. }
            | Denial::UpstreamTimeout { .. }
            | Denial::Internal => return None,
        })
    }

    /// `WWW-Authenticate`, on 401s and on a missing scope.
    pub fn www_authenticate(&self) -> Option<&'static str> {
        match self {
            Denial::MissingToken | Denial::InvalidKey | Denial::Expired { .. } => Some("Bearer"),
            Denial::MissingScope(Scope::Read) => {
                Some(r#"Bearer error="insufficient_scope", scope="read:all""#)
            }
            Denial::MissingScope(Scope::Write) => {
                Some(r#"Bearer error="insufficient_scope", scope="write:all""#)
            }
            Denial::MissingScope(Scope::Admin) => {
                Some(r#"Bearer error="insufficient_scope", scope="admin""#)
            }
            _ => None,
        }
    }
}

/// `{"code": code, "message": message}` as JSON bytes.
pub fn json_body(code: &str, message: &str) -> Bytes {
    let v = serde_json::json!({ "code": code, "message": message });
    Bytes::from(v.to_string())
}

/// "3 hours", "1 day", "45 seconds": the largest whole unit.
pub fn age(secs: u64) -> String {
    const MINUTE: u64 = 60;
    const HOUR: u64 = 60 * MINUTE;
    const DAY: u64 = 24 * HOUR;
    if secs < MINUTE {
        plural(secs, "second")
    } else if secs < HOUR {
        plural(secs / MINUTE, "minute")
    } else if secs < DAY {
        plural(secs / HOUR, "hour")
    } else {
        plural(secs / DAY, "day")
    }
}

fn plural(n: u64, unit: &str) -> String {
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(d: &Denial) -> serde_json::Value {
        serde_json::from_slice(&d.body()).unwrap()
    }

    #[test]
    fn ages_use_largest_whole_unit() {
        assert_eq!(age(0), "0 seconds");
        assert_eq!(age(1), "1 second");
        assert_eq!(age(59), "59 seconds");
        assert_eq!(age(60), "1 minute");
        assert_eq!(age(3599), "59 minutes");
        assert_eq!(age(3600), "1 hour");
        assert_eq!(age(3 * 3600 + 5), "3 hours");
        assert_eq!(age(86399), "23 hours");
        assert_eq!(age(86400), "1 day");
        assert_eq!(age(2 * 86400 + 7), "2 days");
    }

    #[test]
    fn static_bodies_equal_generated_ones() {
        for d in [Denial::MissingToken, Denial::InvalidKey, Denial::BadPath] {
            assert_eq!(
                body(&d),
                serde_json::from_slice::<serde_json::Value>(&json_body(d.code(), &d.message()))
                    .unwrap()
            );
        }
    }

    #[test]
    fn rows_map_to_exact_status_code_message() {
        let cases: Vec<(Denial, u16, &str, &str)> = vec![
            (Denial::BadPath, 400, "BAD_REQUEST", "Invalid request path"),
            (
                Denial::InvalidRequest,
                400,
                "BAD_REQUEST",
                "Invalid request",
            ),
            (
                Denial::RequestTimeout,
                408,
                "REQUEST_TIMEOUT",
                "Request body not received in time",
            ),
            (
                Denial::HeadersTooLarge,
                431,
                "REQUEST_HEADER_FIELDS_TOO_LARGE",
                "Request header fields too large",
            ),
            (
                Denial::NoRoute {
                    method: http::Method::GET,
                    path: "/the/path".into(),
                },
                404,
                "NOT_FOUND",
                "No route for GET /the/path",
            ),
            (
                Denial::MethodNotAllowed {
                    method: http::Method::DELETE,
                    allowed: "GET".into(),
                },
                405,
                "METHOD_NOT_ALLOWED",
                "Method DELETE is not allowed on this route",
            ),
            (Denial::HttpsRequired, 403, "FORBIDDEN", "HTTPS is required"),
            (
                Denial::MissingToken,
                401,
                "UNAUTHORIZED",
                "Missing bearer token",
            ),
            (
                Denial::InvalidKey,
                401,
                "UNAUTHORIZED",
                "Invalid or unauthorized API key",
            ),
            (
                Denial::Expired { ago: 3 * 3600 },
                401,
                "UNAUTHORIZED",
                "API key expired 3 hours ago",
            ),
            (
                Denial::Revoked { ago: 2 * 86400 },
                403,
                "FORBIDDEN",
                "API key was revoked 2 days ago",
            ),
            (
                Denial::NeedsCompanyKey,
                403,
                "FORBIDDEN",
                "This endpoint requires a company API key. Use a company-scoped API key to access company-level resources.",
            ),
            (
                Denial::NeedsWorkspaceKey,
                403,
                "FORBIDDEN",
                "This endpoint requires a workspace API key. Use a workspace-scoped API key to access workspace resources.",
            ),
            (
                Denial::Workspace {
                    workspace: "ws_x".into(),
                },
                403,
                "FORBIDDEN",
                "API key does not have access to workspace ws_x",
            ),
            (
                Denial::MissingScope(Scope::Write),
                403,
                "FORBIDDEN",
                "API key is missing the required scope: write:all",
            ),
            (
                Denial::RateLimited {
                    limit: Limit::DEFAULT,
                    retry_after: 1,
                },
                429,
                "TOO_MANY_REQUESTS",
                "Rate limit of 100 requests per 60s exceeded. Quota resets in 1 second",
            ),
            (
                Denial::RateLimited {
                    limit: Limit::DEFAULT,
                    retry_after: 7,
                },
                429,
                "TOO_MANY_REQUESTS",
                "Rate limit of 100 requests per 60s exceeded. Quota resets in 7 seconds",
            ),
            (
                Denial::UpstreamUnavailable {
                    upstream: "api".into(),
                },
                502,
                "BAD_GATEWAY",
                "Upstream api is unavailable",
            ),
            (
                Denial::UpstreamTimeout {
                    upstream: "api".into(),
                },
                504,
                "GATEWAY_TIMEOUT",
                "Upstream api timed out",
            ),
        ];
        for (d, status, code, message) in cases {
            assert_eq!(d.status(), status, "{d:?}");
            assert_eq!(
                body(&d),
                serde_json::json!({"code": code, "message": message}),
                "{d:?}"
            );
        }
    }

    #[test]
    fn labels_agree_with_reasons_and_codes_with_statuses() {
        let all = [
            Denial::HeadersTooLarge,
            Denial::InvalidRequest,
            Denial::RequestTimeout,
            Denial::HeadTimeout,
            Denial::ConnectNotSupported,
            Denial::BadPath,
            Denial::NoRoute {
                method: http::Method::GET,
                path: "/x".into(),
            },
            Denial::MethodNotAllowed {
                method: http::Method::GET,
                allowed: "POST".into(),
            },
            Denial::HttpsRequired,
            Denial::MissingToken,
            Denial::InvalidKey,
            Denial::Expired { ago: 1 },
            Denial::Revoked { ago: 1 },
            Denial::NeedsCompanyKey,
            Denial::NeedsWorkspaceKey,
            Denial::Workspace {
                workspace: "ws".into(),
            },
            Denial::MissingScope(Scope::Write),
            Denial::RateLimited {
                limit: crate::model::limit::Limit::DEFAULT,
                retry_after: 1,
            },
            Denial::UpstreamUnavailable {
                upstream: "api".into(),
            },
            Denial::UpstreamTimeout {
                upstream: "api".into(),
            },
            Denial::Internal,
        ];
        for d in &all {
            if let Some(r) = d.reason() {
                assert_eq!(d.label(), r.as_str(), "{d:?}");
            }
            let expected = match d.status() {
                400 => "BAD_REQUEST",
                401 => "UNAUTHORIZED",
                403 => "FORBIDDEN",
                404 => "NOT_FOUND",
                405 => "METHOD_NOT_ALLOWED",
                408 => "REQUEST_TIMEOUT",
                429 => "TOO_MANY_REQUESTS",
                431 => "REQUEST_HEADER_FIELDS_TOO_LARGE",
                500 => "INTERNAL_ERROR",
                502 => "BAD_GATEWAY",
                504 => "GATEWAY_TIMEOUT",
                other => panic!("unexpected status {other}"),
            };
            assert_eq!(d.code(), expected, "{d:?}");
            let body: serde_json::Value = serde_json::from_slice(&d.body()).unwrap();
            assert_eq!(body["code"], d.code());
            assert_eq!(body["message"], &*d.message());
        }
        assert_eq!(
            &Denial::Internal.body()[..],
            br#"{"code":"INTERNAL_ERROR","message":"Internal gateway error"}"#
        );
    }

    #[test]
    fn www_authenticate_on_401_and_scope() {
        assert_eq!(Denial::InvalidKey.www_authenticate(), Some("Bearer"));
        assert_eq!(
            Denial::Expired { ago: 1 }.www_authenticate(),
            Some("Bearer")
        );
        assert_eq!(
            Denial::MissingScope(Scope::Write).www_authenticate(),
            Some(r#"Bearer error="insufficient_scope", scope="write:all""#)
        );
        assert_eq!(Denial::Revoked { ago: 1 }.www_authenticate(), None);
    }
}
