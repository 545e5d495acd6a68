//! What a config may say that loads but is almost certainly a mistake: routes
//! that can never be reached, a keyless route swallowing keyed ones, an
//! upstream that is keygate itself, an open admin listener. `keygate check`
//! prints each as a `warning:` line and start-up logs it; neither refuses
//! the config (an operator may mean it), and the exit code is unchanged.

use super::{AuthMode, Config};
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    /// Two routes with the same pattern: the second is never used.
    DuplicatePattern {
        /// The earlier route.
        first: String,
        /// The unreachable one.
        second: String,
        /// Their pattern.
        pattern: String,
    },
    /// An earlier route's pattern covers every path of a later one.
    Unreachable {
        /// The earlier route.
        earlier: String,
        /// Its pattern.
        earlier_pattern: String,
        /// The unreachable one.
        route: String,
        /// Its pattern.
        pattern: String,
    },
    /// A keyless route ahead of a keyed one that it covers: the keyed route's
    /// paths are proxied with no key check.
    KeylessCoversKeyed {
        /// The `auth = "none"` route.
        keyless: String,
        /// Its pattern.
        keyless_pattern: String,
        /// The keyed route it swallows.
        keyed: String,
    },
    /// An upstream server is one of keygate's own listeners.
    UpstreamIsSelf {
        /// Upstream name.
        upstream: String,
        /// The server as written.
        server: String,
        /// `admin.listen` or `server.listen`.
        listener: &'static str,
    },
    /// The admin listener is reachable beyond loopback with no token.
    OpenAdmin {
        /// The address.
        listen: SocketAddr,
    },
    /// `[cluster] redis` is a `rediss://` URL ending in `#insecure`: the
    /// server's certificate is not checked.
    InsecureRedis,
    /// `plain_http = "reject"` with no TLS listener: every request is 403.
    RejectWithoutTls,
    /// A route in shadow mode (CONTRACT §8).
    Shadow {
        /// Route name.
        route: String,
    },
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::DuplicatePattern {
                first,
                second,
                pattern,
            } => write!(
                f,
                "route {second} has the same path {pattern:?} as the earlier route {first}, so it never matches"
            ),
            Warning::Unreachable {
                earlier,
                earlier_pattern,
                route,
                pattern,
            } => write!(
                f,
                "route {route} ({pattern:?}) can never match: the earlier route {earlier} ({earlier_pattern:?}) covers every path it does; move it above"
            ),
            Warning::KeylessCoversKeyed {
                keyless,
                keyless_pattern,
                keyed,
            } => write!(
                f,
                "route {keyless} (auth = \"none\", {keyless_pattern:?}) comes before the keyed route {keyed} and covers it: those requests are proxied without any key check"
            ),
            Warning::UpstreamIsSelf {
                upstream,
                server,
                listener,
            } => write!(
                f,
                "upstream {upstream} server {server} is keygate's own {listener}: requests would be proxied to keygate itself{}",
                if *listener == "admin.listen" {
                    " (GET /keys through the proxy lists the keys)"
                } else {
                    ""
                }
            ),
            Warning::Shadow { route } => write!(
                f,
                "route {route} is in shadow mode: denials are logged, not enforced"
            ),
            Warning::RejectWithoutTls => write!(
                f,
                "server.tls.plain_http = \"reject\" with no TLS listener: every request gets 403 HTTPS is required; set server.tls.listen"
            ),
            Warning::InsecureRedis => write!(
                f,
                "cluster.redis ends in #insecure: the Redis server's certificate is not checked, so anyone on the path can read or change the fleet's buckets"
            ),
            Warning::OpenAdmin { listen } => write!(
                f,
                "admin listener {listen} is not on loopback and has no token_hash: whoever reaches it can list keys and reload; set [admin] token_hash or listen on 127.0.0.1"
            ),
        }
    }
}

/// Every warning about `config`, in file order.
pub fn warnings(config: &Config) -> Vec<Warning> {
    let mut out: Vec<Warning> = config
        .routes
        .iter()
        .filter(|r| r.enforce == super::Enforcement::Shadow)
        .map(|r| Warning::Shadow {
            route: r.name.clone(),
        })
        .collect();
    for (i, later) in config.routes.iter().enumerate() {
        // The first earlier route that covers it is the one that answers.
        let Some(earlier) = config.routes[..i]
            .iter()
            .find(|e| e.pattern.covers(&later.pattern))
        else {
            continue;
        };
        out.push(if earlier.pattern == later.pattern {
            Warning::DuplicatePattern {
                first: earlier.name.clone(),
                second: later.name.clone(),
                pattern: later.pattern.as_str().to_string(),
            }
        } else if earlier.auth == AuthMode::None && later.auth != AuthMode::None {
            Warning::KeylessCoversKeyed {
                keyless: earlier.name.clone(),
                keyless_pattern: earlier.pattern.as_str().to_string(),
                keyed: later.name.clone(),
            }
        } else {
            Warning::Unreachable {
                earlier: earlier.name.clone(),
                earlier_pattern: earlier.pattern.as_str().to_string(),
                route: later.name.clone(),
                pattern: later.pattern.as_str().to_string(),
            }
        });
    }
    let own = std::iter::once((config.admin.listen, "admin.listen"))
        .chain(config.server.listen.iter().map(|a| (*a, "server.listen")))
        .chain(
            config
                .server
                .tls
                .iter()
                .flat_map(|t| t.listen.iter().map(|a| (*a, "server.tls.listen"))),
        )
        .collect::<Vec<_>>();
    for upstream in &config.upstreams {
        for server in &upstream.servers {
            if let Some(listener) = own
                .iter()
                .find(|(l, _)| server_addrs(server).any(|s| same_listener(*l, s)))
                .map(|(_, what)| *what)
            {
                out.push(Warning::UpstreamIsSelf {
                    upstream: upstream.name.clone(),
                    server: server.clone(),
                    listener,
                });
            }
        }
    }
    if config.admin.token_hash.is_none() && !config.admin.listen.ip().is_loopback() {
        out.push(Warning::OpenAdmin {
            listen: config.admin.listen,
        });
    }
    if config
        .cluster
        .as_ref()
        .is_some_and(|c| c.redis.is_insecure())
    {
        out.push(Warning::InsecureRedis);
    }
    if config
        .server
        .tls
        .as_ref()
        .is_some_and(|t| t.listen.is_empty() && t.plain_http == super::PlainHttp::Reject)
    {
        out.push(Warning::RejectWithoutTls);
    }
    out
}

/// Logs each warning about a config that was just loaded (start-up and
/// every reload).
pub fn log(config: &Config) {
    for w in warnings(config) {
        tracing::warn!("warning: {w}");
    }
}

/// The addresses an upstream server names, numeric ones without a lookup
/// and `localhost` as loopback; other names are not resolved here (a check
/// must not depend on DNS).
fn server_addrs(server: &str) -> impl Iterator<Item = SocketAddr> {
    let direct: Option<SocketAddr> = server.parse().ok();
    let local = server
        .strip_prefix("localhost:")
        .and_then(|p| p.parse::<u16>().ok())
        .map(|port| {
            ("127.0.0.1", port)
                .to_socket_addrs()
                .into_iter()
                .flatten()
                .chain(std::iter::once(SocketAddr::from((
                    std::net::Ipv6Addr::LOCALHOST,
                    port,
                ))))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    direct.into_iter().chain(local)
}

/// Whether connecting to `server` reaches a socket listening on `listen`.
fn same_listener(listen: SocketAddr, server: SocketAddr) -> bool {
    if listen.port() != server.port() {
        return false;
    }
    let (l, s) = (listen.ip(), server.ip());
    l == s || (l.is_unspecified() && (s.is_loopback() || s.is_unspecified()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(admin: &str, extra_upstream_server: &str, routes: &str) -> Config {
        let text = format!(
            r#"
[server]
listen = ["127.0.0.1:8080"]
[admin]
listen = "{admin}"
[keys]
snapshot = "keys.toml"
[rate_limit]
requests = 10
per_secs = 60
[[upstreams]]
name = "api"
servers = ["127.0.0.1:9000"{extra_upstream_server}]
{routes}
"#
        );
        Config::parse(Path::new("/etc/keygate/keygate.toml"), &text).unwrap()
    }

    fn route(name: &str, path: &str, auth: &str) -> String {
        format!(
            "[[routes]]\nname = \"{name}\"\npath = \"{path}\"\nupstream = \"api\"\nauth = \"{auth}\"\nscope = \"none\"\n"
        )
    }

    fn texts(c: &Config) -> Vec<String> {
        warnings(c).iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_clean_config_has_no_warning() {
        let routes = [
            route("health", "/healthz", "none"),
            route("keys", "/company/keys/**", "company"),
            route("company", "/company/**", "company"),
        ]
        .concat();
        assert_eq!(
            texts(&config("127.0.0.1:9091", "", &routes)),
            Vec::<String>::new()
        );
    }

    #[test]
    fn routes_behind_earlier_ones_are_named() {
        let routes = [
            route("company", "/company/**", "company"),
            route("keys", "/company/keys/**", "company"),
            route("again", "/company/**", "any"),
            route("public", "/**", "none"),
            route("late", "/late", "none"),
        ]
        .concat();
        assert_eq!(
            texts(&config("127.0.0.1:9091", "", &routes)),
            [
                "route keys (\"/company/keys/**\") can never match: the earlier route company (\"/company/**\") covers every path it does; move it above",
                "route again has the same path \"/company/**\" as the earlier route company, so it never matches",
            ]
            .iter()
            .map(ToString::to_string)
            .chain(std::iter::once(
                "route late (\"/late\") can never match: the earlier route public (\"/**\") covers every path it does; move it above".to_string()
            ))
            .collect::<Vec<_>>()
        );
    }

    #[test]
    fn an_insecure_rediss_url_is_named_and_a_checked_one_is_not() {
        let cluster = |url: &str| {
            route("company", "/company/**", "company")
                + &format!("[cluster]\nredis = \"{url}\"\nnamespace = \"kg\"\n")
        };
        let insecure = texts(&config(
            "127.0.0.1:9091",
            "",
            &cluster("rediss://:pw@redis.internal:6380/0#insecure"),
        ));
        assert_eq!(insecure.len(), 1, "{insecure:?}");
        assert!(insecure[0].starts_with("cluster.redis ends in #insecure"));
        assert!(!insecure[0].contains("pw"), "{insecure:?}");
        for url in ["rediss://redis.internal:6380/0", "redis://127.0.0.1:6379/0"] {
            assert_eq!(
                texts(&config("127.0.0.1:9091", "", &cluster(url))),
                Vec::<String>::new(),
                "{url}"
            );
        }
    }

    #[test]
    fn each_shadow_route_is_named() {
        let routes = [
            route("company", "/company/**", "company") + "enforce = \"shadow\"\n",
            route("other", "/other/**", "any"),
        ]
        .concat();
        assert_eq!(
            texts(&config("127.0.0.1:9091", "", &routes)),
            ["route company is in shadow mode: denials are logged, not enforced"]
        );
    }

    #[test]
    fn a_keyless_catch_all_ahead_of_keyed_routes_is_named() {
        let routes = [
            route("public", "/**", "none"),
            route("company", "/company/**", "company"),
        ]
        .concat();
        assert_eq!(
            texts(&config("127.0.0.1:9091", "", &routes)),
            [
                "route public (auth = \"none\", \"/**\") comes before the keyed route company and covers it: those requests are proxied without any key check"
            ]
        );
    }

    #[test]
    fn upstreams_pointing_at_keygate_itself_are_named() {
        let routes = route("company", "/company/**", "company");
        let w = texts(&config(
            "0.0.0.0:9091",
            r#", "127.0.0.1:9091", "localhost:8080""#,
            &routes,
        ));
        assert_eq!(
            w[..2],
            [
                "upstream api server 127.0.0.1:9091 is keygate's own admin.listen: requests would be proxied to keygate itself (GET /keys through the proxy lists the keys)",
                "upstream api server localhost:8080 is keygate's own server.listen: requests would be proxied to keygate itself",
            ]
        );
        assert!(
            w[2].starts_with(
                "admin listener 0.0.0.0:9091 is not on loopback and has no token_hash"
            ),
            "{w:?}"
        );
        assert_eq!(w.len(), 3);
    }

    #[test]
    fn rejecting_plain_http_without_a_tls_listener_is_told() {
        let routes = route("company", "/company/**", "company");
        let mut c = config("127.0.0.1:9091", "", &routes);
        let tls = |listen: Vec<SocketAddr>| super::super::TlsConfig {
            listen,
            cert: "c.pem".into(),
            key: "k.pem".into(),
            plain_http: super::super::PlainHttp::Reject,
        };
        c.server.tls = Some(tls(vec![]));
        assert_eq!(
            texts(&c),
            [
                "server.tls.plain_http = \"reject\" with no TLS listener: every request gets 403 HTTPS is required; set server.tls.listen"
            ]
        );
        c.server.tls = Some(tls(vec!["127.0.0.1:8443".parse().unwrap()]));
        assert_eq!(texts(&c), Vec::<String>::new());
    }

    #[test]
    fn an_open_admin_listener_needs_a_token() {
        let routes = route("company", "/company/**", "company");
        assert_eq!(
            texts(&config("0.0.0.0:9091", "", &routes)),
            [
                "admin listener 0.0.0.0:9091 is not on loopback and has no token_hash: whoever reaches it can list keys and reload; set [admin] token_hash or listen on 127.0.0.1"
            ]
        );
        let mut c = config("0.0.0.0:9091", "", &routes);
        c.admin.token_hash = Some(crate::model::key::KeyDigest::of(b"admin token"));
        assert_eq!(texts(&c), Vec::<String>::new());
        assert_eq!(
            texts(&config("[::1]:9091", "", &routes)),
            Vec::<String>::new()
        );
    }
}
