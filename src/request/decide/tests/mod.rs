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
        Decision::Deny { route, denial, .. } => Err(Denied {
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

mod allow;
mod auth_none;
mod expired;
mod invalid_key;
mod key_type;
mod matching;
mod method;
mod missing_token;
mod path;
mod plain_http;
mod revoked;
mod route;
mod scope;
mod shadow;
mod workspace;
