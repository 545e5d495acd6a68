//! The external contract, black box: CONTRACT §3 (route matching), §4 (every
//! row of the status table, their order, bearer parsing, `WWW-Authenticate`,
//! rate-limit headers, `X-Request-Id`) and §5 (exactly what the upstream sees),
//! plus hostile input (odd paths, huge headers, bodies on denied requests).
//! One file per contract section; the shared fixture and helpers are here.

// §4 row by row: 400, 404, 405, 403 https, 401, 403, 429, 502, 504.
mod rows;
// §4 precedence: the first failing row answers; rate limit before the upstream.
mod precedence;
// §4 bearer parsing: scheme case, token end, two or non-UTF-8 `Authorization`.
mod bearer;
// §4 `X-Request-Id`: echoed when sane, replaced otherwise.
mod request_id;
// §5 what the upstream sees: identity headers, `Authorization`, method, query, body.
mod upstream;
// §3 route matching: segment by segment, first match wins.
mod routes;
// Bad input: huge headers (431) and bodies on denied requests over keep-alive.
mod bad_input;

use crate::support::*;

// ------------------------------------------------------------------ helpers --

/// One request on a fresh connection (`Connection: close`), its response.
fn raw(port: u16, request: &[u8]) -> Reply {
    exchange(port, request).expect("a response")
}

/// `GET target` with extra header lines (each ending in `\r\n`).
fn raw_get(target: &str, extra: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}Connection: close\r\n\r\n")
        .into_bytes()
}

fn get(gw: &Gateway, path: &str, key: Option<&str>) -> Reply {
    Reply::from_reqwest(gw.get(path, key))
}

fn send(gw: &Gateway, method: &str, path: &str, key: Option<&str>) -> Reply {
    Reply::from_reqwest(gw.request(method, path, key))
}

/// GET with a raw `Authorization` value.
fn get_auth(gw: &Gateway, path: &str, authorization: &str) -> Reply {
    Reply::from_reqwest(
        gw.client
            .get(gw.url(path))
            .header("authorization", authorization)
            .send()
            .unwrap(),
    )
}

/// RFC 3339 for `secs` seconds ago (negative: in the future).
fn ago(secs: i64) -> String {
    let t = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap()
        - time::Duration::seconds(secs);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

const MINUTE: i64 = 60;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

/// A header name lowercased with `_` read as `-`, as some backends do.
fn folded(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

/// A snapshot record whose type disagrees with the prefix of the key
/// presented: returns the key to present.
fn mismatched(snap: &mut Snapshot, id: &str, record_type: &str, ws: Option<&str>) -> String {
    let real = snap
        .typed_key(record_type, id, "acme", ws)
        .scopes(&["admin"])
        .add();
    let other_prefix = if record_type == "company" {
        "ord_"
    } else {
        "ord_c_"
    };
    let presented = mint(other_prefix);
    let record = snap.keys.last_mut().unwrap();
    record.toml = record.toml.replace(&hash(&real), &hash(&presented));
    record.key = presented.clone();
    presented
}

/// Keys of the shared fixture.
struct Keys {
    /// company acme, admin.
    admin: String,
    /// company acme, read:all.
    reader: String,
    /// company acme, write:all.
    writer: String,
    /// company acme, read:all write:all.
    rw: String,
    /// workspace ws_a (acme), read:all write:all.
    ws: String,
    /// workspace ws_a (acme), read:all.
    ws_reader: String,
    /// company globex, admin.
    globex: String,
    /// company acme, expired 3 h 20 min ago.
    expired: String,
    /// workspace ws_a, expired 1 day 5 min ago.
    expired_day: String,
    /// workspace ws_a, revoked 2 days 1 hour ago.
    revoked: String,
    /// company acme, revoked 65 s ago.
    revoked_minute: String,
    /// company acme, expired 3 h 20 min ago and revoked 2 days ago.
    expired_and_revoked: String,
    /// company acme, read:all, 2 requests per 60 s.
    limited: String,
    /// company record, presented with a workspace prefix.
    mismatch_company: String,
    /// workspace record, presented with a company prefix.
    mismatch_workspace: String,
}

struct Fx {
    up: Upstream,
    gw: Gateway,
    k: Keys,
}

fn snapshot() -> (Snapshot, Keys) {
    let mut s = Snapshot::new()
        .workspace("ws_a", "acme")
        .workspace("ws_b", "acme")
        .workspace("ws_g", "globex");
    let admin = s.company_key("k_admin", "acme").scopes(&["admin"]).add();
    let reader = s
        .company_key("k_reader", "acme")
        .scopes(&["read:all"])
        .add();
    let writer = s
        .company_key("k_writer", "acme")
        .scopes(&["write:all"])
        .add();
    let rw = s
        .company_key("k_rw", "acme")
        .scopes(&["read:all", "write:all"])
        .add();
    let ws = s
        .workspace_key("k_ws", "acme", "ws_a")
        .scopes(&["read:all", "write:all"])
        .add();
    let ws_reader = s
        .workspace_key("k_ws_reader", "acme", "ws_a")
        .scopes(&["read:all"])
        .add();
    let globex = s.company_key("k_globex", "globex").scopes(&["admin"]).add();
    let expired = s
        .company_key("k_expired", "acme")
        .scopes(&["read:all"])
        .extra(&format!("expires_at = {:?}", ago(3 * HOUR + 20 * MINUTE)))
        .add();
    let expired_day = s
        .workspace_key("k_expired_day", "acme", "ws_a")
        .scopes(&["read:all"])
        .extra(&format!("expires_at = {:?}", ago(DAY + 5 * MINUTE)))
        .add();
    let revoked = s
        .workspace_key("k_revoked", "acme", "ws_a")
        .scopes(&["read:all"])
        .extra(&format!("revoked_at = {:?}", ago(2 * DAY + HOUR)))
        .add();
    let revoked_minute = s
        .company_key("k_revoked_minute", "acme")
        .scopes(&["admin"])
        .extra(&format!("revoked_at = {:?}", ago(65)))
        .add();
    let expired_and_revoked = s
        .company_key("k_expired_and_revoked", "acme")
        .scopes(&["admin"])
        .extra(&format!(
            "expires_at = {:?}\nrevoked_at = {:?}",
            ago(3 * HOUR + 20 * MINUTE),
            ago(2 * DAY + HOUR)
        ))
        .add();
    let limited = s
        .company_key("k_limited", "acme")
        .scopes(&["read:all"])
        .extra("rate_limit = { requests = 2, per_secs = 60 }")
        .add();
    let mismatch_company = mismatched(&mut s, "k_mismatch_company", "company", None);
    let mismatch_workspace = mismatched(&mut s, "k_mismatch_workspace", "workspace", Some("ws_a"));
    let keys = Keys {
        admin,
        reader,
        writer,
        rw,
        ws,
        ws_reader,
        globex,
        expired,
        expired_day,
        revoked,
        revoked_minute,
        expired_and_revoked,
        limited,
        mismatch_company,
        mismatch_workspace,
    };
    (s, keys)
}

/// The standard routes (plus `extra_routes` before them) on a fresh upstream.
fn fixture(extra_top: &str, extra_routes: &str) -> Fx {
    let up = Upstream::start();
    let (snap, k) = snapshot();
    let gw = Gateway::start(
        &standard_config(up.addr, extra_top, extra_routes),
        &snap.render(),
    );
    Fx { up, gw, k }
}

fn tls_reject_config(upstream: std::net::SocketAddr) -> String {
    let config = standard_config(upstream, "", "");
    let tls = "grace_period_secs = 5\n\n[server.tls]\nlisten = [\"127.0.0.1:{https}\"]\ncert = \"cert.pem\"\nkey = \"key.pem\"\nplain_http = \"reject\"\n";
    assert!(config.contains("grace_period_secs = 5\n"));
    config.replace("grace_period_secs = 5\n", tls)
}
