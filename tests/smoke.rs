//! The harness itself: a gateway starts, proxies, and stops.

use crate::util::*;

#[test]
fn gateway_proxies_a_valid_company_key() {
    let up = Upstream::start();
    let mut snap = Snapshot::new().workspace("ws_a", "acme");
    let key = snap.key("k1", "company", "acme", None, &["read:all"], "");
    let gw = Gateway::start(&standard_config(up.addr, "", ""), &snap.render());
    let resp = gw.get("/api/v1/company/things", Some(&key));
    assert_eq!(resp.status(), 200);
    assert_eq!(up.last().header("x-keygate-key-id"), Some("k1"));
}
