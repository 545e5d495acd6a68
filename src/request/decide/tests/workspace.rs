//! Row 11: workspace.

use super::*;

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
