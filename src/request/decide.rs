//! The whole auth decision (contract §4 rows 1-12) as one pure function:
//! plain request data, the loaded [`Policy`] and the current time in, `Allow`
//! or a [`Denial`] out. No I/O, no Pingora types, no allocation on the allowed
//! path: the key digest is on the stack and everything returned is borrowed.

use crate::config::{AuthMode, PlainHttp};
use crate::gateway::policy::Policy;
use crate::model::denial::Denial;
use crate::model::key::{BearerError, KeyDigest, KeyType, bearer_token};
use crate::model::pattern::{SplitPath, check_path};
use crate::snapshot::KeyRecord;
use std::borrow::Cow;
use std::sync::Arc;

/// The `Authorization` headers of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authorization<'a> {
    /// None sent.
    Absent,
    /// Exactly one, raw bytes (may be non-UTF-8).
    One(&'a [u8]),
    /// Two or more.
    Many,
}

/// The plain data of a request the decision needs.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Method.
    pub method: &'a http::Method,
    /// Path, without the query string, still percent-encoded.
    pub path: &'a str,
    /// Authorization headers.
    pub authorization: Authorization<'a>,
    /// Whether the client connection is TLS.
    pub tls: bool,
}

/// A request that may pass.
#[derive(Debug, Clone, PartialEq)]
pub struct Allow<'a> {
    /// Index of the matched route.
    pub route: usize,
    /// The key and its slot, unless the route is `auth = "none"`.
    pub key: Option<(usize, &'a KeyRecord)>,
    /// The workspace to tell the upstream: the key's own, or the `{workspace}`
    /// a company key reached.
    pub workspace: Option<Cow<'a, str>>,
}

/// The outcome of [`decide`].
#[derive(Debug, Clone, PartialEq)]
pub enum Decision<'a> {
    /// Proxy it.
    Allow(Allow<'a>),
    /// Answer with the denial; `route` is the matched route's index, if any.
    Deny {
        /// Matched route, for metrics.
        route: Option<usize>,
        /// Why.
        denial: Denial,
    },
}

/// Decides one request at wall-clock second `now`.
pub fn decide<'a>(req: &Request<'a>, policy: &'a Policy, now: i64) -> Decision<'a> {
    let deny = |route, denial| Decision::Deny { route, denial };
    // Row 1.
    if check_path(req.path).is_err() {
        return deny(None, Denial::BadPath);
    }
    // Row 2.
    let Some((idx, route, bound)) = SplitPath::new(req.path).and_then(|split| {
        policy
            .routes
            .iter()
            .enumerate()
            .find_map(|(i, r)| r.pattern.matches_split(&split).map(|m| (i, r, m.workspace)))
    }) else {
        return deny(
            None,
            Denial::NoRoute {
                method: req.method.clone(),
                path: req.path.into(),
            },
        );
    };
    let route_id = Some(idx);
    // Row 3.
    if let Some(methods) = &route.methods
        && !methods.contains(req.method)
    {
        return deny(
            route_id,
            Denial::MethodNotAllowed {
                method: req.method.clone(),
                allowed: Arc::clone(&route.allow),
            },
        );
    }
    // Row 4.
    if policy.plain_http == PlainHttp::Reject && !req.tls {
        return deny(route_id, Denial::HttpsRequired);
    }
    if route.auth == AuthMode::None {
        return Decision::Allow(Allow {
            route: idx,
            key: None,
            workspace: None,
        });
    }
    // Rows 5-6.
    let header_values = match req.authorization {
        Authorization::Absent => None,
        Authorization::One(v) => Some(v),
        Authorization::Many => return deny(route_id, Denial::InvalidKey),
    };
    let token = match bearer_token(header_values.into_iter()) {
        Ok(t) => t,
        Err(BearerError::Missing) => return deny(route_id, Denial::MissingToken),
        Err(BearerError::Ambiguous) => return deny(route_id, Denial::InvalidKey),
    };
    let Some(claimed) = policy.prefixes.classify(token) else {
        return deny(route_id, Denial::InvalidKey);
    };
    let Some((slot, key)) = policy.keys.lookup(&KeyDigest::of(token)) else {
        return deny(route_id, Denial::InvalidKey);
    };
    if key.key_type != claimed {
        return deny(route_id, Denial::InvalidKey);
    }
    // Row 7.
    if let Some(t) = key.expires_at.filter(|_| key.is_expired_at(now)) {
        return deny(
            route_id,
            Denial::Expired {
                ago: now.abs_diff(t),
            },
        );
    }
    // Row 8.
    if let Some(t) = key.revoked_at.filter(|_| key.is_revoked_at(now)) {
        return deny(
            route_id,
            Denial::Revoked {
                ago: now.abs_diff(t),
            },
        );
    }
    // Rows 9-10.
    match (route.auth, key.key_type) {
        (AuthMode::Company, KeyType::Workspace) => return deny(route_id, Denial::NeedsCompanyKey),
        (AuthMode::Workspace, KeyType::Company) => {
            return deny(route_id, Denial::NeedsWorkspaceKey);
        }
        _ => {}
    }
    // Row 11.
    let workspace = match bound {
        Some(ws) => {
            let reachable = match key.key_type {
                KeyType::Workspace => key.workspace.as_deref() == Some(&*ws),
                KeyType::Company => policy
                    .keys
                    .workspace_company(&ws)
                    .is_some_and(|owner| *owner == key.company),
            };
            if !reachable {
                return deny(
                    route_id,
                    Denial::Workspace {
                        workspace: ws.into_owned().into_boxed_str(),
                    },
                );
            }
            Some(ws)
        }
        None => key.workspace.as_deref().map(Cow::Borrowed),
    };
    // Row 12.
    if let Some(required) = route.scope.required(req.method)
        && !key.scopes.grants(required)
    {
        return deny(route_id, Denial::MissingScope(required));
    }
    Decision::Allow(Allow {
        route: idx,
        key: Some((slot, key)),
        workspace,
    })
}

#[cfg(test)]
mod tests;
