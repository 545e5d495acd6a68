//! The harness itself: a gateway starts, proxies, and stops.

use crate::support::*;

#[test]
fn gateway_proxies_a_valid_company_key() {
    let up = Upstream::start();
    let mut snap = Snapshot::new().workspace("ws_a", "acme");
    let key = snap.company_key("k1", "acme").scopes(&["read:all"]).add();
    let gw = Gateway::start(&standard_config(up.addr, "", ""), &snap.render());
    let resp = gw.get("/api/v1/company/things", Some(&key));
    assert_eq!(resp.status(), 200);
    assert_eq!(up.last().header("x-keygate-key-id"), Some("k1"));
}

#[test]
fn secret_scan_catches_a_minted_key_or_its_hash_in_a_log() {
    let key = mint("ord_");
    let line = |s: &str| format!("{{\"message\":\"request\",\"x\":\"{s}\"}}\n");
    assert_no_secret_in(&line("nothing to see"), "a clean log");
    for leaked in [key.clone(), hash(&key), hash(&key)[7..].to_string()] {
        let log = line(&leaked);
        let caught = std::panic::catch_unwind(|| assert_no_secret_in(&log, "a test log"));
        assert!(caught.is_err(), "the scan must catch {leaked:?}");
    }
}
