//! Shadow routes (CONTRACT §8): every row's twin.

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
