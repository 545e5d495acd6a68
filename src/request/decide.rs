//! The whole auth decision (contract §4 rows 1-12) as one pure function:
//! plain request data, the loaded [`Policy`] and the current time in, `Allow`
//! or a [`Denial`] out. No I/O, no Pingora types, no allocation on the allowed
//! path: the key digest is on the stack and everything returned is borrowed.
//!
//! Shadow routes (CONTRACT §8) are a property of the outcome, not a second
//! path: every check runs the same; on a route with `enforce = "shadow"` a
//! failure of rows 4-12 becomes an `Allow` carrying the reason (and the key,
//! when one authenticated), which the upstream is told instead of the
//! client. [`rate_limited`] does the same for row 13.

use crate::config::{AuthMode, Enforcement, PlainHttp};
use crate::gateway::policy::Policy;
use crate::gateway::policy::Route;
use crate::model::denial::Denial;
use crate::model::denial::ShadowReason;
use crate::model::key::{BearerError, KeyDigest, KeyType, bearer_token};
use crate::model::pattern::SplitPath;
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
    /// On a shadow route: the first check that failed.
    pub shadow: Option<ShadowReason>,
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
        /// The key, when it authenticated and a check after that failed
        /// (rows 9-12): the access log names it.
        key: Option<(usize, &'a KeyRecord)>,
        /// The key's workspace then, or the one a company key reached.
        workspace: Option<Cow<'a, str>>,
    },
}

/// Decides one request at wall-clock second `now`.
pub fn decide<'a>(req: &Request<'a>, policy: &'a Policy, now: i64) -> Decision<'a> {
    let deny = |route, denial| Decision::Deny {
        route,
        denial,
        key: None,
        workspace: None,
    };
    // Row 1.
    let Ok(split) = SplitPath::checked(req.path) else {
        return deny(None, Denial::BadPath);
    };
    // Row 2.
    let Some((idx, route, bound)) = policy
        .routes
        .iter()
        .enumerate()
        .find_map(|(i, r)| r.pattern.matches_split(&split).map(|m| (i, r, m.workspace)))
    else {
        return deny(
            None,
            Denial::NoRoute {
                method: req.method.clone(),
                path: req.path.into(),
            },
        );
    };
    // Row 1 again, for backends that read paths leniently: a path that an
    // earlier, stricter route matches when read so (`/keys;x`, `/Keys`,
    // `/keys.`) would reach that route's paths through a broader one.
    if idx > 0
        && (policy.upper_case_literals || !split.is_plain())
        && policy.routes[..idx]
            .iter()
            .any(|r| r.pattern.matches_loosely(&split))
    {
        return deny(None, Denial::BadPath);
    }
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
    // Row 4: on a shadow route the checks below still run (the key may still
    // authenticate), but this is the first failure and the one told.
    let https_required = policy.plain_http == PlainHttp::Reject && !req.tls;
    if https_required && route.enforce == Enforcement::On {
        return deny(route_id, Denial::HttpsRequired);
    }
    if route.auth == AuthMode::None {
        return Decision::Allow(Allow {
            route: idx,
            key: None,
            workspace: None,
            shadow: None,
        });
    }
    // A failed check of rows 5-12: answered, or told to the upstream on a
    // shadow route. `key` is the key when it authenticated (rows 9-12).
    let fail =
        |denial: Denial, key: Option<(usize, &'a KeyRecord)>, workspace: Option<Cow<'a, str>>| {
            let reason = if https_required {
                Some(crate::model::denial::DenialReason::HttpsRequired)
            } else {
                denial.reason()
            };
            match (route.enforce, reason) {
                (Enforcement::Shadow, Some(reason)) => Decision::Allow(Allow {
                    route: idx,
                    key,
                    workspace,
                    shadow: Some(ShadowReason::Check(reason)),
                }),
                _ => Decision::Deny {
                    route: route_id,
                    denial,
                    key,
                    workspace,
                },
            }
        };
    // Rows 5-6.
    let header_values = match req.authorization {
        Authorization::Absent => None,
        Authorization::One(v) => Some(v),
        Authorization::Many => return fail(Denial::InvalidKey, None, None),
    };
    let token = match bearer_token(header_values.into_iter()) {
        Ok(t) => t,
        Err(BearerError::Missing) => return fail(Denial::MissingToken, None, None),
        Err(BearerError::Ambiguous) => return fail(Denial::InvalidKey, None, None),
    };
    let Some(claimed) = policy.prefixes.classify(token) else {
        return fail(Denial::InvalidKey, None, None);
    };
    let Some((slot, key)) = policy.keys.lookup(&KeyDigest::of(token)) else {
        return fail(Denial::InvalidKey, None, None);
    };
    if key.key_type != claimed {
        return fail(Denial::InvalidKey, None, None);
    }
    // Row 7.
    if let Some(t) = key.expires_at.filter(|_| key.is_expired_at(now)) {
        let ago = now.abs_diff(t);
        return fail(Denial::Expired { ago }, None, None);
    }
    // Row 8.
    if let Some(t) = key.revoked_at.filter(|_| key.is_revoked_at(now)) {
        let ago = now.abs_diff(t);
        return fail(Denial::Revoked { ago }, None, None);
    }
    // From here the key has authenticated: a shadow failure still names it.
    let own = || key.workspace.as_deref().map(Cow::Borrowed);
    // Rows 9-10.
    match (route.auth, key.key_type) {
        (AuthMode::Company, KeyType::Workspace) => {
            return fail(Denial::NeedsCompanyKey, Some((slot, key)), own());
        }
        (AuthMode::Workspace, KeyType::Company) => {
            return fail(Denial::NeedsWorkspaceKey, Some((slot, key)), own());
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
                let workspace = ws.into_owned().into_boxed_str();
                return fail(Denial::Workspace { workspace }, Some((slot, key)), own());
            }
            Some(ws)
        }
        None => key.workspace.as_deref().map(Cow::Borrowed),
    };
    // Row 12.
    if let Some(required) = route.scope.required(req.method)
        && !key.scopes.grants(required)
    {
        return fail(Denial::MissingScope(required), Some((slot, key)), workspace);
    }
    if https_required {
        return fail(Denial::HttpsRequired, Some((slot, key)), workspace);
    }
    Decision::Allow(Allow {
        route: idx,
        key: Some((slot, key)),
        workspace,
        shadow: None,
    })
}

/// Row 13 once the limiter has answered: `None` to proxy (told to the
/// upstream as `rate_limited` on a shadow route), or the 429.
pub fn rate_limited(route: &Route, denial: Denial) -> Result<Option<ShadowReason>, Denial> {
    match route.enforce {
        Enforcement::Shadow => Ok(Some(ShadowReason::RateLimited)),
        Enforcement::On => Err(denial),
    }
}

#[cfg(test)]
mod tests;
