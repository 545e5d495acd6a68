//! The gateway config (`keygate.toml`): parsed with `deny_unknown_fields` into a
//! private serde mirror, then validated into [`Config`], reporting every problem
//! at once with file and line. Paths inside are relative to the config's folder.

use crate::model::key::{DEFAULT_COMPANY_PREFIX, DEFAULT_WORKSPACE_PREFIX, KeyDigest, Prefixes};
use crate::model::limit::Limit;
use crate::model::pattern::Pattern;
use crate::model::problem::{Problem, Problems, line_of};
use crate::model::scope::ScopeRule;
use crate::model::unknown_fields;
use std::borrow::Cow;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A validated gateway config.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    /// `[server]`
    pub server: ServerConfig,
    /// `[admin]`
    pub admin: AdminConfig,
    /// `[keys]`
    pub keys: KeysConfig,
    /// `[rate_limit]`
    pub rate_limit: RateLimitConfig,
    /// `[upstream_headers]`
    pub upstream_headers: UpstreamHeaders,
    /// `[[upstreams]]`, in file order.
    pub upstreams: Vec<UpstreamConfig>,
    /// The line of each `[[upstreams]]` entry, for problems found later
    /// (name resolution, CA files) to name it.
    pub upstream_lines: Vec<Option<usize>>,
    /// The line of `[server.tls]`, for problems with its files found later.
    pub tls_line: Option<usize>,
    /// `[[routes]]`, in file order (first match wins).
    pub routes: Vec<RouteConfig>,
    /// `[cluster]`: shared limits on Redis; `None`, each instance on its own.
    pub cluster: Option<ClusterConfig>,
}

/// `[cluster]` (CONTRACT §7): every key's bucket shared through Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Where Redis is; its password never leaves this value.
    pub redis: RedisUrl,
    /// Prefix of every Redis key: same Redis and namespace, one fleet.
    pub namespace: String,
    /// How often an instance reports its consumption and reads the fleet's.
    pub sync: Duration,
    /// A Redis round trip slower than this is a failure.
    pub timeout: Duration,
    /// What the limiter does while Redis cannot be reached.
    pub on_unavailable: OnUnavailable,
}

/// A validated `redis://` or `rediss://` URL. It may hold a password, so its
/// `Debug` and [`RedisUrl::redacted`] never show it; only the connection
/// code reads [`RedisUrl::secret`].
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(String);

impl RedisUrl {
    /// The URL as written, password included: for connecting only.
    pub fn secret(&self) -> &str {
        &self.0
    }

    /// A `rediss://` URL ending in `#insecure`: TLS without certificate checks.
    pub fn is_insecure(&self) -> bool {
        self.0.ends_with("#insecure")
    }

    /// The URL with any user and password replaced by `***`.
    pub fn redacted(&self) -> String {
        match url::Url::parse(&self.0) {
            Ok(mut u) => {
                if !u.username().is_empty() || u.password().is_some() {
                    let _ = u.set_username("");
                    let _ = u.set_password(None);
                    let text = u.to_string();
                    // `scheme://host…` → `scheme://***@host…`
                    return match text.split_once("://") {
                        Some((scheme, rest)) => format!("{scheme}://***@{rest}"),
                        None => text,
                    };
                }
                u.to_string()
            }
            Err(_) => "<invalid url>".into(),
        }
    }
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RedisUrl({})", self.redacted())
    }
}

/// `on_unavailable`: the limiter while the instance is degraded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnUnavailable {
    /// Enforce this instance's share of each limit (the fleet divided by the
    /// instances last seen).
    #[default]
    LocalShare,
    /// Enforce the whole limit on this instance alone.
    LocalFull,
    /// Admit without a limit.
    Allow,
    /// Answer 503 on keyed routes.
    Deny,
}

impl OnUnavailable {
    fn parse(word: &str) -> Option<Self> {
        match word {
            "local_share" => Some(OnUnavailable::LocalShare),
            "local_full" => Some(OnUnavailable::LocalFull),
            "allow" => Some(OnUnavailable::Allow),
            "deny" => Some(OnUnavailable::Deny),
            _ => None,
        }
    }

    /// The config word.
    pub fn as_str(self) -> &'static str {
        match self {
            OnUnavailable::LocalShare => "local_share",
            OnUnavailable::LocalFull => "local_full",
            OnUnavailable::Allow => "allow",
            OnUnavailable::Deny => "deny",
        }
    }
}

/// `[server]`: listeners and process settings (changes need a restart).
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Plain HTTP listeners.
    pub listen: Vec<SocketAddr>,
    /// Worker threads.
    pub threads: usize,
    /// How long SIGTERM lets in-flight requests finish.
    pub grace_period: Duration,
    /// Largest request head (request line and headers) accepted, in bytes.
    pub max_header_bytes: usize,
    /// Most header fields accepted in one request.
    pub max_headers: usize,
    /// Longest a client may take to send a whole request head, counted from
    /// the connection's accept (first request) or the request's first byte.
    pub header_timeout: Duration,
    /// Longest wait for the next piece of a request body.
    pub body_timeout: Duration,
    /// Longest a response write may wait for the client to read (nginx's
    /// `send_timeout`): a client that stops reading is cut off after it.
    pub send_timeout: Duration,
    /// How long an idle keep-alive connection is kept; `None`: one request
    /// per connection.
    pub keepalive_timeout: Option<Duration>,
    /// Where `keygate run --upgrade` waits for the listening sockets.
    pub upgrade_sock: PathBuf,
    /// `[server.tls]`
    pub tls: Option<TlsConfig>,
}

/// `[server.tls]`
#[derive(Debug, Clone, PartialEq)]
pub struct TlsConfig {
    /// TLS listeners.
    pub listen: Vec<SocketAddr>,
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// What plain HTTP listeners do.
    pub plain_http: PlainHttp,
}

/// `plain_http = "allow" | "reject"`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlainHttp {
    /// Plain HTTP is served like HTTPS.
    Allow,
    /// Plain HTTP gets 403 `HTTPS is required`.
    Reject,
}

/// `[admin]`
#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    /// Where `/metrics`, `/healthz`, `/readyz`, `/keys` and `/reload` answer.
    pub listen: SocketAddr,
    /// When set, `/keys` and `/reload` need this bearer token.
    pub token_hash: Option<KeyDigest>,
}

/// `[keys]`
#[derive(Debug, Clone, PartialEq)]
pub struct KeysConfig {
    /// The key snapshot (`.toml` or `.json`).
    pub snapshot: PathBuf,
    /// Key prefixes.
    pub prefixes: Prefixes,
    /// When non-zero, reload when the config's or snapshot's content changes.
    pub watch: Option<Duration>,
}

/// `[rate_limit]`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Limit for keys without their own.
    pub default: Limit,
    /// Most buckets kept at once.
    pub max_buckets: usize,
}

/// `[upstream_headers]`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamHeaders {
    /// Send the client's `Authorization` upstream.
    pub forward_authorization: bool,
}

/// One `[[upstreams]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UpstreamConfig {
    /// Unique name, used in routes, messages and metrics.
    pub name: String,
    /// `host:port` of each server.
    pub servers: Vec<String>,
    /// Speak TLS to the servers.
    pub tls: bool,
    /// SNI and certificate name for TLS (defaults to the server's host).
    pub sni: Option<String>,
    /// Verify the upstream certificate (TLS only).
    pub verify_cert: bool,
    /// CA bundle (PEM) trusted for this upstream's TLS instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Time allowed between reads of the upstream response.
    pub read_timeout: Duration,
    /// Active health check.
    pub health_check: Option<HealthCheckConfig>,
}

/// `health_check = { path, interval_secs }`
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HealthCheckConfig {
    /// Path probed with GET; a 2xx answer is healthy.
    pub path: String,
    /// Seconds between probes.
    pub interval: Duration,
}

/// Whether a route's checks answer (`on`) or are only told to the upstream
/// (`shadow`, CONTRACT §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Enforcement {
    /// A failed check is answered.
    #[default]
    On,
    /// A failed check of rows 4-13 is proxied with `x-keygate-shadow`.
    Shadow,
}

impl Enforcement {
    fn parse(word: &str) -> Option<Self> {
        match word {
            "on" => Some(Enforcement::On),
            "shadow" => Some(Enforcement::Shadow),
            _ => None,
        }
    }

    /// The config word.
    pub fn as_str(self) -> &'static str {
        match self {
            Enforcement::On => "on",
            Enforcement::Shadow => "shadow",
        }
    }
}

/// Which key types a route accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Company keys only.
    Company,
    /// Workspace keys only.
    Workspace,
    /// Either kind.
    Any,
    /// No key check at all.
    None,
}

impl AuthMode {
    fn parse(word: &str) -> Option<Self> {
        match word {
            "company" => Some(AuthMode::Company),
            "workspace" => Some(AuthMode::Workspace),
            "any" => Some(AuthMode::Any),
            "none" => Some(AuthMode::None),
            _ => None,
        }
    }

    /// The config word.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::Company => "company",
            AuthMode::Workspace => "workspace",
            AuthMode::Any => "any",
            AuthMode::None => "none",
        }
    }
}

/// One `[[routes]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    /// Unique name; the `route` label.
    pub name: String,
    /// Compiled path pattern.
    pub pattern: Pattern,
    /// Index into [`Config::upstreams`].
    pub upstream: usize,
    /// Key types accepted.
    pub auth: AuthMode,
    /// Scope required.
    pub scope: ScopeRule,
    /// Methods allowed; `None` allows all.
    pub methods: Option<Vec<http::Method>>,
    /// Whether its checks answer or are only told to the upstream.
    pub enforce: Enforcement,
}

pub mod warnings;

mod raw {
    //! The serde mirror of the file. Never leaves this module.
    use serde::Deserialize;
    use toml::Spanned;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Config {
        pub server: Spanned<Server>,
        pub admin: Option<Spanned<Admin>>,
        pub keys: Option<Spanned<Keys>>,
        pub rate_limit: Option<Spanned<RateLimit>>,
        pub upstream_headers: Option<UpstreamHeaders>,
        #[serde(default)]
        pub upstreams: Vec<Spanned<Upstream>>,
        #[serde(default)]
        pub routes: Vec<Spanned<Route>>,
        pub cluster: Option<Spanned<Cluster>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Cluster {
        pub redis: Option<Spanned<String>>,
        pub namespace: Option<Spanned<String>>,
        pub sync_ms: Option<Spanned<i64>>,
        pub timeout_ms: Option<Spanned<i64>>,
        pub on_unavailable: Option<Spanned<String>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Server {
        #[serde(default)]
        pub listen: Vec<String>,
        pub threads: Option<i64>,
        pub grace_period_secs: Option<i64>,
        pub max_header_bytes: Option<i64>,
        pub max_headers: Option<i64>,
        pub header_timeout_ms: Option<i64>,
        pub body_timeout_ms: Option<i64>,
        pub send_timeout_ms: Option<i64>,
        pub keepalive_timeout_secs: Option<i64>,
        pub upgrade_sock: Option<String>,
        pub tls: Option<Spanned<Tls>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Tls {
        #[serde(default)]
        pub listen: Vec<String>,
        pub cert: String,
        pub key: String,
        pub plain_http: Option<String>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Admin {
        pub listen: Option<String>,
        pub token_hash: Option<String>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Keys {
        pub snapshot: Option<String>,
        pub company_prefix: Option<String>,
        pub workspace_prefix: Option<String>,
        pub watch_secs: Option<i64>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct RateLimit {
        pub requests: i64,
        pub per_secs: i64,
        pub burst: Option<i64>,
        pub max_buckets: Option<i64>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct UpstreamHeaders {
        pub forward_authorization: Option<bool>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Upstream {
        pub name: String,
        pub servers: Vec<String>,
        pub tls: Option<bool>,
        pub sni: Option<String>,
        pub verify_cert: Option<bool>,
        pub ca_file: Option<String>,
        pub connect_timeout_ms: Option<i64>,
        pub read_timeout_ms: Option<i64>,
        pub health_check: Option<HealthCheck>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct HealthCheck {
        pub path: String,
        pub interval_secs: Option<i64>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Route {
        pub name: String,
        pub path: String,
        pub upstream: String,
        pub auth: String,
        pub scope: Option<String>,
        pub methods: Option<Vec<String>>,
        pub enforce: Option<String>,
    }
}

/// Default config path, relative to the working directory.
pub const DEFAULT_PATH: &str = "config/keygate.toml";

/// Where `keygate run --upgrade` waits for the sockets when `[server]
/// upgrade_sock` is not set.
pub const DEFAULT_UPGRADE_SOCK: &str = "/tmp/keygate-upgrade.sock";

/// Whether two listeners cannot both be bound: the same port (not 0) on the same
/// address, or on the any-address of the family (or `[::]`, which takes
/// IPv4 too unless the host is set to IPv6 only).
fn bind_clash(a: SocketAddr, b: SocketAddr) -> bool {
    // Port 0 takes a free port each time: never the same one twice.
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip()
            || match (a, b) {
                (SocketAddr::V4(x), SocketAddr::V4(y)) => {
                    x.ip().is_unspecified() || y.ip().is_unspecified()
                }
                (SocketAddr::V6(x), SocketAddr::V6(y)) => {
                    x.ip().is_unspecified() || y.ip().is_unspecified()
                }
                (SocketAddr::V6(v6), SocketAddr::V4(_))
                | (SocketAddr::V4(_), SocketAddr::V6(v6)) => v6.ip().is_unspecified(),
            })
}

/// Where the admin listener is when `[admin] listen` is not set.
pub const DEFAULT_ADMIN: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    9091,
));

/// The text of a file keygate loads, or the problem that names it
/// (`what`: "config" or "key snapshot").
pub fn read_text(path: &Path, what: &str) -> Result<String, Problems> {
    std::fs::read_to_string(path).map_err(|e| {
        Problems(vec![Problem::at_line(
            path,
            None,
            format!("cannot read {what}: {e}"),
        )])
    })
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, Problems> {
        Config::parse(path, &read_text(path, "config")?)
    }

    /// Validates config text as if read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Config, Problems> {
        Config::parse_naming_snapshot(path, text).map_err(|(problems, _)| problems)
    }

    /// [`Config::parse`]; a refusal also gives the key snapshot the text
    /// names, when it is still TOML of the config's shape once the fields
    /// serde refuses are left out: where a config is refused, its
    /// snapshot's problems are reported beside its own.
    pub fn parse_naming_snapshot(
        path: &Path,
        text: &str,
    ) -> Result<Config, (Problems, Option<PathBuf>)> {
        let (mut problems, raw) = raw_config(path, text);
        let Some((raw, text)) = raw else {
            return Err((Problems(problems), None));
        };
        let named = raw.keys.as_ref().and_then(|k| k.get_ref().snapshot.clone());
        let snapshot = || Some(snapshot_file(dir_of(path), named.as_deref()));
        let validated = Validator {
            path,
            text: &text,
            dir: dir_of(path),
            problems: Problems(Vec::new()),
        }
        .validate(raw);
        match validated {
            Ok(config) if problems.is_empty() => Ok(config),
            Ok(_) => Err((Problems(problems), snapshot())),
            Err(more) => {
                problems.extend(more.0);
                Err((Problems(problems), snapshot()))
            }
        }
    }
}

/// The serde mirror of config text, and the text it was read from: the
/// file's own, or, when serde refuses fields of it (unknown, wrong type),
/// what is left once they are blanked out, with a problem for each, so
/// that one run reports them all and the rest is still checked.
fn raw_config<'t>(
    path: &Path,
    text: &'t str,
) -> (Vec<Problem>, Option<(raw::Config, Cow<'t, str>)>) {
    let first = match toml::from_str::<raw::Config>(text) {
        Ok(raw) => return (Vec::new(), Some((raw, Cow::Borrowed(text)))),
        Err(e) => e,
    };
    let parses = |t: &str| toml::from_str::<raw::Config>(t).map(drop);
    let reported = unknown_fields::report(path, text, &first, parses);
    let raw = reported
        .rest
        .and_then(|rest| Some((toml::from_str::<raw::Config>(&rest).ok()?, Cow::Owned(rest))));
    (reported.problems, raw)
}

/// The folder relative paths in the config at `path` start from.
fn dir_of(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("."))
}

/// The snapshot file `[keys] snapshot` names (`keys.toml` if unset).
fn snapshot_file(dir: &Path, named: Option<&str>) -> PathBuf {
    dir.join(named.unwrap_or("keys.toml"))
}

struct Validator<'a> {
    path: &'a Path,
    text: &'a str,
    dir: &'a Path,
    problems: Problems,
}

impl Validator<'_> {
    fn line(&self, span: std::ops::Range<usize>) -> Option<usize> {
        Some(line_of(self.text, span.start))
    }

    fn err(&mut self, line: Option<usize>, message: impl Into<String>) {
        self.problems
            .push(Problem::at_line(self.path, line, message.into()));
    }

    fn resolve(&self, p: &str) -> PathBuf {
        self.dir.join(p)
    }

    fn addrs(&mut self, line: Option<usize>, what: &str, list: &[String]) -> Vec<SocketAddr> {
        let mut out = Vec::new();
        for a in list {
            match a.parse::<SocketAddr>() {
                Ok(addr) => out.push(addr),
                Err(_) => self.err(line, format!("{what}: {a:?} is not an ip:port address")),
            }
        }
        out
    }

    fn positive(&mut self, line: Option<usize>, what: &str, v: Option<i64>, default: u64) -> u64 {
        match v {
            None => default,
            Some(n) if n > 0 => n as u64,
            Some(n) => {
                self.err(line, format!("{what} must be greater than 0 (got {n})"));
                default
            }
        }
    }

    fn validate(mut self, raw: raw::Config) -> Result<Config, Problems> {
        let raw::Config {
            server,
            admin,
            keys,
            rate_limit,
            upstream_headers,
            upstreams,
            routes,
            cluster,
        } = raw;
        let server_line = self.line(server.span());
        let tls_line = server
            .get_ref()
            .tls
            .as_ref()
            .and_then(|t| self.line(t.span()));
        let admin_line = admin.as_ref().and_then(|a| self.line(a.span()));
        let server = self.server(server);
        let cluster = cluster.and_then(|c| self.cluster(c));
        let admin = self.admin(admin);
        let mut listeners: Vec<(SocketAddr, &str, Option<usize>)> = Vec::new();
        listeners.extend(
            server
                .listen
                .iter()
                .map(|&a| (a, "server.listen", server_line)),
        );
        if let Some(tls) = &server.tls {
            listeners.extend(
                tls.listen
                    .iter()
                    .map(|&a| (a, "server.tls.listen", tls_line)),
            );
        }
        listeners.push((admin.listen, "admin.listen", admin_line.or(server_line)));
        for (i, &(a, what, line)) in listeners.iter().enumerate() {
            if let Some(&(b, other, _)) = listeners[..i].iter().find(|(b, _, _)| bind_clash(a, *b))
            {
                let with = if other == what {
                    format!("{b}, also in {other}")
                } else {
                    format!("{b} in {other}")
                };
                self.err(
                    line,
                    format!("{what}: {a} cannot be listened on beside {with}: one socket cannot take both"),
                );
            }
        }
        let keys = self.keys(keys);
        let rate_limit = self.rate_limit(rate_limit);
        let upstream_headers = UpstreamHeaders {
            forward_authorization: upstream_headers
                .and_then(|u| {
                    let raw::UpstreamHeaders {
                        forward_authorization,
                    } = u;
                    forward_authorization
                })
                .unwrap_or(false),
        };
        let (upstreams, upstream_lines) = self.upstreams(upstreams);
        let routes = self.routes(routes, &upstreams);
        if server.listen.is_empty() && server.tls.as_ref().is_none_or(|t| t.listen.is_empty()) {
            self.err(
                server_line,
                "no listener: set [server] listen or [server.tls] listen",
            );
        }
        let config = Config {
            path: self.path.to_path_buf(),
            server,
            admin,
            keys,
            rate_limit,
            upstream_headers,
            upstreams,
            upstream_lines,
            tls_line,
            routes,
            cluster,
        };
        self.problems.into_result(config)
    }

    fn cluster(&mut self, raw: toml::Spanned<raw::Cluster>) -> Option<ClusterConfig> {
        let table_line = self.line(raw.span());
        let raw::Cluster {
            redis,
            namespace,
            sync_ms,
            timeout_ms,
            on_unavailable,
        } = raw.into_inner();
        let before = self.problems.0.len();
        let redis = match redis {
            None => {
                self.err(
                    table_line,
                    "cluster.redis is required (a redis:// or rediss:// URL)",
                );
                None
            }
            Some(r) => {
                let line = self.line(r.span());
                match parse_redis_url(r.get_ref()) {
                    Ok(u) => Some(u),
                    Err(why) => {
                        self.err(line, format!("cluster.redis {why}"));
                        None
                    }
                }
            }
        };
        let namespace = match namespace {
            None => "keygate".to_string(),
            Some(n) => {
                let line = self.line(n.span());
                let n = n.into_inner();
                if !valid_namespace(&n) {
                    self.err(
                        line,
                        format!(
                            "cluster.namespace {n:?} must be 1 to 64 characters of letters, digits, '_', '-', '.' or ':'"
                        ),
                    );
                }
                n
            }
        };
        let mut ranged =
            |what: &str, v: Option<toml::Spanned<i64>>, default: u64, min: u64, max: u64| {
                let Some(v) = v else {
                    return Duration::from_millis(default);
                };
                let line = self.line(v.span());
                let n = v.into_inner();
                if n < min as i64 || n > max as i64 {
                    self.err(
                        line,
                        format!("cluster.{what} must be from {min} to {max} (got {n})"),
                    );
                    return Duration::from_millis(default);
                }
                Duration::from_millis(n as u64)
            };
        let sync = ranged("sync_ms", sync_ms, 50, 10, 1000);
        let timeout = ranged("timeout_ms", timeout_ms, 100, 1, 5000);
        let on_unavailable = match on_unavailable {
            None => OnUnavailable::default(),
            Some(w) => {
                let line = self.line(w.span());
                OnUnavailable::parse(w.get_ref()).unwrap_or_else(|| {
                    self.err(
                        line,
                        format!(
                            "cluster.on_unavailable must be \"local_share\", \"local_full\", \"allow\" or \"deny\" (got {:?})",
                            w.get_ref()
                        ),
                    );
                    OnUnavailable::default()
                })
            }
        };
        if self.problems.0.len() > before {
            return None;
        }
        Some(ClusterConfig {
            redis: redis?,
            namespace,
            sync,
            timeout,
            on_unavailable,
        })
    }

    fn server(&mut self, raw: toml::Spanned<raw::Server>) -> ServerConfig {
        let line = self.line(raw.span());
        let raw::Server {
            listen,
            threads,
            grace_period_secs,
            max_header_bytes,
            max_headers,
            header_timeout_ms,
            body_timeout_ms,
            send_timeout_ms,
            keepalive_timeout_secs,
            upgrade_sock,
            tls,
        } = raw.into_inner();
        let listen = self.addrs(line, "server.listen", &listen);
        let default_threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
        let threads = self.positive(line, "server.threads", threads, default_threads) as usize;
        if threads > 1024 {
            self.err(
                line,
                format!("server.threads must be at most 1024 (got {threads})"),
            );
        }
        let grace = match grace_period_secs {
            None => 10,
            Some(n) if n >= 0 => n as u64,
            Some(n) => {
                self.err(
                    line,
                    format!("server.grace_period_secs must not be negative (got {n})"),
                );
                10
            }
        };
        // Pingora itself refuses heads over 1 MiB and more than 256 fields
        // before keygate sees them; these limits can only be lower.
        let max_header_bytes =
            self.positive(line, "server.max_header_bytes", max_header_bytes, 65_536);
        if max_header_bytes > 1_048_575 {
            self.err(line, "server.max_header_bytes must be at most 1048575");
        }
        let max_headers = self.positive(line, "server.max_headers", max_headers, 100);
        if max_headers > 256 {
            self.err(line, "server.max_headers must be at most 256");
        }
        let header_timeout =
            self.positive(line, "server.header_timeout_ms", header_timeout_ms, 10_000);
        let body_timeout = self.positive(line, "server.body_timeout_ms", body_timeout_ms, 60_000);
        let send_timeout = self.positive(line, "server.send_timeout_ms", send_timeout_ms, 60_000);
        let keepalive = match keepalive_timeout_secs {
            None => 60,
            Some(n) if (0..=3600).contains(&n) => n as u64,
            Some(n) => {
                self.err(
                    line,
                    format!("server.keepalive_timeout_secs must be 0 to 3600 (got {n})"),
                );
                60
            }
        };
        for (what, ms) in [
            ("server.header_timeout_ms", header_timeout),
            ("server.body_timeout_ms", body_timeout),
            ("server.send_timeout_ms", send_timeout),
        ] {
            if ms > 3_600_000 {
                self.err(line, format!("{what} must be at most 3600000 (got {ms})"));
            }
        }
        // Absolute, so that the old and the new process, and the kernel's
        // socket table, all name it the same way.
        let upgrade_sock = self.resolve(upgrade_sock.as_deref().unwrap_or(DEFAULT_UPGRADE_SOCK));
        let upgrade_sock = std::path::absolute(&upgrade_sock).unwrap_or(upgrade_sock);
        // sun_path holds 108 bytes with its NUL; the admin hand-over socket
        // beside it needs 6 more.
        let longest = upgrade_sock.as_os_str().len() + ".admin".len();
        if upgrade_sock.file_name().is_none() || longest > 107 {
            self.err(
                line,
                format!(
                    "server.upgrade_sock {}: must name a file, in a path of at most 101 bytes",
                    upgrade_sock.display()
                ),
            );
        }
        let tls = tls.map(|t| self.tls(t));
        ServerConfig {
            listen,
            threads,
            grace_period: Duration::from_secs(grace),
            max_header_bytes: max_header_bytes.min(1_048_575) as usize,
            max_headers: max_headers.min(256) as usize,
            header_timeout: Duration::from_millis(header_timeout.min(3_600_000)),
            body_timeout: Duration::from_millis(body_timeout.min(3_600_000)),
            send_timeout: Duration::from_millis(send_timeout.min(3_600_000)),
            keepalive_timeout: (keepalive > 0).then(|| Duration::from_secs(keepalive)),
            upgrade_sock,
            tls,
        }
    }

    fn tls(&mut self, raw: toml::Spanned<raw::Tls>) -> TlsConfig {
        let line = self.line(raw.span());
        let raw::Tls {
            listen,
            cert,
            key,
            plain_http,
        } = raw.into_inner();
        let listen = self.addrs(line, "server.tls.listen", &listen);
        let plain_http = match plain_http.as_deref() {
            None | Some("allow") => PlainHttp::Allow,
            Some("reject") => PlainHttp::Reject,
            Some(other) => {
                self.err(
                    line,
                    format!(
                        "server.tls.plain_http must be \"allow\" or \"reject\" (got {other:?})"
                    ),
                );
                PlainHttp::Allow
            }
        };
        let cert = self.resolve(&cert);
        let key = self.resolve(&key);
        for (what, p) in [("cert", &cert), ("key", &key)] {
            if let Err(e) = std::fs::metadata(p) {
                self.err(line, format!("server.tls.{what} {}: {e}", p.display()));
            }
        }
        TlsConfig {
            listen,
            cert,
            key,
            plain_http,
        }
    }

    fn admin(&mut self, raw: Option<toml::Spanned<raw::Admin>>) -> AdminConfig {
        let default_listen = DEFAULT_ADMIN;
        let Some(raw) = raw else {
            return AdminConfig {
                listen: default_listen,
                token_hash: None,
            };
        };
        let line = self.line(raw.span());
        let raw::Admin { listen, token_hash } = raw.into_inner();
        let listen = match listen {
            None => default_listen,
            Some(l) => self
                .addrs(line, "admin.listen", &[l])
                .pop()
                .unwrap_or(default_listen),
        };
        let token_hash = token_hash.and_then(|h| match KeyDigest::parse(&h) {
            Ok(d) => Some(d),
            Err(e) => {
                self.err(line, format!("admin.token_hash: {e}"));
                None
            }
        });
        AdminConfig { listen, token_hash }
    }

    fn keys(&mut self, raw: Option<toml::Spanned<raw::Keys>>) -> KeysConfig {
        let (line, raw) = match raw {
            Some(r) => (self.line(r.span()), r.into_inner()),
            None => (
                None,
                raw::Keys {
                    snapshot: None,
                    company_prefix: None,
                    workspace_prefix: None,
                    watch_secs: None,
                },
            ),
        };
        let raw::Keys {
            snapshot,
            company_prefix,
            workspace_prefix,
            watch_secs,
        } = raw;
        let snapshot = snapshot_file(self.dir, snapshot.as_deref());
        if crate::model::format::SnapshotFormat::of(&snapshot).is_none() {
            self.err(
                line,
                format!(
                    "keys.snapshot {}: the file name must end in .toml or .json",
                    snapshot.display()
                ),
            );
        }
        let prefixes = match Prefixes::new(
            company_prefix.as_deref().unwrap_or(DEFAULT_COMPANY_PREFIX),
            workspace_prefix
                .as_deref()
                .unwrap_or(DEFAULT_WORKSPACE_PREFIX),
        ) {
            Ok(p) => p,
            Err(e) => {
                self.err(line, format!("keys: {e}"));
                Prefixes::default()
            }
        };
        let watch = match watch_secs {
            None | Some(0) => None,
            Some(n) if n > 0 => Some(Duration::from_secs(n as u64)),
            Some(n) => {
                self.err(
                    line,
                    format!("keys.watch_secs must not be negative (got {n})"),
                );
                None
            }
        };
        KeysConfig {
            snapshot,
            prefixes,
            watch,
        }
    }

    fn rate_limit(&mut self, raw: Option<toml::Spanned<raw::RateLimit>>) -> RateLimitConfig {
        const DEFAULT_MAX_BUCKETS: usize = 1_000_000;
        let Some(raw) = raw else {
            return RateLimitConfig {
                default: Limit::DEFAULT,
                max_buckets: DEFAULT_MAX_BUCKETS,
            };
        };
        let line = self.line(raw.span());
        let raw::RateLimit {
            requests,
            per_secs,
            burst,
            max_buckets,
        } = raw.into_inner();
        let default = match Limit::from_raw(requests, per_secs, burst) {
            Ok(l) => l,
            Err(e) => {
                self.err(line, format!("rate_limit: {e}"));
                Limit::DEFAULT
            }
        };
        let max_buckets = self.positive(
            line,
            "rate_limit.max_buckets",
            max_buckets,
            DEFAULT_MAX_BUCKETS as u64,
        ) as usize;
        RateLimitConfig {
            default,
            max_buckets,
        }
    }

    fn upstreams(
        &mut self,
        raw: Vec<toml::Spanned<raw::Upstream>>,
    ) -> (Vec<UpstreamConfig>, Vec<Option<usize>>) {
        let mut names = HashSet::new();
        let mut out = Vec::with_capacity(raw.len());
        let mut lines = Vec::with_capacity(raw.len());
        for r in raw {
            let line = self.line(r.span());
            lines.push(line);
            let raw::Upstream {
                name,
                servers,
                tls,
                sni,
                verify_cert,
                ca_file,
                connect_timeout_ms,
                read_timeout_ms,
                health_check,
            } = r.into_inner();
            if !valid_name(&name) {
                self.err(
                    line,
                    format!("upstream name {name:?} must be 1-64 letters, digits, '_', '-' or '.'"),
                );
            }
            if !names.insert(name.clone()) {
                self.err(line, format!("duplicate upstream name {name:?}"));
            }
            if servers.is_empty() {
                self.err(
                    line,
                    format!("upstream {name:?}: servers must not be empty"),
                );
            }
            for s in &servers {
                if !valid_server(s) {
                    self.err(
                        line,
                        format!("upstream {name:?}: server {s:?} must be host:port"),
                    );
                }
            }
            let connect = self.positive(line, "connect_timeout_ms", connect_timeout_ms, 2000);
            let read = self.positive(line, "read_timeout_ms", read_timeout_ms, 30000);
            let health_check = health_check.map(|h| {
                let raw::HealthCheck {
                    path,
                    interval_secs,
                } = h;
                if !path.starts_with('/') {
                    self.err(
                        line,
                        format!("upstream {name:?}: health_check.path must start with '/'"),
                    );
                }
                let interval = self.positive(line, "health_check.interval_secs", interval_secs, 5);
                HealthCheckConfig {
                    path,
                    interval: Duration::from_secs(interval),
                }
            });
            let ca_file = ca_file.map(|c| self.resolve(&c));
            out.push(UpstreamConfig {
                name,
                servers,
                tls: tls.unwrap_or(false),
                sni,
                verify_cert: verify_cert.unwrap_or(true),
                ca_file,
                connect_timeout: Duration::from_millis(connect),
                read_timeout: Duration::from_millis(read),
                health_check,
            });
        }
        (out, lines)
    }

    fn routes(
        &mut self,
        raw: Vec<toml::Spanned<raw::Route>>,
        upstreams: &[UpstreamConfig],
    ) -> Vec<RouteConfig> {
        let mut names = HashSet::new();
        let mut out = Vec::with_capacity(raw.len());
        for r in raw {
            let line = self.line(r.span());
            let raw::Route {
                name,
                path,
                upstream,
                auth,
                scope,
                methods,
                enforce,
            } = r.into_inner();
            if !valid_name(&name) || name == crate::telemetry::metrics::UNMATCHED {
                self.err(
                    line,
                    format!("route name {name:?} must be 1-64 letters, digits, '_', '-' or '.' (and not \"unmatched\")"),
                );
            }
            if !names.insert(name.clone()) {
                self.err(line, format!("duplicate route name {name:?}"));
            }
            let pattern = match path.parse::<Pattern>() {
                Ok(p) => Some(p),
                Err(e) => {
                    self.err(line, format!("route {name:?}: path {path:?}: {e}"));
                    None
                }
            };
            let upstream_idx = upstreams.iter().position(|u| u.name == upstream);
            if upstream_idx.is_none() {
                self.err(
                    line,
                    format!("route {name:?}: unknown upstream {upstream:?}"),
                );
            }
            let auth_mode = AuthMode::parse(&auth);
            if auth_mode.is_none() {
                self.err(
                    line,
                    format!("route {name:?}: auth must be \"company\", \"workspace\", \"any\" or \"none\" (got {auth:?})"),
                );
            }
            let scope_rule = match scope.as_deref() {
                None => Some(ScopeRule::Auto),
                Some(s) => ScopeRule::parse(s),
            };
            if scope_rule.is_none() {
                self.err(
                    line,
                    format!(
                        "route {name:?}: scope must be \"auto\", \"read:all\", \"write:all\", \"admin\" or \"none\" (got {:?})",
                        scope.unwrap_or_default()
                    ),
                );
            }
            let methods = methods.map(|list| {
                let listed = !list.is_empty();
                let mut parsed = Vec::with_capacity(list.len());
                for m in list {
                    match http::Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
                        Ok(method) if !m.is_empty() => {
                            if !parsed.contains(&method) {
                                parsed.push(method);
                            }
                        }
                        _ => self.err(line, format!("route {name:?}: {m:?} is not an HTTP method")),
                    }
                }
                // A list of only refused methods is told as such, above.
                if !listed {
                    self.err(line, format!("route {name:?}: methods must not be empty (omit it to allow every method)"));
                }
                parsed
            });
            let enforce = match enforce.as_deref() {
                None => Some(Enforcement::On),
                Some(word) => {
                    let parsed = Enforcement::parse(word);
                    if parsed.is_none() {
                        self.err(
                            line,
                            format!("route {name:?}: enforce must be \"on\" or \"shadow\" (got {word:?})"),
                        );
                    }
                    parsed
                }
            };
            if enforce == Some(Enforcement::Shadow) && auth_mode == Some(AuthMode::None) {
                self.err(
                    line,
                    format!("route {name:?}: enforce = \"shadow\" needs a keyed route (auth = \"none\" checks no key, so there is nothing to shadow)"),
                );
            }
            if let (Some(pattern), Some(upstream), Some(auth), Some(scope), Some(enforce)) =
                (pattern, upstream_idx, auth_mode, scope_rule, enforce)
            {
                out.push(RouteConfig {
                    name,
                    pattern,
                    upstream,
                    auth,
                    scope,
                    methods,
                    enforce,
                });
            }
        }
        out
    }
}

/// Validates a `[cluster] redis` URL without connecting. The error never
/// repeats the URL: it may hold a password.
fn parse_redis_url(text: &str) -> Result<RedisUrl, String> {
    let url = url::Url::parse(text).map_err(|e| format!("is not a valid URL ({e})"))?;
    match url.scheme() {
        "redis" | "rediss" => {}
        other => {
            return Err(format!(
                "must start with redis:// or rediss:// (got scheme {other:?})"
            ));
        }
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("has no host".into());
    }
    if url.port() == Some(0) {
        return Err("names port 0, where no server can listen".into());
    }
    let db = url.path().trim_start_matches('/');
    if !db.is_empty() && db.parse::<u16>().is_err() {
        return Err(format!(
            "path must be a database number like /0 (got /{db})"
        ));
    }
    if url.query().is_some() {
        return Err("must not have a query string".into());
    }
    match url.fragment() {
        None => {}
        Some("insecure") if url.scheme() == "rediss" => {}
        Some(_) => {
            return Err("may only end in #insecure, on a rediss:// URL".into());
        }
    }
    redis::Client::open(text).map_err(|e| format!("is not usable ({})", e.category()))?;
    Ok(RedisUrl(text.to_string()))
}

/// A `[cluster] namespace`: the prefix of every Redis key.
fn valid_namespace(n: &str) -> bool {
    (1..=64).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

/// Route and upstream names become metric labels and log fields: keep them tame.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn valid_server(s: &str) -> bool {
    if s.parse::<SocketAddr>().is_ok() {
        return true;
    }
    match s.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && port.parse::<u16>().is_ok_and(|p| p > 0)
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'))
        }
        None => false,
    }
}

#[cfg(test)]
mod tests;
