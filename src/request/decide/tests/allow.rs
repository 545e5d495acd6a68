//! What Allow carries.

use super::*;

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
