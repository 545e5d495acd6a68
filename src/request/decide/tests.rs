use super::*;
use crate::config::Config;
use crate::model::scope::Scope;
use crate::snapshot::KeyIndex;
use http::Method;
use std::path::Path;

/// 2026-12-01T00:00:00Z: "now" in these tests.
const NOW: i64 = 1_796_083_200;
const HOUR: i64 = 3600;
const DAY: i64 = 24 * HOUR;

// Keys: prefix + at least 32 letters and digits.
const ACME_ADMIN: &str = "ord_c_AcmeAdmin00000000000000000000000000";
const ACME_READER: &str = "ord_c_AcmeReader0000000000000000000000000";
const ACME_WRITER: &str = "ord_c_AcmeWriter0000000000000000000000000";
const ACME_NO_SCOPE: &str = "ord_c_AcmeNoScope000000000000000000000000";
const GLOBEX_ADMIN: &str = "ord_c_GlobexAdmin000000000000000000000000";
const MKT_RW: &str = "ord_MarketingRw000000000000000000000000000";
const MKT_READ: &str = "ord_MarketingRead0000000000000000000000000";
const MKT_WRITE: &str = "ord_MarketingWrite000000000000000000000000";
const MKT_ADMIN: &str = "ord_MarketingAdmin000000000000000000000000";
const SALES_RW: &str = "ord_SalesRw00000000000000000000000000000000";
const EXPIRED: &str = "ord_Expired000000000000000000000000000000";
const REVOKED: &str = "ord_Revoked000000000000000000000000000000";
const EXPIRED_AND_REVOKED: &str = "ord_ExpiredRevoked00000000000000000000000";
const ENDS_LATER: &str = "ord_EndsLater0000000000000000000000000000";
const EXPIRED_COMPANY: &str = "ord_c_ExpiredCompany000000000000000000000";
/// A company record whose key text carries the workspace prefix.
const COMPANY_RECORD_WS_PREFIX: &str = "ord_CompanyRecord000000000000000000000000";
/// A workspace record whose key text carries the company prefix.
const WORKSPACE_RECORD_CO_PREFIX: &str = "ord_c_WorkspaceRecord0000000000000000000";
/// A listed key with a prefix that is not configured.
const FOREIGN_PREFIX: &str = "sk_live_Foreign000000000000000000000000000";
/// A listed key longer than any token the gateway will hash.
fn oversized_key() -> String {
    format!("ord_{}", "A".repeat(crate::model::key::MAX_TOKEN_LEN))
}

const CONFIG: &str = r#"[server]
listen = ["127.0.0.1:8080"]

[[upstreams]]
name = "api"
servers = ["127.0.0.1:9000"]

[[upstreams]]
name = "files"
servers = ["127.0.0.1:9001"]

[[routes]]
name = "health"
path = "/healthz"
upstream = "api"
auth = "none"
scope = "none"

[[routes]]
name = "docs"
path = "/docs/**"
upstream = "files"
auth = "none"
scope = "none"
methods = ["GET", "HEAD"]

[[routes]]
name = "company_keys"
path = "/api/v1/company/keys/**"
upstream = "api"
auth = "company"
scope = "admin"

[[routes]]
name = "company_workspace"
path = "/api/v1/company/workspaces/{workspace}/**"
upstream = "api"
auth = "company"
scope = "auto"

[[routes]]
name = "company"
path = "/api/v1/company/**"
upstream = "api"
auth = "company"
scope = "auto"

[[routes]]
name = "posts"
path = "/api/v1/workspaces/{workspace}/posts/**"
upstream = "api"
auth = "any"
scope = "auto"

[[routes]]
name = "records"
path = "/api/v1/workspaces/{workspace}/records/**"
upstream = "api"
auth = "workspace"
scope = "auto"
methods = ["GET", "POST", "PUT", "DELETE"]

[[routes]]
name = "profiles"
path = "/api/v1/profiles/**"
upstream = "api"
auth = "workspace"
scope = "auto"

[[routes]]
name = "item"
path = "/api/v1/items/*"
upstream = "files"
auth = "any"
scope = "read:all"

[[routes]]
name = "item_meta"
path = "/api/v1/items/*/meta"
upstream = "files"
auth = "any"
scope = "write:all"

[[routes]]
name = "open"
path = "/api/v1/open/**"
upstream = "api"
auth = "any"
scope = "none"
"#;

fn key_block(id: &str, key: &str, key_type: &str, company: &str, extra: &str) -> String {
    format!(
        "[[keys]]\nid = \"{id}\"\nname = \"{id}\"\ntype = \"{key_type}\"\ncompany = \"{company}\"\n\
         hash = \"{}\"\ncreated_at = \"2026-11-01T10:00:00Z\"\n{extra}\n",
        KeyDigest::of(key.as_bytes()).to_text()
    )
}

fn snapshot() -> String {
    let time = |t: i64| crate::snapshot::format_time(t);
    let mut s = String::from(
        "[[workspaces]]\nid = \"ws_marketing\"\ncompany = \"acme\"\n\n\
         [[workspaces]]\nid = \"ws_sales\"\ncompany = \"acme\"\n\n\
         [[workspaces]]\nid = \"ws_research\"\ncompany = \"globex\"\n\n",
    );
    let ws = |w: &str, scopes: &str| format!("workspace = \"{w}\"\nscopes = {scopes}\n");
    for (id, key, ty, company, extra) in [
        (
            "acme_admin",
            ACME_ADMIN,
            "company",
            "acme",
            "scopes = [\"admin\"]".to_string(),
        ),
        (
            "acme_reader",
            ACME_READER,
            "company",
            "acme",
            "scopes = [\"read:all\"]".into(),
        ),
        (
            "acme_writer",
            ACME_WRITER,
            "company",
            "acme",
            "scopes = [\"write:all\"]".into(),
        ),
        (
            "acme_no_scope",
            ACME_NO_SCOPE,
            "company",
            "acme",
            "scopes = []".into(),
        ),
        (
            "globex_admin",
            GLOBEX_ADMIN,
            "company",
            "globex",
            "scopes = [\"admin\"]".into(),
        ),
        (
            "mkt_rw",
            MKT_RW,
            "workspace",
            "acme",
            ws("ws_marketing", r#"["read:all", "write:all"]"#),
        ),
        (
            "mkt_read",
            MKT_READ,
            "workspace",
            "acme",
            ws("ws_marketing", r#"["read:all"]"#),
        ),
        (
            "mkt_write",
            MKT_WRITE,
            "workspace",
            "acme",
            ws("ws_marketing", r#"["write:all"]"#),
        ),
        (
            "mkt_admin",
            MKT_ADMIN,
            "workspace",
            "acme",
            ws("ws_marketing", r#"["admin"]"#),
        ),
        (
            "sales_rw",
            SALES_RW,
            "workspace",
            "acme",
            ws("ws_sales", r#"["read:all", "write:all"]"#),
        ),
        (
            "expired",
            EXPIRED,
            "workspace",
            "acme",
            ws("ws_marketing", r#"["read:all", "write:all"]"#)
                + &format!("expires_at = \"{}\"", time(NOW - 3 * HOUR)),
        ),
        (
            "revoked",
            REVOKED,
            "workspace",
            "acme",
            ws("ws_marketing", r#"["read:all", "write:all"]"#)
                + &format!("revoked_at = \"{}\"", time(NOW - 2 * DAY)),
        ),
        (
            "expired_and_revoked",
            EXPIRED_AND_REVOKED,
            "workspace",
            "acme",
            ws("ws_marketing", r#"["read:all"]"#)
                + &format!(
                    "expires_at = \"{}\"\nrevoked_at = \"{}\"",
                    time(NOW - HOUR),
                    time(NOW - 2 * DAY)
                ),
        ),
        (
            "ends_later",
            ENDS_LATER,
            "workspace",
            "acme",
            ws("ws_marketing", r#"["read:all"]"#)
                + &format!(
                    "expires_at = \"{}\"\nrevoked_at = \"{}\"",
                    time(NOW + HOUR),
                    time(NOW + 1)
                ),
        ),
        (
            "expired_company",
            EXPIRED_COMPANY,
            "company",
            "acme",
            format!("scopes = [\"admin\"]\nexpires_at = \"{}\"", time(NOW - 90)),
        ),
        (
            "company_record_ws_prefix",
            COMPANY_RECORD_WS_PREFIX,
            "company",
            "acme",
            "scopes = [\"admin\"]".into(),
        ),
        (
            "workspace_record_co_prefix",
            WORKSPACE_RECORD_CO_PREFIX,
            "workspace",
            "acme",
            ws("ws_marketing", r#"["admin"]"#),
        ),
        (
            "foreign",
            FOREIGN_PREFIX,
            "company",
            "acme",
            "scopes = [\"admin\"]".into(),
        ),
        (
            "oversized",
            &oversized_key(),
            "workspace",
            "acme",
            ws("ws_marketing", r#"["admin"]"#),
        ),
    ] {
        s.push_str(&key_block(id, key, ty, company, &extra));
    }
    s
}

/// The policy `Gateway::build` makes, through the same builder.
fn policy_from(config_text: &str, snapshot_text: &str) -> Policy {
    let config = Config::parse(Path::new("/etc/keygate/keygate.toml"), config_text)
        .unwrap_or_else(|p| panic!("config refused:\n{p}"));
    let keys = KeyIndex::parse(Path::new("/etc/keygate/keys.toml"), snapshot_text)
        .unwrap_or_else(|p| panic!("snapshot refused:\n{p}"));
    Policy::compile(&config, keys)
}

fn policy() -> Policy {
    policy_from(CONFIG, &snapshot())
}

/// What an allowed request resolved to, owned so it outlives the request.
#[derive(Debug, PartialEq)]
struct Passed {
    route: String,
    key: Option<String>,
    workspace: Option<String>,
}

/// A denial and the name of the route it was matched to, if any.
#[derive(Debug, PartialEq)]
struct Denied {
    route: Option<String>,
    denial: Denial,
}

fn run(
    p: &Policy,
    method: &str,
    path: &str,
    authorization: Authorization<'_>,
    tls: bool,
    now: i64,
) -> Result<Passed, Denied> {
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    let req = Request {
        method: &method,
        path,
        authorization,
        tls,
    };
    let route_name = |i: usize| p.routes[i].name.to_string();
    match decide(&req, p, now) {
        Decision::Allow(a) => {
            if let Some((slot, record)) = a.key {
                assert_eq!(p.keys.record(slot), record, "slot and record agree");
            }
            Ok(Passed {
                route: route_name(a.route),
                key: a.key.map(|(_, r)| r.id().to_string()),
                workspace: a.workspace.map(Cow::into_owned),
            })
        }
        Decision::Deny { route, denial } => Err(Denied {
            route: route.map(route_name),
            denial,
        }),
    }
}

/// A plain-HTTP request with `Authorization: Bearer <key>` at NOW.
fn with_key(p: &Policy, method: &str, path: &str, key: &str) -> Result<Passed, Denied> {
    let header = format!("Bearer {key}");
    run(
        p,
        method,
        path,
        Authorization::One(header.as_bytes()),
        false,
        NOW,
    )
}

fn denial(r: Result<Passed, Denied>) -> Denial {
    match r {
        Ok(p) => panic!("allowed: {p:?}"),
        Err(d) => d.denial,
    }
}

fn passed(r: Result<Passed, Denied>) -> Passed {
    match r {
        Ok(p) => p,
        Err(d) => panic!("denied: {d:?} ({})", d.denial.message()),
    }
}

fn allowed(route: &str, key: Option<&str>, workspace: Option<&str>) -> Passed {
    Passed {
        route: route.into(),
        key: key.map(Into::into),
        workspace: workspace.map(Into::into),
    }
}

fn body_json(d: &Denial) -> serde_json::Value {
    serde_json::from_slice(&d.body()).unwrap()
}

fn assert_body(d: &Denial, status: u16, code: &str, message: &str) {
    assert_eq!(d.status(), status, "{d:?}");
    assert_eq!(d.message(), message, "{d:?}");
    assert_eq!(
        body_json(d),
        serde_json::json!({"code": code, "message": message}),
        "{d:?}"
    );
}

// ---- row 1: path ----

#[test]
fn dot_segment_path_is_400_before_route_lookup() {
    let p = policy();
    for path in [
        "/api/v1/company/../keys/x",
        "/api/v1/company/./x",
        "/api/v1/company/%2e%2E/x",
        "/api/v1/company/.%2e",
        "/api/v1/company/%2E/x",
        "/api/v1/company/a%2Fb",
        "/api/v1/company/a\\b",
        "/api/v1/company/a%5Cb",
        "/api/v1/company/a%00b",
        "/api/v1/company/a\0b",
        "/api/v1/company/%zz",
    ] {
        let r = with_key(&p, "GET", path, ACME_ADMIN);
        assert_eq!(
            r,
            Err(Denied {
                route: None,
                denial: Denial::BadPath
            }),
            "{path:?}"
        );
    }
}

#[test]
fn bad_path_with_no_route_is_400_not_404() {
    let p = policy();
    let d = denial(run(
        &p,
        "GET",
        "/nowhere/../x",
        Authorization::Absent,
        false,
        NOW,
    ));
    assert_eq!(d, Denial::BadPath);
    assert_body(&d, 400, "BAD_REQUEST", "Invalid request path");
    assert_eq!(
        &d.body()[..],
        br#"{"code":"BAD_REQUEST","message":"Invalid request path"}"#
    );
}

#[test]
fn bad_path_wins_over_plain_http_reject_and_missing_token() {
    let mut p = policy();
    p.plain_http = PlainHttp::Reject;
    let d = denial(run(
        &p,
        "GET",
        "/api/v1/company/%2e%2e",
        Authorization::Absent,
        false,
        NOW,
    ));
    assert_eq!(d, Denial::BadPath);
}

// ---- row 2: route ----

#[test]
fn no_route_is_404_with_method_and_path() {
    let p = policy();
    let r = run(&p, "DELETE", "/the/path", Authorization::Absent, false, NOW);
    let d = match r {
        Err(Denied {
            route: None,
            denial,
        }) => denial,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        d,
        Denial::NoRoute {
            method: Method::DELETE,
            path: "/the/path".into()
        }
    );
    assert_body(&d, 404, "NOT_FOUND", "No route for DELETE /the/path");
}

#[test]
fn no_route_wins_over_missing_key_and_plain_http() {
    let mut p = policy();
    p.plain_http = PlainHttp::Reject;
    let d = denial(run(
        &p,
        "GET",
        "/api/v2/x",
        Authorization::Absent,
        false,
        NOW,
    ));
    assert_eq!(d.message(), "No route for GET /api/v2/x");
}

#[test]
fn literal_route_does_not_match_longer_or_trailing_slash_paths() {
    let p = policy();
    for path in ["/healthz/", "/healthz/x", "/healthzz", "/"] {
        let d = denial(run(&p, "GET", path, Authorization::Absent, false, NOW));
        assert_eq!(d.status(), 404, "{path}");
    }
}

// ---- row 3: method ----

#[test]
fn method_not_in_route_is_405_with_allow_value() {
    let p = policy();
    let r = run(
        &p,
        "DELETE",
        "/docs/intro",
        Authorization::Absent,
        false,
        NOW,
    );
    let Err(Denied { route, denial: d }) = r else {
        panic!("{r:?}")
    };
    assert_eq!(route.as_deref(), Some("docs"));
    assert_eq!(
        d,
        Denial::MethodNotAllowed {
            method: Method::DELETE,
            allowed: "GET, HEAD".into()
        }
    );
    assert_body(
        &d,
        405,
        "METHOD_NOT_ALLOWED",
        "Method DELETE is not allowed on this route",
    );
}

#[test]
fn method_check_comes_before_https_and_key_checks() {
    let mut p = policy();
    p.plain_http = PlainHttp::Reject;
    // No key, plain HTTP, a read-only key: the method answers first.
    let d = denial(run(
        &p,
        "PATCH",
        "/api/v1/workspaces/ws_marketing/records/1",
        Authorization::Absent,
        false,
        NOW,
    ));
    assert_eq!(
        d,
        Denial::MethodNotAllowed {
            method: Method::PATCH,
            allowed: "GET, POST, PUT, DELETE".into()
        }
    );
}

#[test]
fn listed_methods_pass_the_method_check() {
    let p = policy();
    for m in ["GET", "HEAD"] {
        assert_eq!(
            passed(run(&p, m, "/docs/a/b", Authorization::Absent, false, NOW)),
            allowed("docs", None, None)
        );
    }
}

// ---- row 4: plain HTTP ----

#[test]
fn plain_http_reject_is_403_before_key_checks() {
    let mut p = policy();
    p.plain_http = PlainHttp::Reject;
    let r = run(
        &p,
        "GET",
        "/api/v1/company/workspaces",
        Authorization::Absent,
        false,
        NOW,
    );
    assert_eq!(
        r,
        Err(Denied {
            route: Some("company".into()),
            denial: Denial::HttpsRequired
        })
    );
    assert_body(
        &Denial::HttpsRequired,
        403,
        "FORBIDDEN",
        "HTTPS is required",
    );
    // Even a good key on a public route is refused over plain HTTP.
    let header = format!("Bearer {ACME_ADMIN}");
    let d = denial(run(
        &p,
        "GET",
        "/healthz",
        Authorization::One(header.as_bytes()),
        false,
        NOW,
    ));
    assert_eq!(d, Denial::HttpsRequired);
}

#[test]
fn tls_requests_pass_plain_http_reject() {
    let mut p = policy();
    p.plain_http = PlainHttp::Reject;
    let d = denial(run(
        &p,
        "GET",
        "/api/v1/company/workspaces",
        Authorization::Absent,
        true,
        NOW,
    ));
    assert_eq!(d, Denial::MissingToken);
    let header = format!("Bearer {ACME_ADMIN}");
    assert_eq!(
        passed(run(
            &p,
            "GET",
            "/api/v1/company/workspaces",
            Authorization::One(header.as_bytes()),
            true,
            NOW
        )),
        allowed("company", Some("acme_admin"), None)
    );
}

#[test]
fn plain_http_allowed_by_default() {
    let p = policy();
    assert_eq!(p.plain_http, PlainHttp::Allow);
    assert!(with_key(&p, "GET", "/api/v1/company/x", ACME_ADMIN).is_ok());
}

// ---- auth = "none" ----

#[test]
fn auth_none_route_skips_every_key_check() {
    let p = policy();
    let bad = format!("Bearer {REVOKED}");
    for auth in [
        Authorization::Absent,
        Authorization::Many,
        Authorization::One(b"Basic dXNlcjpwYXNz"),
        Authorization::One(b"Bearer ord_unknown000000000000000000000000000"),
        Authorization::One(bad.as_bytes()),
        Authorization::One(b"Bearer \xff\xfe"),
    ] {
        assert_eq!(
            passed(run(&p, "POST", "/healthz", auth, false, NOW)),
            allowed("health", None, None),
            "{auth:?}"
        );
    }
}

// ---- row 5: missing token ----

#[test]
fn missing_token_is_401() {
    let p = policy();
    let path = "/api/v1/company/workspaces";
    for auth in [
        Authorization::Absent,
        Authorization::One(b""),
        Authorization::One(b"Bearer"),
        Authorization::One(b"Bearer    "),
        Authorization::One(b"Basic dXNlcjpwYXNz"),
        Authorization::One(b"Token ord_c_abc"),
        Authorization::One(b"Bearer:ord_c_abc"),
        Authorization::One(b"\xffBearer ord_c_abc"),
    ] {
        let r = run(&p, "GET", path, auth, false, NOW);
        assert_eq!(
            r,
            Err(Denied {
                route: Some("company".into()),
                denial: Denial::MissingToken
            }),
            "{auth:?}"
        );
    }
    let d = Denial::MissingToken;
    assert_body(&d, 401, "UNAUTHORIZED", "Missing bearer token");
    assert_eq!(d.www_authenticate(), Some("Bearer"));
}

#[test]
fn bearer_is_case_insensitive_and_token_ends_at_whitespace() {
    let p = policy();
    for header in [
        format!("bearer {ACME_ADMIN}"),
        format!("BEARER   {ACME_ADMIN}"),
        format!("Bearer\t{ACME_ADMIN}"),
        format!("Bearer {ACME_ADMIN} trailing words"),
    ] {
        assert_eq!(
            passed(run(
                &p,
                "GET",
                "/api/v1/company",
                Authorization::One(header.as_bytes()),
                false,
                NOW
            )),
            allowed("company", Some("acme_admin"), None),
            "{header:?}"
        );
    }
}

// ---- row 6: invalid key ----

#[test]
fn unknown_hash_is_invalid_key() {
    let p = policy();
    let r = with_key(
        &p,
        "GET",
        "/api/v1/company",
        "ord_c_NotInTheSnapshot0000000000000000000",
    );
    assert_eq!(
        r,
        Err(Denied {
            route: Some("company".into()),
            denial: Denial::InvalidKey
        })
    );
    let d = Denial::InvalidKey;
    assert_body(&d, 401, "UNAUTHORIZED", "Invalid or unauthorized API key");
    assert_eq!(d.www_authenticate(), Some("Bearer"));
}

#[test]
fn unknown_prefix_is_invalid_even_when_its_hash_is_listed() {
    let p = policy();
    assert_eq!(
        denial(with_key(&p, "GET", "/api/v1/company", FOREIGN_PREFIX)),
        Denial::InvalidKey
    );
    // A bare prefix is not a key either.
    assert_eq!(
        denial(with_key(&p, "GET", "/api/v1/company", "ord_c_")),
        Denial::InvalidKey
    );
}

#[test]
fn oversized_token_is_invalid_even_when_its_hash_is_listed() {
    let p = policy();
    let key = oversized_key();
    assert_eq!(
        denial(with_key(&p, "GET", "/api/v1/profiles/me", &key)),
        Denial::InvalidKey
    );
}

#[test]
fn company_record_presented_with_workspace_prefix_is_invalid_key() {
    let p = policy();
    // The record grants admin on company routes, but the key text says
    // "workspace": the disagreement refuses it outright.
    assert_eq!(
        denial(with_key(
            &p,
            "GET",
            "/api/v1/company",
            COMPANY_RECORD_WS_PREFIX
        )),
        Denial::InvalidKey
    );
    assert_eq!(
        denial(with_key(
            &p,
            "GET",
            "/api/v1/workspaces/ws_marketing/posts",
            COMPANY_RECORD_WS_PREFIX
        )),
        Denial::InvalidKey
    );
}

#[test]
fn workspace_record_presented_with_company_prefix_is_invalid_key() {
    let p = policy();
    assert_eq!(
        denial(with_key(
            &p,
            "GET",
            "/api/v1/profiles/me",
            WORKSPACE_RECORD_CO_PREFIX
        )),
        Denial::InvalidKey
    );
}

#[test]
fn two_authorization_headers_are_invalid_key() {
    let p = policy();
    let r = run(
        &p,
        "GET",
        "/api/v1/company",
        Authorization::Many,
        false,
        NOW,
    );
    assert_eq!(
        r,
        Err(Denied {
            route: Some("company".into()),
            denial: Denial::InvalidKey
        })
    );
}

#[test]
fn non_utf8_token_is_invalid_key() {
    let p = policy();
    for header in [
        &b"Bearer ord_c_\xff\xfe\xfd000000000000000000000000000000"[..],
        &b"Bearer \xc3\x28abc"[..],
    ] {
        assert_eq!(
            denial(run(
                &p,
                "GET",
                "/api/v1/company",
                Authorization::One(header),
                false,
                NOW
            )),
            Denial::InvalidKey,
            "{header:?}"
        );
    }
}

#[test]
fn invalid_key_comes_before_expiry() {
    let p = policy();
    // The expired key's text with one character changed is just unknown.
    let tampered = EXPIRED.replace("Expired", "Expirex");
    assert_eq!(
        denial(with_key(&p, "GET", "/api/v1/profiles/me", &tampered)),
        Denial::InvalidKey
    );
}

// ---- row 7: expired ----

#[test]
fn expired_key_is_401_with_age() {
    let p = policy();
    let r = with_key(&p, "GET", "/api/v1/profiles/me", EXPIRED);
    assert_eq!(
        r,
        Err(Denied {
            route: Some("profiles".into()),
            denial: Denial::Expired { ago: 3 * 3600 }
        })
    );
    let d = Denial::Expired { ago: 3 * 3600 };
    assert_body(&d, 401, "UNAUTHORIZED", "API key expired 3 hours ago");
    assert_eq!(d.www_authenticate(), Some("Bearer"));
}

#[test]
fn expired_and_revoked_key_gets_the_expired_401() {
    let p = policy();
    let d = denial(with_key(
        &p,
        "GET",
        "/api/v1/profiles/me",
        EXPIRED_AND_REVOKED,
    ));
    assert_eq!(d, Denial::Expired { ago: 3600 });
    assert_body(&d, 401, "UNAUTHORIZED", "API key expired 1 hour ago");
}

#[test]
fn expiry_comes_before_key_type_workspace_and_scope() {
    let p = policy();
    // A workspace key on a company route, another workspace, no write scope:
    // the expiry answers.
    for (method, path, key) in [
        ("GET", "/api/v1/company/x", EXPIRED),
        ("POST", "/api/v1/workspaces/ws_sales/posts", EXPIRED),
        ("GET", "/api/v1/profiles/me", EXPIRED_COMPANY),
        (
            "GET",
            "/api/v1/company/workspaces/ws_research/x",
            EXPIRED_COMPANY,
        ),
    ] {
        assert!(
            matches!(
                denial(with_key(&p, method, path, key)),
                Denial::Expired { .. }
            ),
            "{method} {path}"
        );
    }
}

#[test]
fn key_expires_at_its_instant() {
    let p = policy();
    let header = format!("Bearer {EXPIRED}");
    let at = |now| {
        run(
            &p,
            "GET",
            "/api/v1/profiles/me",
            Authorization::One(header.as_bytes()),
            false,
            now,
        )
    };
    let expires = NOW - 3 * HOUR;
    assert_eq!(
        passed(at(expires - 1)),
        allowed("profiles", Some("expired"), Some("ws_marketing"))
    );
    assert_eq!(denial(at(expires)), Denial::Expired { ago: 0 });
}

#[test]
fn expiry_age_uses_the_largest_whole_unit() {
    let p = policy();
    let header = format!("Bearer {EXPIRED}");
    let expires = NOW - 3 * HOUR;
    for (after, text) in [
        (1, "API key expired 1 second ago"),
        (59, "API key expired 59 seconds ago"),
        (60, "API key expired 1 minute ago"),
        (150, "API key expired 2 minutes ago"),
        (HOUR, "API key expired 1 hour ago"),
        (3 * HOUR + 59 * 60, "API key expired 3 hours ago"),
        (DAY - 1, "API key expired 23 hours ago"),
        (DAY, "API key expired 1 day ago"),
        (2 * DAY + 5 * HOUR, "API key expired 2 days ago"),
    ] {
        let d = denial(run(
            &p,
            "GET",
            "/api/v1/profiles/me",
            Authorization::One(header.as_bytes()),
            false,
            expires + after,
        ));
        assert_eq!(d.message(), text);
        assert_eq!(body_json(&d)["message"], text);
    }
}

// ---- row 8: revoked ----

#[test]
fn revoked_key_is_403_with_age() {
    let p = policy();
    let r = with_key(&p, "GET", "/api/v1/profiles/me", REVOKED);
    assert_eq!(
        r,
        Err(Denied {
            route: Some("profiles".into()),
            denial: Denial::Revoked { ago: 2 * 86400 }
        })
    );
    let d = Denial::Revoked { ago: 2 * 86400 };
    assert_body(&d, 403, "FORBIDDEN", "API key was revoked 2 days ago");
    assert_eq!(d.www_authenticate(), None);
}

#[test]
fn revocation_age_uses_the_largest_whole_unit() {
    let p = policy();
    let header = format!("Bearer {REVOKED}");
    let revoked = NOW - 2 * DAY;
    for (after, text) in [
        (0, "API key was revoked 0 seconds ago"),
        (1, "API key was revoked 1 second ago"),
        (45, "API key was revoked 45 seconds ago"),
        (61, "API key was revoked 1 minute ago"),
        (3 * HOUR, "API key was revoked 3 hours ago"),
        (DAY + 1, "API key was revoked 1 day ago"),
    ] {
        let d = denial(run(
            &p,
            "GET",
            "/api/v1/profiles/me",
            Authorization::One(header.as_bytes()),
            false,
            revoked + after,
        ));
        assert_eq!(d.message(), text);
    }
    // Before its revocation instant the key works.
    let r = run(
        &p,
        "GET",
        "/api/v1/profiles/me",
        Authorization::One(header.as_bytes()),
        false,
        revoked - 1,
    );
    assert_eq!(
        passed(r),
        allowed("profiles", Some("revoked"), Some("ws_marketing"))
    );
}

#[test]
fn revocation_comes_before_key_type_workspace_and_scope() {
    let p = policy();
    for (method, path) in [
        ("GET", "/api/v1/company/x"),
        ("GET", "/api/v1/workspaces/ws_sales/posts"),
        ("DELETE", "/api/v1/profiles/me"),
    ] {
        assert_eq!(
            denial(with_key(&p, method, path, REVOKED)),
            Denial::Revoked { ago: 2 * 86400 },
            "{method} {path}"
        );
    }
}

#[test]
fn future_revocation_and_expiry_do_not_deny() {
    let p = policy();
    assert_eq!(
        passed(with_key(&p, "GET", "/api/v1/profiles/me", ENDS_LATER)),
        allowed("profiles", Some("ends_later"), Some("ws_marketing"))
    );
}

// ---- rows 9-10: key type ----

#[test]
fn workspace_key_on_company_route_is_403() {
    let p = policy();
    // Even an admin workspace key, and before any scope or workspace check.
    for (method, path, key) in [
        ("GET", "/api/v1/company/workspaces", MKT_RW),
        ("POST", "/api/v1/company/keys/new", MKT_ADMIN),
        ("GET", "/api/v1/company/workspaces/ws_sales/x", MKT_RW),
        (
            "GET",
            "/api/v1/company/workspaces/ws_marketing/x",
            MKT_WRITE,
        ),
    ] {
        let d = denial(with_key(&p, method, path, key));
        assert_eq!(d, Denial::NeedsCompanyKey, "{method} {path}");
    }
    assert_body(
        &Denial::NeedsCompanyKey,
        403,
        "FORBIDDEN",
        "This endpoint requires a company API key. Use a company-scoped API key to access company-level resources.",
    );
}

#[test]
fn company_key_on_workspace_route_is_403() {
    let p = policy();
    for (method, path, key) in [
        ("GET", "/api/v1/profiles/me", ACME_ADMIN),
        (
            "GET",
            "/api/v1/workspaces/ws_marketing/records/1",
            ACME_ADMIN,
        ),
        // Another company's workspace and no scope: the key type answers first.
        (
            "POST",
            "/api/v1/workspaces/ws_marketing/records",
            GLOBEX_ADMIN,
        ),
        (
            "POST",
            "/api/v1/workspaces/ws_marketing/records",
            ACME_NO_SCOPE,
        ),
    ] {
        let d = denial(with_key(&p, method, path, key));
        assert_eq!(d, Denial::NeedsWorkspaceKey, "{method} {path}");
    }
    assert_body(
        &Denial::NeedsWorkspaceKey,
        403,
        "FORBIDDEN",
        "This endpoint requires a workspace API key. Use a workspace-scoped API key to access workspace resources.",
    );
}

#[test]
fn any_route_accepts_both_key_types() {
    let p = policy();
    assert_eq!(
        passed(with_key(&p, "GET", "/api/v1/items/7", ACME_READER)),
        allowed("item", Some("acme_reader"), None)
    );
    assert_eq!(
        passed(with_key(&p, "GET", "/api/v1/items/7", MKT_READ)),
        allowed("item", Some("mkt_read"), Some("ws_marketing"))
    );
}

// ---- row 11: workspace ----

#[test]
fn workspace_key_on_another_workspace_is_403() {
    let p = policy();
    let r = with_key(&p, "GET", "/api/v1/workspaces/ws_sales/posts/1", MKT_RW);
    assert_eq!(
        r,
        Err(Denied {
            route: Some("posts".into()),
            denial: Denial::Workspace {
                workspace: "ws_sales".into()
            }
        })
    );
    let d = denial(r);
    assert_body(
        &d,
        403,
        "FORBIDDEN",
        "API key does not have access to workspace ws_sales",
    );
    // Same company makes no difference for a workspace key; nor does admin.
    assert_eq!(
        denial(with_key(
            &p,
            "GET",
            "/api/v1/workspaces/ws_marketing/records/1",
            SALES_RW
        )),
        Denial::Workspace {
            workspace: "ws_marketing".into()
        }
    );
    assert_eq!(
        denial(with_key(
            &p,
            "GET",
            "/api/v1/workspaces/ws_sales/posts",
            MKT_ADMIN
        )),
        Denial::Workspace {
            workspace: "ws_sales".into()
        }
    );
}

#[test]
fn workspace_key_on_unknown_workspace_is_403() {
    let p = policy();
    assert_eq!(
        denial(with_key(&p, "GET", "/api/v1/workspaces/ws_x/posts", MKT_RW)),
        Denial::Workspace {
            workspace: "ws_x".into()
        }
    );
}

#[test]
fn company_key_on_workspace_of_another_company_is_403() {
    let p = policy();
    for path in [
        "/api/v1/workspaces/ws_research/posts/1",
        "/api/v1/company/workspaces/ws_research/settings",
    ] {
        assert_eq!(
            denial(with_key(&p, "GET", path, ACME_ADMIN)),
            Denial::Workspace {
                workspace: "ws_research".into()
            },
            "{path}"
        );
    }
    // The first matching route binds the workspace: had the broader "company"
    // route been tried first, globex's admin key would pass here.
    assert_eq!(
        denial(with_key(
            &p,
            "GET",
            "/api/v1/company/workspaces/ws_marketing/x",
            GLOBEX_ADMIN
        )),
        Denial::Workspace {
            workspace: "ws_marketing".into()
        }
    );
}

#[test]
fn company_key_on_unknown_workspace_is_403() {
    let p = policy();
    let d = denial(with_key(
        &p,
        "GET",
        "/api/v1/company/workspaces/ws_x/settings",
        ACME_ADMIN,
    ));
    assert_eq!(
        d,
        Denial::Workspace {
            workspace: "ws_x".into()
        }
    );
    assert_eq!(
        d.message(),
        "API key does not have access to workspace ws_x"
    );
}

#[test]
fn workspace_check_comes_before_scope() {
    let p = policy();
    // Write-only key reading another workspace; no-scope key on a foreign one.
    assert_eq!(
        denial(with_key(
            &p,
            "GET",
            "/api/v1/workspaces/ws_sales/posts",
            MKT_WRITE
        )),
        Denial::Workspace {
            workspace: "ws_sales".into()
        }
    );
    assert_eq!(
        denial(with_key(
            &p,
            "POST",
            "/api/v1/workspaces/ws_research/posts",
            ACME_NO_SCOPE
        )),
        Denial::Workspace {
            workspace: "ws_research".into()
        }
    );
}

#[test]
fn percent_encoded_workspace_is_compared_decoded() {
    let p = policy();
    assert_eq!(
        passed(with_key(
            &p,
            "GET",
            "/api/v1/workspaces/ws%5Fmarketing/posts",
            MKT_RW
        )),
        allowed("posts", Some("mkt_rw"), Some("ws_marketing"))
    );
    assert_eq!(
        denial(with_key(
            &p,
            "GET",
            "/api/v1/workspaces/ws%5Fsales/posts",
            MKT_RW
        )),
        Denial::Workspace {
            workspace: "ws_sales".into()
        }
    );
}

// ---- row 12: scope ----

#[test]
fn missing_write_scope_is_403_with_scope_in_header() {
    let p = policy();
    let r = with_key(&p, "POST", "/api/v1/company/workspaces", ACME_READER);
    assert_eq!(
        r,
        Err(Denied {
            route: Some("company".into()),
            denial: Denial::MissingScope(Scope::Write)
        })
    );
    let d = Denial::MissingScope(Scope::Write);
    assert_body(
        &d,
        403,
        "FORBIDDEN",
        "API key is missing the required scope: write:all",
    );
    assert_eq!(
        d.www_authenticate(),
        Some(r#"Bearer error="insufficient_scope", scope="write:all""#)
    );
}

#[test]
fn auto_scope_needs_read_for_get_head_options() {
    let p = policy();
    let path = "/api/v1/workspaces/ws_marketing/posts/1";
    for m in ["GET", "HEAD", "OPTIONS"] {
        assert_eq!(
            passed(with_key(&p, m, path, MKT_READ)),
            allowed("posts", Some("mkt_read"), Some("ws_marketing")),
            "{m}"
        );
        assert_eq!(
            denial(with_key(&p, m, path, MKT_WRITE)),
            Denial::MissingScope(Scope::Read),
            "{m}: write does not grant read"
        );
    }
    assert_eq!(
        Denial::MissingScope(Scope::Read).message(),
        "API key is missing the required scope: read:all"
    );
}

#[test]
fn auto_scope_needs_write_for_other_methods() {
    let p = policy();
    let path = "/api/v1/workspaces/ws_marketing/posts/1";
    for m in ["POST", "PUT", "PATCH", "DELETE", "PURGE"] {
        assert_eq!(
            passed(with_key(&p, m, path, MKT_WRITE)),
            allowed("posts", Some("mkt_write"), Some("ws_marketing")),
            "{m}"
        );
        assert_eq!(
            denial(with_key(&p, m, path, MKT_READ)),
            Denial::MissingScope(Scope::Write),
            "{m}"
        );
    }
}

#[test]
fn admin_grants_read_and_write() {
    let p = policy();
    for m in ["GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"] {
        assert_eq!(
            passed(with_key(&p, m, "/api/v1/company/workspaces", ACME_ADMIN)),
            allowed("company", Some("acme_admin"), None),
            "{m}"
        );
        assert_eq!(
            passed(with_key(&p, m, "/api/v1/profiles/me", MKT_ADMIN)),
            allowed("profiles", Some("mkt_admin"), Some("ws_marketing")),
            "{m}"
        );
    }
}

#[test]
fn admin_route_needs_admin_whatever_the_method() {
    let p = policy();
    for (m, key) in [
        ("GET", ACME_READER),
        ("POST", ACME_WRITER),
        ("GET", ACME_WRITER),
    ] {
        let d = denial(with_key(&p, m, "/api/v1/company/keys", key));
        assert_eq!(d, Denial::MissingScope(Scope::Admin), "{m}");
        assert_eq!(d.message(), "API key is missing the required scope: admin");
        assert_eq!(
            d.www_authenticate(),
            Some(r#"Bearer error="insufficient_scope", scope="admin""#)
        );
    }
    assert_eq!(
        passed(with_key(
            &p,
            "DELETE",
            "/api/v1/company/keys/k1",
            ACME_ADMIN
        )),
        allowed("company_keys", Some("acme_admin"), None)
    );
}

#[test]
fn fixed_scope_route_ignores_the_method() {
    let p = policy();
    // "item" requires read:all even for POST; "item_meta" write:all even for GET.
    assert_eq!(
        passed(with_key(&p, "POST", "/api/v1/items/1", MKT_READ)).route,
        "item"
    );
    assert_eq!(
        denial(with_key(&p, "POST", "/api/v1/items/1", MKT_WRITE)),
        Denial::MissingScope(Scope::Read)
    );
    assert_eq!(
        passed(with_key(&p, "GET", "/api/v1/items/1/meta", MKT_WRITE)).route,
        "item_meta"
    );
    assert_eq!(
        denial(with_key(&p, "GET", "/api/v1/items/1/meta", MKT_READ)),
        Denial::MissingScope(Scope::Write)
    );
}

#[test]
fn scope_none_route_needs_only_a_valid_key() {
    let p = policy();
    assert_eq!(
        passed(with_key(&p, "DELETE", "/api/v1/open/x", ACME_NO_SCOPE)),
        allowed("open", Some("acme_no_scope"), None)
    );
    // Still a key route: no key is still a 401.
    assert_eq!(
        denial(run(
            &p,
            "GET",
            "/api/v1/open/x",
            Authorization::Absent,
            false,
            NOW
        )),
        Denial::MissingToken
    );
}

// ---- patterns and first match ----

#[test]
fn star_matches_exactly_one_non_empty_segment() {
    let p = policy();
    assert_eq!(
        passed(with_key(&p, "GET", "/api/v1/items/42", ACME_READER)).route,
        "item"
    );
    assert_eq!(
        passed(with_key(&p, "POST", "/api/v1/items/42/meta", ACME_WRITER)).route,
        "item_meta"
    );
    for path in [
        "/api/v1/items",
        "/api/v1/items/",
        "/api/v1/items//meta",
        "/api/v1/items/42/other",
        "/api/v1/items/42/meta/x",
    ] {
        assert_eq!(
            denial(with_key(&p, "GET", path, ACME_READER)).status(),
            404,
            "{path}"
        );
    }
}

#[test]
fn double_star_matches_zero_or_more_segments() {
    let p = policy();
    for path in [
        "/api/v1/company",
        "/api/v1/company/",
        "/api/v1/company/a",
        "/api/v1/company/a/b/c",
        "/docs",
    ] {
        assert!(
            with_key(&p, "GET", path, ACME_ADMIN).is_ok(),
            "{path} should match a ** route"
        );
    }
    assert_eq!(
        denial(with_key(&p, "GET", "/api/v1/companyx", ACME_ADMIN)).status(),
        404
    );
}

#[test]
fn first_matching_route_wins() {
    let p = policy();
    // "/api/v1/company/keys/..." also matches "company", which only needs read.
    assert_eq!(
        denial(with_key(
            &p,
            "GET",
            "/api/v1/company/keys/list",
            ACME_READER
        )),
        Denial::MissingScope(Scope::Admin)
    );
    assert_eq!(
        passed(with_key(&p, "GET", "/api/v1/company/keys/list", ACME_ADMIN)).route,
        "company_keys"
    );
    assert_eq!(
        passed(with_key(
            &p,
            "GET",
            "/api/v1/company/workspaces/ws_sales/x",
            ACME_READER
        )),
        allowed("company_workspace", Some("acme_reader"), Some("ws_sales"))
    );
    // No workspace segment after "workspaces": the broader route takes it.
    assert_eq!(
        passed(with_key(
            &p,
            "GET",
            "/api/v1/company/workspaces",
            ACME_READER
        )),
        allowed("company", Some("acme_reader"), None)
    );
}

#[test]
fn route_order_is_what_decides() {
    // The same two patterns in the other order: the broad one shadows the other.
    let config = CONFIG.replace(
        "[[routes]]\nname = \"company_keys\"\npath = \"/api/v1/company/keys/**\"",
        "[[routes]]\nname = \"company_first\"\npath = \"/api/v1/company/**\"\nupstream = \"api\"\nauth = \"company\"\nscope = \"auto\"\n\n\
         [[routes]]\nname = \"company_keys\"\npath = \"/api/v1/company/keys/**\"",
    );
    let p = policy_from(&config, &snapshot());
    assert_eq!(
        passed(with_key(
            &p,
            "GET",
            "/api/v1/company/keys/list",
            ACME_READER
        )),
        allowed("company_first", Some("acme_reader"), None)
    );
}

#[test]
fn literal_segments_compare_percent_decoded() {
    let p = policy();
    // Literal segments compare percent-decoded.
    assert_eq!(
        passed(with_key(&p, "GET", "/api/v1/%63ompany/x", ACME_ADMIN)).route,
        "company"
    );
}

// ---- what Allow carries ----

#[test]
fn allow_carries_the_keys_own_workspace_for_workspace_keys() {
    let p = policy();
    let header = format!("Bearer {MKT_RW}");
    let method = Method::GET;
    let req = Request {
        method: &method,
        path: "/api/v1/profiles/me",
        authorization: Authorization::One(header.as_bytes()),
        tls: false,
    };
    let Decision::Allow(a) = decide(&req, &p, NOW) else {
        panic!("denied")
    };
    assert_eq!(&*p.routes[a.route].name, "profiles");
    let (slot, record) = a.key.unwrap();
    assert_eq!(record.id(), "mkt_rw");
    assert_eq!(p.keys.record(slot), record);
    assert_eq!(a.workspace.as_deref(), Some("ws_marketing"));
    assert!(matches!(a.workspace, Some(Cow::Borrowed(_))));
}

#[test]
fn allow_carries_the_bound_workspace_for_company_keys() {
    let p = policy();
    assert_eq!(
        passed(with_key(
            &p,
            "POST",
            "/api/v1/workspaces/ws_sales/posts/9",
            ACME_WRITER
        )),
        allowed("posts", Some("acme_writer"), Some("ws_sales"))
    );
    assert_eq!(
        passed(with_key(
            &p,
            "GET",
            "/api/v1/company/workspaces/ws_marketing",
            ACME_READER
        )),
        allowed(
            "company_workspace",
            Some("acme_reader"),
            Some("ws_marketing")
        )
    );
    // No {workspace} in the route: a company key reaches no workspace.
    assert_eq!(
        passed(with_key(
            &p,
            "GET",
            "/api/v1/company/workspaces",
            ACME_READER
        ))
        .workspace,
        None
    );
}

#[test]
fn allow_carries_the_workspace_for_workspace_keys_on_bound_routes() {
    let p = policy();
    assert_eq!(
        passed(with_key(
            &p,
            "PUT",
            "/api/v1/workspaces/ws_sales/records/3",
            SALES_RW
        )),
        allowed("records", Some("sales_rw"), Some("ws_sales"))
    );
}

#[test]
fn denials_after_route_match_name_the_route() {
    let p = policy();
    let cases: Vec<(&str, &str, Option<&str>, &str)> = vec![
        ("DELETE", "/docs/x", None, "docs"),
        ("GET", "/api/v1/profiles/me", None, "profiles"),
        (
            "GET",
            "/api/v1/profiles/me",
            Some("ord_nope0000000000000000000000000000000"),
            "profiles",
        ),
        ("GET", "/api/v1/profiles/me", Some(EXPIRED), "profiles"),
        ("GET", "/api/v1/profiles/me", Some(REVOKED), "profiles"),
        ("GET", "/api/v1/company", Some(MKT_RW), "company"),
        ("GET", "/api/v1/profiles/me", Some(ACME_ADMIN), "profiles"),
        (
            "GET",
            "/api/v1/workspaces/ws_sales/posts",
            Some(MKT_RW),
            "posts",
        ),
        (
            "GET",
            "/api/v1/workspaces/ws_marketing/posts",
            Some(MKT_WRITE),
            "posts",
        ),
    ];
    for (m, path, key, route) in cases {
        let header = key.map(|k| format!("Bearer {k}"));
        let auth = match &header {
            Some(h) => Authorization::One(h.as_bytes()),
            None => Authorization::Absent,
        };
        let r = run(&p, m, path, auth, false, NOW);
        match r {
            Err(Denied { route: Some(r), .. }) => assert_eq!(r, route, "{m} {path}"),
            other => panic!("{m} {path}: {other:?}"),
        }
    }
}

#[test]
fn custom_prefixes_decide_key_types() {
    let config =
        format!("{CONFIG}\n[keys]\ncompany_prefix = \"acme_c_\"\nworkspace_prefix = \"acme_w_\"\n");
    let co = "acme_c_Company0000000000000000000000000000";
    let ws = "acme_w_Workspace00000000000000000000000000";
    let snap = format!(
        "[[workspaces]]\nid = \"ws_a\"\ncompany = \"acme\"\n\n{}{}",
        key_block("co", co, "company", "acme", "scopes = [\"admin\"]"),
        key_block(
            "ws",
            ws,
            "workspace",
            "acme",
            "workspace = \"ws_a\"\nscopes = [\"admin\"]"
        ),
    );
    let p = policy_from(&config, &snap);
    assert_eq!(
        passed(with_key(&p, "GET", "/api/v1/company/x", co))
            .key
            .as_deref(),
        Some("co")
    );
    assert_eq!(
        passed(with_key(&p, "GET", "/api/v1/profiles/me", ws))
            .workspace
            .as_deref(),
        Some("ws_a")
    );
    // The default prefixes mean nothing here.
    assert_eq!(
        denial(with_key(&p, "GET", "/api/v1/company/x", ACME_ADMIN)),
        Denial::InvalidKey
    );
}

// ---- shadow routes (CONTRACT §8): every row's twin ----

mod shadow {
    use super::*;
    use crate::model::denial::{DenialReason, ShadowReason};

    /// CONFIG with every keyed route in shadow mode.
    fn shadow_policy() -> Policy {
        let config = CONFIG
            .replace(
                "auth = \"company\"\n",
                "auth = \"company\"\nenforce = \"shadow\"\n",
            )
            .replace(
                "auth = \"workspace\"\n",
                "auth = \"workspace\"\nenforce = \"shadow\"\n",
            )
            .replace("auth = \"any\"\n", "auth = \"any\"\nenforce = \"shadow\"\n");
        policy_from(&config, &snapshot())
    }

    /// What a shadow route made of a request: the route, the key it names
    /// (when one authenticated) and the reason told to the upstream.
    #[derive(Debug, PartialEq)]
    struct Told {
        route: String,
        key: Option<String>,
        workspace: Option<String>,
        shadow: Option<ShadowReason>,
    }

    fn decide_on(
        p: &Policy,
        method: &str,
        path: &str,
        key: Option<&str>,
        tls: bool,
    ) -> Result<Told, Denial> {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let header = key.map(|k| format!("Bearer {k}"));
        let req = Request {
            method: &method,
            path,
            authorization: match &header {
                Some(h) => Authorization::One(h.as_bytes()),
                None => Authorization::Absent,
            },
            tls,
        };
        match decide(&req, p, NOW) {
            Decision::Allow(a) => Ok(Told {
                route: p.routes[a.route].name.to_string(),
                key: a.key.map(|(_, k)| k.id().to_string()),
                workspace: a.workspace.map(Cow::into_owned),
                shadow: a.shadow,
            }),
            Decision::Deny { denial, .. } => Err(denial),
        }
    }

    /// One contract row: the request, what an enforced route answers, and
    /// the key a shadow route still names (rows 9-12, and row 4 with a good key).
    struct Row {
        row: u8,
        method: &'static str,
        path: &'static str,
        key: Option<&'static str>,
        reject_plain: bool,
        denial: Denial,
        names_key: Option<&'static str>,
    }

    fn rows() -> Vec<Row> {
        let r = |row, method, path, key, denial, names_key| Row {
            row,
            method,
            path,
            key,
            reject_plain: false,
            denial,
            names_key,
        };
        vec![
            r(
                1,
                "GET",
                "/api/v1/company/../x",
                Some(ACME_ADMIN),
                Denial::BadPath,
                None,
            ),
            r(
                2,
                "GET",
                "/nowhere",
                Some(ACME_ADMIN),
                Denial::NoRoute {
                    method: Method::GET,
                    path: "/nowhere".into(),
                },
                None,
            ),
            r(
                3,
                "PATCH",
                "/api/v1/workspaces/ws_marketing/records/1",
                Some(MKT_RW),
                Denial::MethodNotAllowed {
                    method: Method::PATCH,
                    allowed: "GET, POST, PUT, DELETE".into(),
                },
                None,
            ),
            Row {
                reject_plain: true,
                ..r(
                    4,
                    "GET",
                    "/api/v1/company/x",
                    Some(ACME_ADMIN),
                    Denial::HttpsRequired,
                    Some("acme_admin"),
                )
            },
            Row {
                reject_plain: true,
                ..r(
                    4,
                    "GET",
                    "/api/v1/company/x",
                    None,
                    Denial::HttpsRequired,
                    None,
                )
            },
            r(
                5,
                "GET",
                "/api/v1/company/x",
                None,
                Denial::MissingToken,
                None,
            ),
            r(
                6,
                "GET",
                "/api/v1/company/x",
                Some("ord_c_Unknown000000000000000000000000000"),
                Denial::InvalidKey,
                None,
            ),
            r(
                7,
                "GET",
                "/api/v1/workspaces/ws_marketing/posts/1",
                Some(EXPIRED),
                Denial::Expired {
                    ago: 3 * HOUR as u64,
                },
                None,
            ),
            r(
                8,
                "GET",
                "/api/v1/workspaces/ws_marketing/posts/1",
                Some(REVOKED),
                Denial::Revoked {
                    ago: 2 * DAY as u64,
                },
                None,
            ),
            r(
                9,
                "GET",
                "/api/v1/company/x",
                Some(MKT_RW),
                Denial::NeedsCompanyKey,
                Some("mkt_rw"),
            ),
            r(
                10,
                "GET",
                "/api/v1/profiles/me",
                Some(ACME_ADMIN),
                Denial::NeedsWorkspaceKey,
                Some("acme_admin"),
            ),
            r(
                11,
                "GET",
                "/api/v1/workspaces/ws_sales/posts/1",
                Some(MKT_RW),
                Denial::Workspace {
                    workspace: "ws_sales".into(),
                },
                Some("mkt_rw"),
            ),
            r(
                12,
                "POST",
                "/api/v1/workspaces/ws_marketing/posts/1",
                Some(MKT_READ),
                Denial::MissingScope(crate::model::scope::Scope::Write),
                Some("mkt_read"),
            ),
        ]
    }

    #[test]
    fn each_row_answers_when_enforced_and_is_told_upstream_in_shadow() {
        let (mut on, mut shadow) = (policy(), shadow_policy());
        for row in rows() {
            let plain = if row.reject_plain {
                PlainHttp::Reject
            } else {
                PlainHttp::Allow
            };
            on.plain_http = plain;
            shadow.plain_http = plain;
            let what = format!("row {} {} {}", row.row, row.method, row.path);
            let enforced = decide_on(&on, row.method, row.path, row.key, false);
            assert_eq!(
                enforced.as_ref().err(),
                Some(&row.denial),
                "{what}: enforced"
            );
            let told = decide_on(&shadow, row.method, row.path, row.key, false);
            match row.denial.reason().filter(|r| *r != DenialReason::BadPath) {
                // Rows 1-3: answered as usual on a shadow route too.
                None => assert_eq!(told.err(), Some(row.denial), "{what}: shadow answers"),
                Some(reason) => {
                    let told = told.unwrap_or_else(|d| panic!("{what}: shadow denied {d:?}"));
                    assert_eq!(told.shadow, Some(ShadowReason::Check(reason)), "{what}");
                    assert_eq!(told.key.as_deref(), row.names_key, "{what}: key named");
                }
            }
        }
        // Row 1 is never shadowed either.
        let told = decide_on(&shadow, "GET", "/api/v1/company/%2e%2e/x", None, false);
        assert_eq!(told.err(), Some(Denial::BadPath));
    }

    #[test]
    fn a_passing_request_on_a_shadow_route_is_told_nothing() {
        let p = shadow_policy();
        let told = decide_on(
            &p,
            "GET",
            "/api/v1/company/workspaces/ws_sales/x",
            Some(ACME_ADMIN),
            false,
        )
        .unwrap();
        assert_eq!(
            told,
            Told {
                route: "company_workspace".into(),
                key: Some("acme_admin".into()),
                workspace: Some("ws_sales".into()),
                shadow: None,
            }
        );
    }

    #[test]
    fn the_first_failure_is_the_one_told() {
        let mut p = shadow_policy();
        p.plain_http = PlainHttp::Reject;
        // Plain HTTP and a workspace key on a company route: row 4 first.
        let told = decide_on(&p, "GET", "/api/v1/company/x", Some(MKT_RW), false).unwrap();
        assert_eq!(
            told.shadow,
            Some(ShadowReason::Check(DenialReason::HttpsRequired))
        );
        assert_eq!(
            told.key.as_deref(),
            Some("mkt_rw"),
            "the key still authenticated"
        );
        // Over TLS the next failure shows.
        let told = decide_on(&p, "GET", "/api/v1/company/x", Some(MKT_RW), true).unwrap();
        assert_eq!(
            told.shadow,
            Some(ShadowReason::Check(DenialReason::WrongKeyType))
        );
        // A company key outside its company's workspace: named, own workspace only.
        let told = decide_on(
            &p,
            "GET",
            "/api/v1/company/workspaces/ws_research/x",
            Some(ACME_ADMIN),
            true,
        )
        .unwrap();
        assert_eq!(
            told.shadow,
            Some(ShadowReason::Check(DenialReason::Workspace))
        );
        assert_eq!(told.workspace, None);
    }

    #[test]
    fn row_13_in_shadow_is_told_not_answered() {
        let on = policy();
        let shadow = shadow_policy();
        let route = |p: &Policy| {
            p.routes
                .iter()
                .find(|r| &*r.name == "company")
                .unwrap()
                .clone()
        };
        let denial = Denial::RateLimited {
            limit: crate::model::limit::Limit::DEFAULT,
            retry_after: 3,
        };
        assert_eq!(
            rate_limited(&route(&on), denial.clone()),
            Err(denial.clone())
        );
        assert_eq!(
            rate_limited(&route(&shadow), denial),
            Ok(Some(ShadowReason::RateLimited))
        );
    }
}
