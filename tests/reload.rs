//! Hot reload (CONTRACT §6): SIGHUP, POST /reload and the file watch build a
//! whole new state and swap it; a refused reload changes nothing.

use crate::support::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

fn base() -> (Upstream, Snapshot, String, String) {
    let up = Upstream::start();
    let mut snap = Snapshot::new()
        .workspace("ws_a", "acme")
        .workspace("ws_b", "acme");
    let company = snap
        .company_key("k_company", "acme")
        .scopes(&["admin"])
        .add();
    let ws = snap
        .workspace_key("k_ws", "acme", "ws_a")
        .scopes(&["read:all"])
        .add();
    (up, snap, company, ws)
}

#[test]
fn revoked_key_after_sighup_is_403_with_age() {
    let (up, mut snap, company, _) = base();
    let gw = Gateway::start(&standard_config(up.addr, "", ""), &snap.render());
    assert_eq!(gw.get("/api/v1/company/x", Some(&company)).status(), 200);
    let k = snap.keys.iter_mut().find(|k| k.id == "k_company").unwrap();
    k.toml.push_str("revoked_at = \"2026-01-01T00:00:00Z\"\n");
    gw.write_keys(&snap.render());
    assert_eq!(gw.reload_by_signal(), "success");
    let resp = gw.get("/api/v1/company/x", Some(&company));
    assert_eq!(resp.status(), 403);
    let body: serde_json::Value = resp.json().unwrap();
    let msg = body["message"].as_str().unwrap();
    assert!(
        msg.starts_with("API key was revoked ") && msg.ends_with(" days ago"),
        "{msg}"
    );
    assert!(
        gw.log().contains("k_company"),
        "reload log names the revoked key"
    );
}

#[test]
fn key_added_by_sighup_authenticates() {
    let (up, mut snap, _, _) = base();
    let gw = Gateway::start(&standard_config(up.addr, "", ""), &snap.render());
    let new_key = snap
        .workspace_key("k_new", "acme", "ws_b")
        .scopes(&["read:all"])
        .add();
    assert_eq!(gw.get("/api/v1/profiles/me", Some(&new_key)).status(), 401);
    gw.write_keys(&snap.render());
    assert_eq!(gw.reload_by_signal(), "success");
    let resp = gw.get("/api/v1/profiles/me", Some(&new_key));
    assert_eq!(resp.status(), 200);
    assert_eq!(up.last().header("x-keygate-workspace"), Some("ws_b"));
}

#[test]
fn refused_snapshots_keep_the_old_state_serving_and_are_counted() {
    let (up, snap, company, _) = base();
    let gw = Gateway::start(&standard_config(up.addr, "", ""), &snap.render());
    let good = snap.render();
    let bad_snapshots = [
        ("unknown field", format!("{good}\n[[keys]]\nid = \"x\"\nbogus = 1\n")),
        ("not toml", "this is = = not toml".to_string()),
        ("duplicate id", format!("{good}\n{}", snap.keys[0].toml)),
        (
            "bad hash",
            good.replacen("hash = \"sha256:", "hash = \"sha256:zz", 1),
        ),
        ("unknown scope", good.replacen("[\"admin\"]", "[\"superuser\"]", 1)),
        ("zero rate", good.replacen(
            "created_at = \"2026-11-01T10:00:00Z\"",
            "created_at = \"2026-11-01T10:00:00Z\"\nrate_limit = { requests = 0, per_secs = 60 }",
            1,
        )),
        ("unlisted workspace", good.replace("id = \"ws_a\"", "id = \"ws_zzz\"")),
    ];
    for (i, (what, text)) in bad_snapshots.iter().enumerate() {
        gw.write_keys(text);
        assert_eq!(gw.reload_by_signal(), "failure", "{what}");
        assert_eq!(
            gw.metric("keygate_reloads_total{result=\"failure\"}"),
            Some((i + 1) as f64),
            "{what}"
        );
        assert_eq!(
            gw.get("/api/v1/company/x", Some(&company)).status(),
            200,
            "old keys still serve after a refused {what}"
        );
    }
    assert!(gw.log().contains("reload refused"));
    // Once the file is fixed, the next reload succeeds.
    gw.write_keys(&good);
    assert_eq!(gw.reload_by_signal(), "success");
}

#[test]
fn refused_configs_keep_the_old_state_serving() {
    let (up, snap, company, _) = base();
    let config = standard_config(up.addr, "", "");
    let gw = Gateway::start(&config, &snap.render());
    let bad_configs = [
        (
            "unknown field",
            config.replace("[admin]", "[admin]\nbogus = true"),
        ),
        (
            "unknown upstream",
            config.replace(
                "upstream = \"api\"\nauth = \"company\"\nscope = \"auto\"",
                "upstream = \"nope\"\nauth = \"company\"\nscope = \"auto\"",
            ),
        ),
        (
            "bad pattern",
            config.replace("/api/v1/company/**", "/api/**/company"),
        ),
        (
            "zero rate",
            config.replace("requests = 100", "requests = 0"),
        ),
        (
            "duplicate route",
            config.replace("name = \"profiles\"", "name = \"company\""),
        ),
        (
            "missing snapshot",
            config.replace("snapshot = \"keys.toml\"", "snapshot = \"gone.toml\""),
        ),
    ];
    for (what, text) in &bad_configs {
        assert_ne!(text, &config, "{what}: replacement must change the config");
        gw.write_config(text);
        assert_eq!(gw.reload_by_signal(), "failure", "{what}");
        assert_eq!(
            gw.get("/api/v1/company/x", Some(&company)).status(),
            200,
            "{what}"
        );
    }
}

#[test]
fn route_added_by_reload_works_and_restart_only_settings_are_reported() {
    let (up, snap, company, _) = base();
    let config = standard_config(up.addr, "", "");
    let gw = Gateway::start(&config, &snap.render());
    assert_eq!(gw.get("/api/v2/new", Some(&company)).status(), 404);
    let with_route = standard_config(
        up.addr,
        "",
        "[[routes]]\nname = \"v2\"\npath = \"/api/v2/**\"\nupstream = \"api\"\nauth = \"company\"\n",
    )
    .replace("threads = 2", "threads = 3");
    gw.write_config(&with_route);
    let resp = gw.client.post(gw.admin_url("/reload")).send().unwrap();
    assert_eq!(resp.status(), 200);
    let report: serde_json::Value = resp.json().unwrap();
    assert_eq!(report["status"], "reloaded");
    assert_eq!(report["report"]["routes_added"], serde_json::json!(["v2"]));
    assert_eq!(
        report["report"]["restart_required"],
        serde_json::json!(["server.threads"])
    );
    assert_eq!(gw.get("/api/v2/new", Some(&company)).status(), 200);
    assert_eq!(up.last().url, "/api/v2/new");
    // Still two threads run: the next reload of the same file says so again,
    // and going back to what runs needs no restart.
    let restart_required = || {
        let resp = gw.client.post(gw.admin_url("/reload")).send().unwrap();
        assert_eq!(resp.status(), 200);
        let report: serde_json::Value = resp.json().unwrap();
        report["report"]["restart_required"].clone()
    };
    assert_eq!(restart_required(), serde_json::json!(["server.threads"]));
    gw.write_config(&with_route.replace("threads = 3", "threads = 2"));
    assert_eq!(restart_required(), serde_json::json!([]));
}

#[test]
fn post_reload_answers_422_with_every_error() {
    let (up, snap, company, _) = base();
    let gw = Gateway::start(&standard_config(up.addr, "", ""), &snap.render());
    let good = snap.render();
    let two_problems = good.replacen("[\"admin\"]", "[\"superuser\"]", 1).replacen(
        "hash = \"sha256:",
        "hash = \"md5:",
        1,
    );
    gw.write_keys(&two_problems);
    let resp = gw.client.post(gw.admin_url("/reload")).send().unwrap();
    assert_eq!(resp.status(), 422);
    let body: serde_json::Value = resp.json().unwrap();
    assert_eq!(body["status"], "refused");
    let errors: Vec<String> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_string())
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors.iter().any(|e| e.contains("superuser")), "{errors:?}");
    assert!(
        errors
            .iter()
            .any(|e| e.contains("keys.toml:") && e.contains("hash")),
        "{errors:?}"
    );
    assert_eq!(gw.get("/api/v1/company/x", Some(&company)).status(), 200);
    assert_eq!(
        gw.metric("keygate_reloads_total{result=\"failure\"}"),
        Some(1.0)
    );
    // A refused config and its snapshot's problems, in one answer.
    let config = standard_config(up.addr, "", "").replace("[server]\n", "[server]\ncolour = 1\n");
    gw.write_config(&config);
    let resp = gw.client.post(gw.admin_url("/reload")).send().unwrap();
    assert_eq!(resp.status(), 422);
    let body: serde_json::Value = resp.json().unwrap();
    let errors = body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(
        errors[0]
            .as_str()
            .unwrap()
            .contains("unknown field `colour`"),
        "{errors:?}"
    );
    assert_eq!(gw.get("/api/v1/company/x", Some(&company)).status(), 200);
}

/// The snapshot as JSON, keys listed before the workspaces and in reverse
/// order: a reload must match keys by id whatever their place.
fn snapshot_json(snap: &Snapshot) -> String {
    let value: toml::Value = toml::from_str(&snap.render()).unwrap();
    let mut keys = value["keys"].as_array().cloned().unwrap_or_default();
    keys.reverse();
    serde_json::json!({
        "keys": keys,
        "workspaces": value["workspaces"],
    })
    .to_string()
}

#[test]
fn json_snapshot_reloads_revocations_additions_and_refusals() {
    let (up, mut snap, company, ws) = base();
    let config = standard_config(up.addr, "", "")
        .replace("snapshot = \"keys.toml\"", "snapshot = \"keys.json\"");
    let json = snapshot_json(&snap);
    let gw = start_with_files(&config, "", |dir| {
        std::fs::write(dir.join("keys.json"), &json).unwrap();
    });
    let json_path = gw.dir.path().join("keys.json");
    assert_eq!(gw.get("/api/v1/company/x", Some(&company)).status(), 200);
    assert_eq!(gw.get("/api/v1/profiles/me", Some(&ws)).status(), 200);

    let k = snap.keys.iter_mut().find(|k| k.id == "k_company").unwrap();
    k.toml.push_str("revoked_at = \"2026-01-01T00:00:00Z\"\n");
    let added = snap
        .workspace_key("k_new", "acme", "ws_b")
        .scopes(&["read:all"])
        .add();
    write_atomic(&json_path, &snapshot_json(&snap));
    assert_eq!(gw.reload_by_signal(), "success");
    assert_eq!(gw.get("/api/v1/company/x", Some(&company)).status(), 403);
    assert_eq!(gw.get("/api/v1/profiles/me", Some(&added)).status(), 200);
    assert_eq!(gw.get("/api/v1/profiles/me", Some(&ws)).status(), 200);
    let log = gw.log();
    let reloaded = log
        .lines()
        .rfind(|l| l.contains("\"message\":\"reloaded\""))
        .expect("a reloaded line");
    let line: serde_json::Value = serde_json::from_str(reloaded).unwrap();
    assert_eq!(line["keys_added"], "[\"k_new\"]", "{reloaded}");
    assert_eq!(line["keys_revoked"], "[\"k_company\"]", "{reloaded}");
    assert_eq!(line["keys_removed"], "[]", "{reloaded}");
    assert_eq!(line["keys_changed"], "[]", "{reloaded}");

    // Cut off mid-key, then a key whose workspace belongs to another company
    // (checked only once the workspace list, which comes last, is read).
    let good = snapshot_json(&snap);
    write_atomic(&json_path, &good[..good.len() / 2]);
    assert_eq!(gw.reload_by_signal(), "failure");
    let mut foreign: serde_json::Value = serde_json::from_str(&good).unwrap();
    assert_eq!(foreign["keys"][0]["id"], "k_new");
    foreign["keys"][0]["company"] = "globex".into();
    let foreign = foreign.to_string();
    write_atomic(&json_path, &foreign);
    assert_eq!(gw.reload_by_signal(), "failure");
    assert!(
        gw.log()
            .contains("workspace \\\"ws_b\\\" belongs to company \\\"acme\\\", not \\\"globex\\\""),
        "{}",
        gw.log()
    );
    assert_eq!(gw.get("/api/v1/profiles/me", Some(&added)).status(), 200);
    assert_eq!(gw.get("/api/v1/company/x", Some(&company)).status(), 403);
}

#[test]
fn file_watch_reloads_changed_content() {
    let (up, mut snap, _, _) = base();
    let config = standard_config(up.addr, "", "").replace(
        "snapshot = \"keys.toml\"",
        "snapshot = \"keys.toml\"\nwatch_secs = 1",
    );
    let gw = Gateway::start(&config, &snap.render());
    let new_key = snap
        .company_key("k_watch", "acme")
        .scopes(&["read:all"])
        .add();
    gw.write_keys(&snap.render());
    wait_for(
        "the watch to load the new key",
        Duration::from_secs(20),
        || (gw.get("/api/v1/company/x", Some(&new_key)).status() == 200).then_some(()),
    );
    // A broken file is refused once and not retried on every tick.
    gw.write_keys("broken = = toml");
    wait_for(
        "the watch to refuse the broken file",
        Duration::from_secs(20),
        || (gw.metric("keygate_reloads_total{result=\"failure\"}") == Some(1.0)).then_some(()),
    );
    assert_eq!(gw.get("/api/v1/company/x", Some(&new_key)).status(), 200);
}

#[test]
fn buckets_survive_reload_and_reset_when_the_limit_changes() {
    let up = Upstream::start();
    let mut snap = Snapshot::new().workspace("ws_a", "acme");
    let key = snap
        .company_key("k_limited", "acme")
        .scopes(&["read:all"])
        .extra("rate_limit = { requests = 3, per_secs = 3600 }")
        .add();
    let gw = Gateway::start(&standard_config(up.addr, "", ""), &snap.render());
    for _ in 0..3 {
        assert_eq!(gw.get("/api/v1/company/x", Some(&key)).status(), 200);
    }
    assert_eq!(gw.get("/api/v1/company/x", Some(&key)).status(), 429);
    // Same limit: the bucket is kept across the reload.
    snap.company_key("k_other", "acme")
        .scopes(&["read:all"])
        .add();
    gw.write_keys(&snap.render());
    assert_eq!(gw.reload_by_signal(), "success");
    assert_eq!(gw.get("/api/v1/company/x", Some(&key)).status(), 429);
    // Changed limit: the bucket starts full again.
    let text = snap.render().replace(
        "requests = 3, per_secs = 3600",
        "requests = 5, per_secs = 3600",
    );
    gw.write_keys(&text);
    assert_eq!(gw.reload_by_signal(), "success");
    let resp = gw.get("/api/v1/company/x", Some(&key));
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-ratelimit-limit"], "5");
    assert_eq!(resp.headers()["x-ratelimit-remaining"], "4");
}

#[test]
fn in_flight_request_finishes_on_the_state_it_started_with() {
    let (up, snap, company, _) = base();
    let gw = Gateway::start(&standard_config(up.addr, "", ""), &snap.render());
    up.delay_ms.store(1500, Ordering::SeqCst);
    let url = gw.url("/api/v1/company/slow");
    let c = gw.client.clone();
    let k = company.clone();
    let inflight = std::thread::spawn(move || {
        c.get(url)
            .header("Authorization", format!("Bearer {k}"))
            .send()
            .unwrap()
            .status()
    });
    wait_for(
        "the slow request to reach the upstream",
        Duration::from_secs(10),
        || (up.count() == 1).then_some(()),
    );
    // Remove every key, then reload while the request is upstream.
    gw.write_keys("");
    assert_eq!(gw.reload_by_signal(), "success");
    assert!(gw.log().contains("reload left no key"), "{}", gw.log());
    assert_eq!(inflight.join().unwrap(), 200);
    up.delay_ms.store(0, Ordering::SeqCst);
    assert_eq!(gw.get("/api/v1/company/x", Some(&company)).status(), 401);
}

#[test]
fn eight_clients_at_full_speed_through_twenty_reloads_see_no_failure() {
    let (up, mut snap, company, ws) = base();
    // High default limit so the clients never hit 429.
    let config = standard_config(up.addr, "", "").replace("requests = 100", "requests = 1000000");
    let gw = Gateway::start(&config, &snap.render());
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut clients = Vec::new();
    for i in 0..8 {
        let (stop, ok, failures) = (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&failures));
        let c = client();
        let (url, key) = if i % 2 == 0 {
            (gw.url("/api/v1/company/load"), company.clone())
        } else {
            (gw.url("/api/v1/profiles/load"), ws.clone())
        };
        clients.push(std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match c
                    .get(&url)
                    .header("Authorization", format!("Bearer {key}"))
                    .send()
                {
                    Ok(r) if r.status() == 200 => {
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(r) => failures
                        .lock()
                        .unwrap()
                        .push(format!("status {}", r.status())),
                    Err(e) => failures.lock().unwrap().push(format!("error {e}")),
                }
            }
        }));
    }
    for i in 0..20 {
        snap.company_key(&format!("k_extra_{i}"), "acme")
            .scopes(&["read:all"])
            .add();
        gw.write_keys(&snap.render());
        assert_eq!(gw.reload_by_signal(), "success");
    }
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} failures, first: {:?}\n{}",
        failures.len(),
        failures.first(),
        gw.log()
            .lines()
            .filter(|l| !l.contains("\"status\":200"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(ok.load(Ordering::SeqCst) > 100, "clients made progress");
}

#[test]
fn a_toml_snapshot_over_32_mib_is_loaded_with_a_warning_each_time() {
    const WARNING: &str = "large TOML key snapshot";
    let (up, snap, company, _) = base();
    // A long comment makes the file large without making it slow to parse.
    let large = format!("{}# {}\n", snap.render(), "x".repeat(33 * 1024 * 1024));
    let gw = Gateway::start(&standard_config(up.addr, "", ""), &large);
    assert_eq!(gw.get("/api/v1/company/x", Some(&company)).status(), 200);
    assert_eq!(gw.reload_by_signal(), "success");
    let log = gw.log();
    let warnings: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| l.contains(WARNING))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(warnings.len(), 2, "at start-up and on the reload:\n{log}");
    for w in &warnings {
        assert_eq!(w["level"], "WARN");
        assert_eq!(w["megabytes"], 34);
        assert!(
            w["snapshot"].as_str().unwrap().ends_with("keys.toml"),
            "{w}"
        );
    }
    // An ordinary snapshot loads without it.
    gw.write_keys(&snap.render());
    assert_eq!(gw.reload_by_signal(), "success");
    assert_eq!(gw.log().matches(WARNING).count(), 2);
}

/// Clients that stop reading a long response pin no old state: once the
/// upstream has answered, a request keeps only its log handles, so six
/// stalled downloads across six reloads leave one state in memory, not
/// seven. `send_timeout_ms` then cuts the stalled clients off.
#[test]
fn stalled_downloads_hold_no_old_state_and_are_cut_at_the_send_timeout() {
    let (up, mut snap, company, _) = base();
    // The 64 MiB answer takes the upstream a while to build on a loaded
    // machine: its read timeout must not be what ends these requests.
    let config = standard_config(up.addr, "", "")
        .replace(
            "grace_period_secs = 5\n",
            "grace_period_secs = 5\nsend_timeout_ms = 8000\n",
        )
        .replace("read_timeout_ms = 2000\n", "read_timeout_ms = 30000\n");
    let gw = Gateway::start(&config, &snap.render());
    let generations = || gw.metric("keygate_state_generations");
    assert_eq!(generations(), Some(1.0));
    let mut stalled = Vec::new();
    for i in 0..6 {
        // 64 MiB: far more than the socket buffers take, so the gateway's
        // writes to this client block for as long as it does not read.
        let path = format!("/api/v1/company/stalled-{i}?pad=67108864");
        let mut c = Conn::connect(gw.ports.http);
        assert!(
            c.send(head("GET", &path, &[&format!("Authorization: Bearer {company}")]).as_bytes())
        );
        wait_for("the upstream to answer", Duration::from_secs(10), || {
            up.seen().iter().any(|s| s.url == path).then_some(())
        });
        stalled.push(c);
        snap.company_key(&format!("k_more_{i}"), "acme")
            .scopes(&["read:all"])
            .add();
        gw.write_keys(&snap.render());
        assert_eq!(gw.reload_by_signal(), "success");
    }
    // The old states are freed off the request path: poll for it, well
    // before send_timeout_ms could have cut any stalled client.
    wait_for("old states to be freed", Duration::from_secs(3), || {
        (generations() == Some(1.0)).then_some(())
    });
    // The stalled clients (still not reading: reading would unblock them)
    // are cut within send_timeout_ms of their last successful write, each
    // request ending as the client's fault.
    let lines = wait_for(
        "six cut downloads in the access log",
        Duration::from_secs(20),
        || {
            let lines: Vec<serde_json::Value> = gw
                .log()
                .lines()
                .filter(|l| l.contains("keygate::access") && l.contains("/api/v1/company/stalled-"))
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            (lines.len() == 6).then_some(lines)
        },
    );
    for line in &lines {
        assert_eq!(line["outcome"], "client_error", "{line}");
        assert_eq!(line["status"], 200, "{line}");
        assert_eq!(line["key_id"], "k_company", "{line}");
        assert_eq!(line["route"], "company", "{line}");
        assert_eq!(line["upstream"], "api", "{line}");
    }
    assert!(
        !gw.log().contains("\"level\":\"ERROR\""),
        "a client that stops reading is no error"
    );
    drop(stalled);
    assert_eq!(
        gw.get("/api/v1/company/after", Some(&company)).status(),
        200
    );
}

/// SIGHUP's default action ends a process: one that comes while the gateway
/// is still starting (`systemctl reload` right after a start) must not, and
/// once it is ready, SIGHUP reloads (before, a reload right after readiness
/// could still find no handler and end the process).
#[test]
fn sighup_while_starting_is_ignored_and_after_ready_reloads() {
    let (up, snap, company, _) = base();
    let gw = Gateway::spawn(&standard_config(up.addr, "", ""), &snap.render());
    // From the moment the process stops taking SIGHUP's default action (it
    // ignores it, or its handler is in) until it is ready, SIGHUPs come
    // without a pause: the load, the services starting, the handler.
    // Polled without a pause: the window is tens of milliseconds.
    let pid = gw.pid();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let mask = |field: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
                .unwrap_or(0)
        };
        // Bit 0 is signal 1, SIGHUP.
        if (mask("SigIgn:") | mask("SigCgt:")) & 1 == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "SIGHUP never ignored nor handled:\n{status}"
        );
    }
    let ready = || {
        gw.client
            .get(gw.admin_url("/readyz"))
            .send()
            .is_ok_and(|r| r.status() == 200)
    };
    let mut sent = 0;
    while !ready() && sent < 500 {
        gw.signal("HUP");
        sent += 1;
    }
    gw.wait_ready();
    assert_eq!(gw.get("/api/v1/company/x", Some(&company)).status(), 200);
    assert_eq!(gw.reload_by_signal(), "success");
    assert_eq!(gw.get("/api/v1/company/x", Some(&company)).status(), 200);
}
