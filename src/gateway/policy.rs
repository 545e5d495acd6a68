//! What the decision reads: the routes compiled from the config, the key
//! index, the prefixes and the plain-HTTP rule, built whole by one load.

use crate::config::{AuthMode, Config, Enforcement, PlainHttp};
use crate::model::key::Prefixes;
use crate::model::pattern::Pattern;
use crate::model::scope::ScopeRule;
use crate::snapshot::KeyIndex;
use std::sync::Arc;

/// A compiled route.
#[derive(Debug, Clone)]
pub struct Route {
    /// Unique name (metrics `route` label).
    pub name: Arc<str>,
    /// Path pattern.
    pub pattern: Pattern,
    /// Index of its upstream in the gateway's pools.
    pub upstream: usize,
    /// Key types accepted.
    pub auth: AuthMode,
    /// Scope required.
    pub scope: ScopeRule,
    /// Allowed methods; `None` allows all.
    pub methods: Option<Box<[http::Method]>>,
    /// `Allow` header value for 405s.
    pub allow: Arc<str>,
    /// Whether failed checks answer or are told to the upstream.
    pub enforce: Enforcement,
}

impl Route {
    /// Compiles the config's routes, in file order.
    pub fn compile(config: &Config) -> Vec<Route> {
        config
            .routes
            .iter()
            .map(|r| Route {
                name: r.name.as_str().into(),
                pattern: r.pattern.clone(),
                upstream: r.upstream,
                auth: r.auth,
                scope: r.scope,
                methods: r.methods.clone().map(Vec::into_boxed_slice),
                allow: r
                    .methods
                    .as_ref()
                    .map(|m| m.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(", "))
                    .unwrap_or_default()
                    .into(),
                enforce: r.enforce,
            })
            .collect()
    }
}

/// Everything the decision reads, built whole by one reload.
#[derive(Debug)]
pub struct Policy {
    /// Routes in file order.
    pub routes: Vec<Route>,
    /// The key snapshot.
    pub keys: KeyIndex,
    /// Key prefixes.
    pub prefixes: Prefixes,
    /// Whether plain HTTP is refused.
    pub plain_http: PlainHttp,
    /// Whether some literal has an upper-case letter: then even a plain
    /// path is matched loosely against the routes before its own.
    pub upper_case_literals: bool,
}

impl Policy {
    /// The policy of `config` over `keys`: the one builder of a policy, for
    /// the gateway and for tests alike.
    pub fn compile(config: &Config, keys: KeyIndex) -> Policy {
        let routes = Route::compile(config);
        Policy {
            upper_case_literals: routes.iter().any(|r| r.pattern.has_upper_case()),
            routes,
            keys,
            prefixes: config.keys.prefixes.clone(),
            plain_http: config
                .server
                .tls
                .as_ref()
                .map_or(PlainHttp::Allow, |t| t.plain_http),
        }
    }
}
