use super::*;
use crate::model::scope::Scope;

const PATH: &str = "/etc/keygate/keygate.toml";

/// The smallest config that passes: one listener, one upstream.
const BASE: &str = r#"[server]
listen = ["127.0.0.1:8080"]

[[upstreams]]
name = "api"
servers = ["127.0.0.1:9000"]
"#;

fn parse(text: &str) -> Result<Config, Problems> {
    Config::parse(Path::new(PATH), text)
}

fn ok(text: &str) -> Config {
    match parse(text) {
        Ok(c) => c,
        Err(p) => panic!("config refused:\n{p}"),
    }
}

fn refused(text: &str) -> Problems {
    match parse(text) {
        Ok(_) => panic!("config accepted:\n{text}"),
        Err(p) => {
            assert!(!p.0.is_empty(), "refused without a problem");
            p
        }
    }
}

/// The 1-based line of the first line of `text` that contains `needle`.
fn line_with(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in the text"))
        + 1
}

/// Asserts that exactly one problem was reported, at `PATH:line`, and that its
/// message contains `needle`. Returns the whole rendered problem.
fn assert_one_problem(text: &str, line: usize, needle: &str) -> String {
    let problems = refused(text);
    assert_eq!(
        problems.0.len(),
        1,
        "expected one problem, got:\n{problems}"
    );
    let p = &problems.0[0];
    assert_eq!(p.location, format!("{PATH}:{line}"), "{p}");
    assert!(
        p.message.contains(needle),
        "message {:?} does not contain {needle:?}",
        p.message
    );
    let rendered = problems.to_string();
    assert!(
        rendered.starts_with(&format!("{PATH}:{line}: ")),
        "{rendered}"
    );
    rendered
}

/// BASE plus one route to upstream "api" with the given extra lines.
fn with_route(name: &str, path: &str, extra: &str) -> String {
    format!(
        "{BASE}\n[[routes]]\nname = \"{name}\"\npath = \"{path}\"\nupstream = \"api\"\nauth = \"any\"\n{extra}"
    )
}

#[test]
fn sample_config_parses_with_its_values() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/keygate.toml");
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(p) => panic!("sample config refused:\n{p}"),
    };
    assert_eq!(config.path, path);
    assert_eq!(
        config.server.listen,
        vec!["127.0.0.1:8080".parse::<SocketAddr>().unwrap()]
    );
    assert_eq!(config.server.threads, 2);
    assert_eq!(config.server.grace_period, Duration::from_secs(10));
    assert_eq!(config.server.tls, None);
    assert_eq!(config.admin.listen, "127.0.0.1:9091".parse().unwrap());
    assert_eq!(config.admin.token_hash, None);
    assert_eq!(
        config.keys.snapshot,
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/keys.toml")
    );
    assert_eq!(config.keys.prefixes, Prefixes::default());
    assert_eq!(config.keys.watch, None);
    assert_eq!(config.rate_limit.default, Limit::DEFAULT);
    assert_eq!(config.rate_limit.max_buckets, 1_000_000);
    assert!(!config.upstream_headers.forward_authorization);
    assert_eq!(config.upstreams.len(), 1);
    let api = &config.upstreams[0];
    assert_eq!(api.name, "api");
    assert_eq!(api.servers, vec!["127.0.0.1:9000".to_string()]);
    assert!(!api.tls);
    assert_eq!(api.connect_timeout, Duration::from_millis(2000));
    assert_eq!(api.read_timeout, Duration::from_millis(30000));
    let names: Vec<&str> = config.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "health",
            "docs",
            "company_keys",
            "company_workspace",
            "company",
            "posts",
            "records",
            "profiles"
        ]
    );
    let health = &config.routes[0];
    assert_eq!(health.auth, AuthMode::None);
    assert_eq!(health.scope, ScopeRule::None);
    assert_eq!(health.pattern.as_str(), "/healthz");
    assert_eq!(
        config.routes[1].methods,
        Some(vec![http::Method::GET, http::Method::HEAD])
    );
    assert_eq!(
        config.routes[2].scope,
        ScopeRule::Require(Scope::Admin),
        "company_keys needs admin"
    );
    assert_eq!(config.routes[4].auth, AuthMode::Company);
    assert_eq!(config.routes[5].auth, AuthMode::Any);
    assert_eq!(config.routes[7].auth, AuthMode::Workspace);
    assert!(config.routes[3].pattern.binds_workspace());
    assert!(
        config
            .routes
            .iter()
            .all(|r| config.upstreams[r.upstream].name == "api")
    );
}

#[test]
fn minimal_config_gets_the_documented_defaults() {
    let c = ok(BASE);
    assert_eq!(
        c.admin,
        AdminConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9091)),
            token_hash: None,
        }
    );
    assert_eq!(c.keys.snapshot, PathBuf::from("/etc/keygate/keys.toml"));
    assert_eq!(c.keys.prefixes, Prefixes::default());
    assert_eq!(c.keys.watch, None);
    assert_eq!(c.rate_limit.default, Limit::DEFAULT);
    assert_eq!(c.rate_limit.max_buckets, 1_000_000);
    assert_eq!(c.server.grace_period, Duration::from_secs(10));
    assert!(c.server.threads >= 1);
    assert!(!c.upstream_headers.forward_authorization);
    let u = &c.upstreams[0];
    assert!(!u.tls);
    assert!(u.verify_cert);
    assert_eq!(u.sni, None);
    assert_eq!(u.ca_file, None);
    assert_eq!(u.health_check, None);
    assert_eq!(u.connect_timeout, Duration::from_millis(2000));
    assert_eq!(u.read_timeout, Duration::from_millis(30000));
    assert!(c.routes.is_empty());
}

#[test]
fn admin_section_without_listen_defaults_to_loopback_9091() {
    let c = ok(&format!("{BASE}\n[admin]\n"));
    assert_eq!(c.admin.listen, "127.0.0.1:9091".parse().unwrap());
}

#[test]
fn burst_defaults_to_requests() {
    let c = ok(&format!(
        "{BASE}\n[rate_limit]\nrequests = 7\nper_secs = 3\n"
    ));
    assert_eq!(
        c.rate_limit.default,
        Limit::from_raw(7, 3, Some(7)).unwrap()
    );
    assert_eq!(c.rate_limit.default.burst.get(), 7);
    assert_eq!(c.rate_limit.max_buckets, 1_000_000);
}

#[test]
fn explicit_rate_limit_and_max_buckets_are_kept() {
    let c = ok(&format!(
        "{BASE}\n[rate_limit]\nrequests = 1000\nper_secs = 60\nburst = 2000\nmax_buckets = 5\n"
    ));
    assert_eq!(c.rate_limit.default.requests.get(), 1000);
    assert_eq!(c.rate_limit.default.per_secs.get(), 60);
    assert_eq!(c.rate_limit.default.burst.get(), 2000);
    assert_eq!(c.rate_limit.max_buckets, 5);
}

#[test]
fn relative_snapshot_path_is_resolved_against_the_config_folder() {
    let c = ok(&format!("{BASE}\n[keys]\nsnapshot = \"data/keys.json\"\n"));
    assert_eq!(
        c.keys.snapshot,
        PathBuf::from("/etc/keygate/data/keys.json")
    );
    let c = ok(&format!(
        "{BASE}\n[keys]\nsnapshot = \"/var/lib/keys.toml\"\n"
    ));
    assert_eq!(c.keys.snapshot, PathBuf::from("/var/lib/keys.toml"));
    let c = Config::parse(Path::new("conf/keygate.toml"), BASE).unwrap();
    assert_eq!(c.keys.snapshot, PathBuf::from("conf/keys.toml"));
}

#[test]
fn other_fields_are_read() {
    let hash = KeyDigest::of(b"admin-token").to_text();
    let text = format!(
        r#"[server]
listen = ["0.0.0.0:8080", "[::1]:8081"]
threads = 3
grace_period_secs = 0

[admin]
listen = "0.0.0.0:9999"
token_hash = "{hash}"

[keys]
company_prefix = "acme_c_"
workspace_prefix = "acme_w_"
watch_secs = 5

[upstream_headers]
forward_authorization = true

[[upstreams]]
name = "api.v2"
servers = ["api.internal:443", "10.0.0.1:8443"]
tls = true
sni = "api.internal"
verify_cert = false
ca_file = "ca.pem"
connect_timeout_ms = 150
read_timeout_ms = 900
health_check = {{ path = "/healthz", interval_secs = 2 }}

[[routes]]
name = "r"
path = "/x/{{workspace}}/**"
upstream = "api.v2"
auth = "workspace"
scope = "write:all"
methods = ["get", "Post"]
"#
    );
    let c = ok(&text);
    assert_eq!(c.server.listen.len(), 2);
    assert_eq!(c.server.listen[1], "[::1]:8081".parse().unwrap());
    assert_eq!(c.server.threads, 3);
    assert_eq!(c.server.grace_period, Duration::ZERO);
    assert_eq!(c.admin.listen, "0.0.0.0:9999".parse().unwrap());
    assert_eq!(c.admin.token_hash, Some(KeyDigest::of(b"admin-token")));
    assert_eq!(
        c.keys.prefixes,
        Prefixes::new("acme_c_", "acme_w_").unwrap()
    );
    assert_eq!(c.keys.watch, Some(Duration::from_secs(5)));
    assert!(c.upstream_headers.forward_authorization);
    let u = &c.upstreams[0];
    assert_eq!(u.name, "api.v2");
    assert!(u.tls);
    assert!(!u.verify_cert);
    assert_eq!(u.sni.as_deref(), Some("api.internal"));
    assert_eq!(u.ca_file, Some(PathBuf::from("/etc/keygate/ca.pem")));
    assert_eq!(u.connect_timeout, Duration::from_millis(150));
    assert_eq!(u.read_timeout, Duration::from_millis(900));
    assert_eq!(
        u.health_check,
        Some(HealthCheckConfig {
            path: "/healthz".into(),
            interval: Duration::from_secs(2),
        })
    );
    let r = &c.routes[0];
    assert_eq!(r.upstream, 0);
    assert_eq!(r.auth, AuthMode::Workspace);
    assert_eq!(r.scope, ScopeRule::Require(Scope::Write));
    assert_eq!(
        r.methods,
        Some(vec![http::Method::GET, http::Method::POST]),
        "method words are upper-cased"
    );
}

#[test]
fn route_scope_defaults_to_auto_and_methods_to_all() {
    let c = ok(&with_route("r", "/x", ""));
    assert_eq!(c.routes[0].scope, ScopeRule::Auto);
    assert_eq!(c.routes[0].methods, None);
}

#[test]
fn every_auth_and_scope_word_is_accepted() {
    for (word, mode) in [
        ("company", AuthMode::Company),
        ("workspace", AuthMode::Workspace),
        ("any", AuthMode::Any),
        ("none", AuthMode::None),
    ] {
        let text = with_route("r", "/x", "").replace("auth = \"any\"", &format!("auth = {word:?}"));
        assert_eq!(ok(&text).routes[0].auth, mode, "{word}");
        assert_eq!(mode.as_str(), word);
    }
    for (word, rule) in [
        ("auto", ScopeRule::Auto),
        ("none", ScopeRule::None),
        ("read:all", ScopeRule::Require(Scope::Read)),
        ("write:all", ScopeRule::Require(Scope::Write)),
        ("admin", ScopeRule::Require(Scope::Admin)),
    ] {
        let text = with_route("r", "/x", &format!("scope = {word:?}\n"));
        assert_eq!(ok(&text).routes[0].scope, rule, "{word}");
    }
}

#[test]
fn routes_keep_file_order_and_point_at_their_upstream() {
    let text = format!(
        "{BASE}\n[[upstreams]]\nname = \"other\"\nservers = [\"127.0.0.1:9001\"]\n\n\
         [[routes]]\nname = \"b\"\npath = \"/b\"\nupstream = \"other\"\nauth = \"any\"\n\n\
         [[routes]]\nname = \"a\"\npath = \"/a\"\nupstream = \"api\"\nauth = \"any\"\n"
    );
    let c = ok(&text);
    assert_eq!(c.routes[0].name, "b");
    assert_eq!(c.upstreams[c.routes[0].upstream].name, "other");
    assert_eq!(c.routes[1].name, "a");
    assert_eq!(c.upstreams[c.routes[1].upstream].name, "api");
}

// ---- refusals: each one names the file and the line ----

#[test]
fn unknown_top_level_field_is_refused_with_line() {
    let text = format!("{BASE}\n[extras]\nx = 1\n");
    let msg = assert_one_problem(
        &text,
        line_with(&text, "[extras]"),
        "unknown field `extras`",
    );
    assert!(msg.contains(PATH));
}

#[test]
fn unknown_field_in_server_is_refused_with_line() {
    let text = BASE.replace("[server]\n", "[server]\nthreds = 2\n");
    assert_one_problem(&text, 2, "unknown field `threds`");
}

#[test]
fn unknown_field_in_route_is_refused_with_line() {
    // The classic typo: `scopes` instead of `scope` must not silently open the route.
    let text = with_route("r", "/x", "scopes = \"admin\"\n");
    assert_one_problem(
        &text,
        line_with(&text, "scopes ="),
        "unknown field `scopes`",
    );
}

#[test]
fn unknown_field_in_upstream_is_refused_with_line() {
    let text = BASE.replace("name = \"api\"\n", "name = \"api\"\ntimeout_ms = 5\n");
    assert_one_problem(
        &text,
        line_with(&text, "timeout_ms"),
        "unknown field `timeout_ms`",
    );
}

#[test]
fn every_unknown_field_and_wrong_value_is_reported_with_the_rest_checked() {
    let text = BASE.replace("[server]\n", "[server]\ncolour = 1\nthreads = \"two\"\n")
        + "tmeout = 5\n\n[[routes]]\nname = \"r\"\npath = \"/x\"\nupstream = \"nowhere\"\n"
        + "auth = \"any\"\nsope = \"admin\"\n";
    let problems = refused(&text);
    let got: Vec<(String, &str)> = problems
        .0
        .iter()
        .map(|p| (p.location.clone(), p.message.as_str()))
        .collect();
    let at = |needle| format!("{PATH}:{}", line_with(&text, needle));
    assert_eq!(got.len(), 5, "{problems}");
    for (i, (line, needle)) in [
        (at("colour"), "unknown field `colour`"),
        (at("threads"), "invalid type: string \"two\""),
        (at("tmeout"), "unknown field `tmeout`"),
        (at("sope"), "unknown field `sope`"),
        (at("[[routes]]"), "unknown upstream \"nowhere\""),
    ]
    .into_iter()
    .enumerate()
    {
        assert_eq!(got[i].0, line, "{problems}");
        assert!(got[i].1.contains(needle), "{needle:?} in {problems}");
    }
}

#[test]
fn wrong_type_is_refused_with_line() {
    let text = BASE.replace("[server]\n", "[server]\nthreads = \"two\"\n");
    assert_one_problem(&text, 2, "invalid type: string \"two\"");
    let text = BASE.replace(
        "servers = [\"127.0.0.1:9000\"]",
        "servers = \"127.0.0.1:9000\"",
    );
    assert_one_problem(&text, line_with(&text, "servers ="), "invalid type");
    let text = format!("{BASE}\n[upstream_headers]\nforward_authorization = \"yes\"\n");
    assert_one_problem(
        &text,
        line_with(&text, "forward_authorization"),
        "invalid type",
    );
}

#[test]
fn toml_syntax_error_is_refused_with_line() {
    let text = format!("{BASE}\n[[routes]\nname = \"r\"\n");
    let problems = refused(&text);
    assert_eq!(problems.0.len(), 1, "{problems}");
    assert_eq!(
        problems.0[0].location,
        format!("{PATH}:{}", line_with(&text, "[[routes]"))
    );
}

#[test]
fn missing_server_section_is_refused() {
    let problems = refused("[[upstreams]]\nname = \"api\"\nservers = [\"127.0.0.1:1\"]\n");
    assert!(
        problems.0[0].message.contains("missing field `server`"),
        "{problems}"
    );
    assert!(problems.0[0].location.starts_with(PATH));
}

#[test]
fn unknown_upstream_in_route_is_refused_with_line() {
    let text = with_route("r", "/x", "").replace("upstream = \"api\"", "upstream = \"apii\"");
    let msg = assert_one_problem(
        &text,
        line_with(&text, "[[routes]]"),
        "route \"r\": unknown upstream \"apii\"",
    );
    assert!(msg.contains(PATH));
}

#[test]
fn duplicate_route_name_is_refused_at_the_second_one() {
    let first = with_route("dup", "/a", "");
    let text = format!(
        "{first}\n[[routes]]\nname = \"dup\"\npath = \"/b\"\nupstream = \"api\"\nauth = \"any\"\n"
    );
    let second_line = text
        .lines()
        .enumerate()
        .filter(|(_, l)| *l == "[[routes]]")
        .nth(1)
        .unwrap()
        .0
        + 1;
    assert_one_problem(&text, second_line, "duplicate route name \"dup\"");
}

#[test]
fn duplicate_upstream_name_is_refused_at_the_second_one() {
    let text = format!("{BASE}\n[[upstreams]]\nname = \"api\"\nservers = [\"127.0.0.1:9001\"]\n");
    assert_one_problem(
        &text,
        line_with(&text, "9001") - 2,
        "duplicate upstream name \"api\"",
    );
}

#[test]
fn unparsable_patterns_are_refused_with_line_and_reason() {
    for (pattern, reason) in [
        ("api/x", "pattern must start with '/'"),
        ("/a/**/b", "'**' may only be the last segment"),
        ("/{tenant}/x", "unknown placeholder \"{tenant}\""),
        (
            "/{workspace}/{workspace}",
            "{workspace} may appear only once",
        ),
        ("/a*b", "segment \"a*b\" mixes a wildcard with literal text"),
        ("/a/../b", "segment \"..\" can never match a request path"),
    ] {
        let text = with_route("r", pattern, "");
        assert_one_problem(
            &text,
            line_with(&text, "[[routes]]"),
            &format!("route \"r\": path {pattern:?}: {reason}"),
        );
    }
}

#[test]
fn zero_or_negative_default_rate_is_refused_with_line() {
    for (body, needle) in [
        (
            "requests = 0\nper_secs = 60",
            "rate_limit: requests must be a whole number from 1 to 4294967295 (got 0)",
        ),
        (
            "requests = -5\nper_secs = 60",
            "rate_limit: requests must be a whole number from 1 to 4294967295 (got -5)",
        ),
        (
            "requests = 10\nper_secs = 0",
            "rate_limit: per_secs must be a whole number from 1 to 4294967295 (got 0)",
        ),
        (
            "requests = 10\nper_secs = 60\nburst = 0",
            "rate_limit: burst must be a whole number from 1 to 4294967295 (got 0)",
        ),
        (
            "requests = 10\nper_secs = 60\nmax_buckets = 0",
            "rate_limit.max_buckets must be greater than 0 (got 0)",
        ),
    ] {
        let text = format!("{BASE}\n[rate_limit]\n{body}\n");
        assert_one_problem(&text, line_with(&text, "[rate_limit]"), needle);
    }
}

#[test]
fn bad_auth_word_is_refused_with_line() {
    let text = with_route("r", "/x", "").replace("auth = \"any\"", "auth = \"Company\"");
    assert_one_problem(
        &text,
        line_with(&text, "[[routes]]"),
        "route \"r\": auth must be \"company\", \"workspace\", \"any\" or \"none\" (got \"Company\")",
    );
}

#[test]
fn bad_scope_word_is_refused_with_line() {
    for word in ["read", "write", "READ:ALL", ""] {
        let text = with_route("r", "/x", &format!("scope = {word:?}\n"));
        assert_one_problem(
            &text,
            line_with(&text, "[[routes]]"),
            &format!(
                "route \"r\": scope must be \"auto\", \"read:all\", \"write:all\", \"admin\" or \"none\" (got {word:?})"
            ),
        );
    }
}

#[test]
fn bad_method_is_refused_with_line() {
    for m in ["G ET", "", "GET\n"] {
        let text = with_route("r", "/x", &format!("methods = [\"GET\", {m:?}]\n"));
        assert_one_problem(
            &text,
            line_with(&text, "[[routes]]"),
            &format!("route \"r\": {m:?} is not an HTTP method"),
        );
    }
}

#[test]
fn empty_method_list_is_refused() {
    let text = with_route("r", "/x", "methods = []\n");
    assert_one_problem(
        &text,
        line_with(&text, "[[routes]]"),
        "route \"r\": methods must not be empty",
    );
}

#[test]
fn bad_listen_address_is_refused_with_line() {
    // A good listener next to the bad one, so the only problem is the address.
    let text = BASE.replace(
        "\"127.0.0.1:8080\"",
        "\"127.0.0.1:8080\", \"localhost:8080\"",
    );
    assert_one_problem(
        &text,
        1,
        "server.listen: \"localhost:8080\" is not an ip:port address",
    );
    let text = BASE.replace("\"127.0.0.1:8080\"", "\"127.0.0.1:8080\", \"127.0.0.1\"");
    assert_one_problem(&text, 1, "server.listen: \"127.0.0.1\" is not an ip:port");
}

#[test]
fn bad_admin_listen_is_refused_with_line() {
    let text = format!("{BASE}\n[admin]\nlisten = \"0.0.0.0\"\n");
    assert_one_problem(
        &text,
        line_with(&text, "[admin]"),
        "admin.listen: \"0.0.0.0\" is not an ip:port address",
    );
}

#[test]
fn bad_admin_token_hash_is_refused_with_line() {
    let upper = KeyDigest::of(b"t")
        .to_text()
        .to_uppercase()
        .replace("SHA256:", "sha256:");
    let text = format!("{BASE}\n[admin]\ntoken_hash = \"{upper}\"\n");
    assert_one_problem(
        &text,
        line_with(&text, "[admin]"),
        "admin.token_hash: hash must be \"sha256:\" followed by 64 lowercase hex digits",
    );
}

#[test]
fn empty_servers_are_refused_with_line() {
    let text = BASE.replace("servers = [\"127.0.0.1:9000\"]", "servers = []");
    assert_one_problem(
        &text,
        line_with(&text, "[[upstreams]]"),
        "upstream \"api\": servers must not be empty",
    );
}

#[test]
fn server_without_port_is_refused_with_line() {
    for s in [
        "api.internal",
        "api.internal:0",
        ":80",
        "bad host:80",
        "h:99999",
    ] {
        let text = BASE.replace("127.0.0.1:9000", s);
        assert_one_problem(
            &text,
            line_with(&text, "[[upstreams]]"),
            &format!("upstream \"api\": server {s:?} must be host:port"),
        );
    }
}

#[test]
fn bad_upstream_and_route_names_are_refused() {
    let text = BASE.replace("name = \"api\"", "name = \"my api\"");
    assert_one_problem(
        &text,
        line_with(&text, "[[upstreams]]"),
        "upstream name \"my api\" must be 1-64 letters",
    );
    // "unmatched" is the metric label of requests that match no route.
    let text = with_route("unmatched", "/x", "");
    assert_one_problem(
        &text,
        line_with(&text, "[[routes]]"),
        "route name \"unmatched\" must be",
    );
}

#[test]
fn zero_or_negative_timeouts_are_refused() {
    let text = BASE.replace(
        "name = \"api\"\n",
        "name = \"api\"\nconnect_timeout_ms = 0\n",
    );
    assert_one_problem(
        &text,
        line_with(&text, "[[upstreams]]"),
        "connect_timeout_ms must be greater than 0 (got 0)",
    );
    let text = BASE.replace("name = \"api\"\n", "name = \"api\"\nread_timeout_ms = -1\n");
    assert_one_problem(
        &text,
        line_with(&text, "[[upstreams]]"),
        "read_timeout_ms must be greater than 0 (got -1)",
    );
}

#[test]
fn health_check_path_must_be_absolute() {
    let text = BASE.replace(
        "name = \"api\"\n",
        "name = \"api\"\nhealth_check = { path = \"healthz\" }\n",
    );
    assert_one_problem(
        &text,
        line_with(&text, "[[upstreams]]"),
        "upstream \"api\": health_check.path must start with '/'",
    );
}

#[test]
fn negative_server_numbers_are_refused() {
    let text = BASE.replace("[server]\n", "[server]\nthreads = 0\n");
    assert_one_problem(&text, 1, "server.threads must be greater than 0 (got 0)");
    let text = BASE.replace("[server]\n", "[server]\ngrace_period_secs = -1\n");
    assert_one_problem(
        &text,
        1,
        "server.grace_period_secs must not be negative (got -1)",
    );
}

#[test]
fn bad_keys_section_is_refused_with_line() {
    let text = format!("{BASE}\n[keys]\nsnapshot = \"keys.yaml\"\n");
    assert_one_problem(
        &text,
        line_with(&text, "[keys]"),
        "keys.snapshot /etc/keygate/keys.yaml: the file name must end in .toml or .json",
    );
    let text = format!("{BASE}\n[keys]\ncompany_prefix = \"k_\"\nworkspace_prefix = \"k_\"\n");
    assert_one_problem(
        &text,
        line_with(&text, "[keys]"),
        "keys: company_prefix and workspace_prefix must differ",
    );
    let text = format!("{BASE}\n[keys]\nworkspace_prefix = \"\"\n");
    assert_one_problem(
        &text,
        line_with(&text, "[keys]"),
        "keys: workspace_prefix must not be empty",
    );
    let text = format!("{BASE}\n[keys]\nwatch_secs = -1\n");
    assert_one_problem(
        &text,
        line_with(&text, "[keys]"),
        "keys.watch_secs must not be negative (got -1)",
    );
}

#[test]
fn listeners_that_cannot_all_be_bound_are_refused_with_line() {
    let text = BASE.replace(
        "\"127.0.0.1:8080\"",
        "\"127.0.0.1:8080\", \"127.0.0.1:8080\"",
    );
    assert_one_problem(
        &text,
        1,
        "server.listen: 127.0.0.1:8080 cannot be listened on beside 127.0.0.1:8080, also in server.listen",
    );
    let text = format!("{BASE}\n[admin]\nlisten = \"0.0.0.0:8080\"\n");
    assert_one_problem(
        &text,
        line_with(&text, "[admin]"),
        "admin.listen: 0.0.0.0:8080 cannot be listened on beside 127.0.0.1:8080 in server.listen",
    );
    let text = BASE.replace("\"127.0.0.1:8080\"", "\"[::]:8080\", \"10.0.0.1:8080\"");
    assert_one_problem(
        &text,
        1,
        "10.0.0.1:8080 cannot be listened on beside [::]:8080",
    );
    // Other ports, or two addresses of one family: fine.
    for listen in [
        "\"127.0.0.1:8080\", \"127.0.0.1:8081\"",
        "\"127.0.0.1:8080\", \"127.0.0.2:8080\"",
        "\"[::1]:8080\", \"127.0.0.1:8080\"",
        // Port 0: a free port each time.
        "\"127.0.0.1:0\", \"127.0.0.1:0\"",
    ] {
        let text = BASE.replace("\"127.0.0.1:8080\"", listen);
        if let Err(p) = parse(&text) {
            panic!("{listen}: {p}");
        }
    }
}

#[test]
fn no_listener_at_all_is_refused() {
    let text = BASE.replace("listen = [\"127.0.0.1:8080\"]", "listen = []");
    let problems = refused(&text);
    assert_eq!(
        problems.0,
        vec![Problem {
            location: format!("{PATH}:1"),
            message: "no listener: set [server] listen or [server.tls] listen".into(),
        }]
    );
}

#[test]
fn tls_section_is_read_and_its_files_resolved() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gw.crt"), "cert").unwrap();
    std::fs::write(dir.path().join("gw.key"), "key").unwrap();
    let path = dir.path().join("keygate.toml");
    let text = r#"[server]
listen = []

[server.tls]
listen = ["0.0.0.0:8443"]
cert = "gw.crt"
key = "gw.key"
plain_http = "reject"
"#;
    let c = match Config::parse(&path, text) {
        Ok(c) => c,
        Err(p) => panic!("{p}"),
    };
    let tls = c.server.tls.unwrap();
    assert_eq!(tls.listen, vec!["0.0.0.0:8443".parse().unwrap()]);
    assert_eq!(tls.cert, dir.path().join("gw.crt"));
    assert_eq!(tls.key, dir.path().join("gw.key"));
    assert_eq!(tls.plain_http, PlainHttp::Reject);
    let allow = text.replace("plain_http = \"reject\"\n", "");
    let c = Config::parse(&path, &allow).unwrap();
    assert_eq!(c.server.tls.unwrap().plain_http, PlainHttp::Allow);
}

#[test]
fn bad_tls_section_is_refused_with_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keygate.toml");
    let text = r#"[server]
listen = ["127.0.0.1:8080"]

[server.tls]
listen = ["0.0.0.0:8443"]
cert = "missing.crt"
key = "missing.key"
plain_http = "deny"
"#;
    let problems = Config::parse(&path, text).unwrap_err();
    let loc = format!("{}:4", path.display());
    let messages: Vec<&str> = problems.0.iter().map(|p| p.message.as_str()).collect();
    assert_eq!(problems.0.len(), 3, "{problems}");
    assert!(problems.0.iter().all(|p| p.location == loc), "{problems}");
    assert_eq!(
        messages[0],
        "server.tls.plain_http must be \"allow\" or \"reject\" (got \"deny\")"
    );
    assert!(messages[1].starts_with(&format!(
        "server.tls.cert {}",
        dir.path().join("missing.crt").display()
    )));
    assert!(messages[2].starts_with(&format!(
        "server.tls.key {}",
        dir.path().join("missing.key").display()
    )));
}

#[test]
fn several_problems_are_reported_at_once_each_with_its_line() {
    let text = r#"[server]
listen = ["nowhere"]

[rate_limit]
requests = 0
per_secs = 60

[[upstreams]]
name = "api"
servers = []

[[upstreams]]
name = "api"
servers = ["127.0.0.1:9000"]

[[routes]]
name = "a"
path = "/a"
upstream = "missing"
auth = "any"

[[routes]]
name = "a"
path = "b"
upstream = "api"
auth = "every"
scope = "read"
methods = ["G T"]
"#;
    let problems = refused(text);
    let got: Vec<(String, &str)> = problems
        .0
        .iter()
        .map(|p| (p.location.clone(), p.message.as_str()))
        .collect();
    let at = |l: usize| format!("{PATH}:{l}");
    let expected: Vec<(String, &str)> = vec![
        (
            at(1),
            "server.listen: \"nowhere\" is not an ip:port address",
        ),
        (
            at(4),
            "rate_limit: requests must be a whole number from 1 to 4294967295 (got 0)",
        ),
        (at(8), "upstream \"api\": servers must not be empty"),
        (at(12), "duplicate upstream name \"api\""),
        (at(16), "route \"a\": unknown upstream \"missing\""),
        (at(22), "duplicate route name \"a\""),
        (
            at(22),
            "route \"a\": path \"b\": pattern must start with '/'",
        ),
        (
            at(22),
            "route \"a\": auth must be \"company\", \"workspace\", \"any\" or \"none\" (got \"every\")",
        ),
        (
            at(22),
            "route \"a\": scope must be \"auto\", \"read:all\", \"write:all\", \"admin\" or \"none\" (got \"read\")",
        ),
        (at(22), "route \"a\": \"G T\" is not an HTTP method"),
        // The only valid listener address was refused, so none is left.
        (
            at(1),
            "no listener: set [server] listen or [server.tls] listen",
        ),
    ];
    assert_eq!(got, expected, "{problems}");
    // The rendered form puts one problem on each line, location first.
    let rendered = problems.to_string();
    assert_eq!(rendered.lines().count(), expected.len());
    assert!(rendered.lines().all(|l| l.starts_with(&format!("{PATH}:"))));
}

#[test]
fn header_limits_default_and_are_bounded_by_pingora() {
    let base = "[server]\nlisten = [\"127.0.0.1:8080\"]\n";
    let c = Config::parse(Path::new("k.toml"), base).unwrap();
    assert_eq!(c.server.max_header_bytes, 65_536);
    assert_eq!(c.server.max_headers, 100);
    let c = Config::parse(
        Path::new("k.toml"),
        &format!("{base}max_header_bytes = 8192\nmax_headers = 50\n"),
    )
    .unwrap();
    assert_eq!(
        (c.server.max_header_bytes, c.server.max_headers),
        (8192, 50)
    );
    let err = Config::parse(
        Path::new("k.toml"),
        &format!("{base}max_header_bytes = 2000000\nmax_headers = 0\n"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("k.toml:1: server.max_header_bytes must be at most 1048575"),
        "{err}"
    );
    assert!(
        err.contains("k.toml:1: server.max_headers must be greater than 0"),
        "{err}"
    );
}

#[test]
fn client_timeouts_default_and_are_bounded() {
    let base = "[server]\nlisten = [\"127.0.0.1:8080\"]\n";
    let c = Config::parse(Path::new("k.toml"), base).unwrap();
    assert_eq!(c.server.header_timeout, Duration::from_secs(10));
    assert_eq!(c.server.body_timeout, Duration::from_secs(60));
    assert_eq!(c.server.send_timeout, Duration::from_secs(60));
    assert_eq!(c.server.keepalive_timeout, Some(Duration::from_secs(60)));
    let c = Config::parse(
        Path::new("k.toml"),
        &format!(
            "{base}header_timeout_ms = 250\nbody_timeout_ms = 1500\nsend_timeout_ms = 700\nkeepalive_timeout_secs = 0\n"
        ),
    )
    .unwrap();
    assert_eq!(c.server.header_timeout, Duration::from_millis(250));
    assert_eq!(c.server.body_timeout, Duration::from_millis(1500));
    assert_eq!(c.server.send_timeout, Duration::from_millis(700));
    assert_eq!(c.server.keepalive_timeout, None, "0 turns keep-alive off");
    let err = Config::parse(
        Path::new("k.toml"),
        &format!(
            "{base}header_timeout_ms = 0\nbody_timeout_ms = 3600001\nsend_timeout_ms = 0\nkeepalive_timeout_secs = -1\n"
        ),
    )
    .unwrap_err()
    .to_string();
    for want in [
        "k.toml:1: server.header_timeout_ms must be greater than 0 (got 0)",
        "k.toml:1: server.body_timeout_ms must be at most 3600000 (got 3600001)",
        "k.toml:1: server.send_timeout_ms must be greater than 0 (got 0)",
        "k.toml:1: server.keepalive_timeout_secs must be 0 to 3600 (got -1)",
    ] {
        assert!(err.contains(want), "{want} missing from {err}");
    }
}

#[test]
fn enforce_is_on_by_default_shadow_when_asked_and_refused_on_keyless_routes() {
    let c = ok(&with_route("r", "/a/**", ""));
    assert_eq!(c.routes[0].enforce, Enforcement::On);
    let c = ok(&with_route("r", "/a/**", "enforce = \"shadow\"\n"));
    assert_eq!(c.routes[0].enforce, Enforcement::Shadow);
    let c = ok(&with_route("r", "/a/**", "enforce = \"on\"\n"));
    assert_eq!(c.routes[0].enforce, Enforcement::On);
    let text = with_route("r", "/a/**", "enforce = \"monitor\"\n");
    assert_one_problem(
        &text,
        line_with(&text, "[[routes]]"),
        "route \"r\": enforce must be \"on\" or \"shadow\" (got \"monitor\")",
    );
    let text = with_route("r", "/a/**", "enforce = \"shadow\"\n")
        .replace("auth = \"any\"", "auth = \"none\"");
    assert_one_problem(
        &text,
        line_with(&text, "[[routes]]"),
        "route \"r\": enforce = \"shadow\" needs a keyed route",
    );
    let text = with_route("r", "/a/**", "enforce = true\n");
    let problems = refused(&text).to_string();
    assert!(
        problems.contains("invalid type"),
        "wrong type refused: {problems}"
    );
}

#[test]
fn cluster_table_defaults_and_every_field() {
    assert_eq!(ok(BASE).cluster, None);
    let c = ok(&format!(
        "{BASE}\n[cluster]\nredis = \"redis://127.0.0.1:6379/0\"\n"
    ))
    .cluster
    .unwrap();
    assert_eq!(
        (c.namespace.as_str(), c.sync, c.timeout, c.on_unavailable),
        (
            "keygate",
            Duration::from_millis(50),
            Duration::from_millis(100),
            OnUnavailable::LocalShare
        )
    );
    let c = ok(&format!(
        "{BASE}\n[cluster]\nredis = \"rediss://app:s3cret@redis.internal:6380/2#insecure\"\nnamespace = \"edge:eu-1\"\nsync_ms = 10\ntimeout_ms = 5000\non_unavailable = \"deny\"\n"
    ))
    .cluster
    .unwrap();
    assert_eq!(c.namespace, "edge:eu-1");
    assert_eq!((c.sync.as_millis(), c.timeout.as_millis()), (10, 5000));
    assert_eq!(c.on_unavailable, OnUnavailable::Deny);
    assert_eq!(
        c.redis.secret(),
        "rediss://app:s3cret@redis.internal:6380/2#insecure"
    );
    for word in ["local_share", "local_full", "allow", "deny"] {
        let text =
            format!("{BASE}\n[cluster]\nredis = \"redis://h\"\non_unavailable = \"{word}\"\n");
        assert_eq!(ok(&text).cluster.unwrap().on_unavailable.as_str(), word);
    }
}

#[test]
fn the_redis_password_is_never_shown() {
    let c = ok(&format!(
        "{BASE}\n[cluster]\nredis = \"redis://app:s3cret@127.0.0.1:6379/0\"\n"
    ))
    .cluster
    .unwrap();
    assert_eq!(c.redis.redacted(), "redis://***@127.0.0.1:6379/0");
    assert!(!format!("{c:?}").contains("s3cret"));
    let c = ok(&format!(
        "{BASE}\n[cluster]\nredis = \"redis://:s3cret@h:1\"\n"
    ))
    .cluster
    .unwrap();
    assert_eq!(c.redis.redacted(), "redis://***@h:1");
    let c = ok(&format!("{BASE}\n[cluster]\nredis = \"redis://h:1/0\"\n"))
        .cluster
        .unwrap();
    assert_eq!(c.redis.redacted(), "redis://h:1/0");
    // Refused URLs are not repeated either.
    let text = format!("{BASE}\n[cluster]\nredis = \"http://app:s3cret@h:1\"\n");
    let shown = refused(&text).to_string();
    assert!(!shown.contains("s3cret"), "{shown}");
}

#[test]
fn cluster_problems_name_the_field_line() {
    let table =
        |body: &str| format!("{BASE}\n[cluster]\nredis = \"redis://127.0.0.1:6379\"\n{body}\n");
    for (body, needle) in [
        (
            "sync_ms = 5",
            "cluster.sync_ms must be from 10 to 1000 (got 5)",
        ),
        (
            "sync_ms = 2000",
            "cluster.sync_ms must be from 10 to 1000 (got 2000)",
        ),
        (
            "timeout_ms = 0",
            "cluster.timeout_ms must be from 1 to 5000 (got 0)",
        ),
        (
            "timeout_ms = 6000",
            "cluster.timeout_ms must be from 1 to 5000 (got 6000)",
        ),
        (
            "on_unavailable = \"maybe\"",
            "cluster.on_unavailable must be",
        ),
        ("namespace = \"\"", "cluster.namespace \"\" must be 1 to 64"),
        ("namespace = \"a b\"", "cluster.namespace \"a b\" must be"),
    ] {
        let text = table(body);
        assert_one_problem(&text, line_with(&text, body), needle);
    }
    for (url, needle) in [
        (
            "http://127.0.0.1:6379",
            "must start with redis:// or rediss:// (got scheme \"http\")",
        ),
        ("not a url", "is not a valid URL"),
        ("redis://127.0.0.1:6379/x", "database number"),
        ("redis://127.0.0.1:99999", "is not a valid URL"),
        ("redis://127.0.0.1:0/0", "port 0"),
        ("redis://127.0.0.1:6379/0?x=1", "query"),
        ("redis://127.0.0.1:6379#insecure", "#insecure"),
    ] {
        let text = format!("{BASE}\n[cluster]\nredis = \"{url}\"\n");
        assert_one_problem(&text, line_with(&text, "redis ="), needle);
    }
    let text = format!("{BASE}\n[cluster]\nnamespace = \"kg\"\n");
    assert_one_problem(
        &text,
        line_with(&text, "[cluster]"),
        "cluster.redis is required",
    );
    let text = table("sync = 50");
    assert_one_problem(&text, line_with(&text, "sync = 50"), "unknown field `sync`");
}
