//! Process lifecycle (CONTRACT §6): start-up errors, SIGTERM drain, SIGINT.

use crate::support::*;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

fn one_key() -> (Upstream, Snapshot, String) {
    let up = Upstream::start();
    let mut snap = Snapshot::new().workspace("ws_a", "acme");
    let key = snap.company_key("k1", "acme").scopes(&["read:all"]).add();
    (up, snap, key)
}

/// Waits for `/readyz` to answer 503 (the drain has begun); its body.
fn wait_not_ready(gw: &Gateway) -> serde_json::Value {
    wait_for("/readyz to answer 503", Duration::from_secs(5), || {
        gw.client
            .get(gw.admin_url("/readyz"))
            .send()
            .ok()
            .filter(|r| r.status() == 503)
            .map(|r| r.json::<serde_json::Value>().unwrap())
    })
}

#[test]
fn sigterm_turns_readyz_503_drains_in_flight_and_exits_0() {
    let (up, snap, key) = one_key();
    let mut gw = Gateway::start(&standard_config(up.addr, "", ""), &snap.render());
    up.delay_ms.store(1500, Ordering::SeqCst);
    let url = gw.url("/api/v1/company/slow");
    let c = gw.client.clone();
    let k = key.clone();
    let inflight = std::thread::spawn(move || {
        let r = c
            .get(url)
            .header("Authorization", format!("Bearer {k}"))
            .send()
            .unwrap();
        (r.status().as_u16(), r.text().unwrap())
    });
    wait_for(
        "the slow request to reach the upstream",
        Duration::from_secs(10),
        || (up.count() == 1).then_some(()),
    );
    gw.signal("TERM");
    wait_not_ready(&gw);
    // The proxy listener stops accepting new connections.
    wait_for("the listener to close", Duration::from_secs(5), || {
        std::net::TcpStream::connect(("127.0.0.1", gw.ports.http))
            .is_err()
            .then_some(())
    });
    let (status, body) = inflight.join().unwrap();
    assert_eq!(status, 200, "{body}");
    let exit = gw.wait_exit(Duration::from_secs(10));
    assert_eq!(exit.code(), Some(0));
}

#[test]
fn sigterm_when_idle_exits_well_before_the_grace_period() {
    let (up, snap, _) = one_key();
    let config =
        standard_config(up.addr, "", "").replace("grace_period_secs = 5", "grace_period_secs = 30");
    let mut gw = Gateway::start(&config, &snap.render());
    let started = Instant::now();
    gw.signal("TERM");
    let exit = gw.wait_exit(Duration::from_secs(10));
    assert_eq!(exit.code(), Some(0));
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// A gateway with this grace, holding one request at its upstream.
fn holding_one_request(
    grace_secs: u64,
) -> (
    Upstream,
    Gateway,
    std::thread::JoinHandle<Result<u16, reqwest::Error>>,
) {
    let (up, snap, key) = one_key();
    let config = standard_config(up.addr, "", "").replace(
        "grace_period_secs = 5",
        &format!("grace_period_secs = {grace_secs}"),
    );
    let gw = Gateway::start(&config, &snap.render());
    let inflight = hold_one_request(&gw, &up, &key);
    (up, gw, inflight)
}

#[test]
fn sigint_exits_at_once_even_with_a_request_in_flight() {
    let (_up, mut gw, inflight) = holding_one_request(60);
    gw.signal("INT");
    gw.wait_exit(Duration::from_secs(5));
    assert!(
        inflight.join().unwrap().is_err(),
        "the in-flight request is cut"
    );
}

/// Starts a request that the upstream holds for 20 s; returns once the
/// upstream has it.
fn hold_one_request(
    gw: &Gateway,
    up: &Upstream,
    key: &str,
) -> std::thread::JoinHandle<Result<u16, reqwest::Error>> {
    up.delay_ms.store(20_000, Ordering::SeqCst);
    let (url, c, key) = (
        gw.url("/api/v1/company/slow"),
        gw.client.clone(),
        key.to_string(),
    );
    let seen = up.count();
    let inflight = std::thread::spawn(move || {
        c.get(url)
            .header("Authorization", format!("Bearer {key}"))
            .send()
            .map(|r| r.status().as_u16())
    });
    wait_for(
        "the slow request to reach the upstream",
        Duration::from_secs(10),
        || (up.count() == seen + 1).then_some(()),
    );
    inflight
}

#[test]
fn sigint_while_draining_exits_at_once_and_a_grace_that_runs_out_says_what_it_cut() {
    let (_up, mut gw, inflight) = holding_one_request(60);
    gw.signal("TERM");
    wait_not_ready(&gw);
    let asked = Instant::now();
    gw.signal("INT");
    assert_eq!(gw.wait_exit(Duration::from_secs(5)).code(), Some(0));
    assert!(asked.elapsed() < Duration::from_secs(5));
    assert!(inflight.join().unwrap().is_err(), "the request is cut");
    assert!(gw.log().contains("SIGINT: exiting now"), "{}", gw.log());

    let (_up, mut gw, inflight) = holding_one_request(1);
    gw.signal("TERM");
    assert_eq!(gw.wait_exit(Duration::from_secs(10)).code(), Some(0));
    assert!(inflight.join().unwrap().is_err(), "cut at the grace's end");
    let log = gw.log();
    let line = log
        .lines()
        .find(|l| l.contains("grace period over; exiting with requests in flight"))
        .unwrap_or_else(|| panic!("no word of the cut request:\n{log}"));
    assert!(line.contains("\"inflight\":1"), "{line}");
}

#[test]
fn a_refused_config_stops_start_up_with_every_reason() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("keygate.toml");
    std::fs::write(
        &config,
        "[server]\nlisten = [\"127.0.0.1:1\"]\nbogus = 1\n\n[[routes]]\nname = \"r\"\npath = \"/x\"\nupstream = \"nope\"\nauth = \"company\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("keygate.toml:3"), "{stderr}");
    assert!(stderr.contains("bogus"), "{stderr}");
}

#[test]
fn a_busy_port_stops_start_up_with_a_clear_message() {
    let (up, snap, _) = one_key();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let config =
        standard_config(up.addr, "", "").replace("127.0.0.1:{http}", &format!("127.0.0.1:{port}"));
    let mut gw = Gateway::spawn(&config, &snap.render());
    let exit = gw.wait_exit(Duration::from_secs(10));
    assert_eq!(exit.code(), Some(1));
    let log = gw.log();
    assert!(
        log.contains(&format!(
            "cannot listen on 127.0.0.1:{port} (server.listen)"
        )),
        "{log}"
    );
}

/// `keygate check` on a config it must refuse (exit 1): its stdout and
/// the `error: ` lines in it.
#[track_caller]
fn check_refused(config: &std::path::Path) -> (String, Vec<String>) {
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let errors = stdout
        .lines()
        .filter(|l| l.starts_with("error: "))
        .map(str::to_owned)
        .collect();
    (stdout, errors)
}

#[test]
fn check_reports_ok_or_every_error() {
    let out = Command::new(BIN)
        .args(["check", "--config", "config/keygate.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("ok: config/keygate.toml: 8 routes, 1 upstream, 5 keys"),
        "{stdout}"
    );

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("keygate.toml"),
        "[server]\nlisten = [\"127.0.0.1:8080\"]\n\n[rate_limit]\nrequests = 0\nper_secs = 60\n\n[[upstreams]]\nname = \"a\"\nservers = [\"127.0.0.1:1\"]\n\n[[routes]]\nname = \"r\"\npath = \"/x/**/y\"\nupstream = \"b\"\nauth = \"company\"\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("keys.toml"), "").unwrap();
    let (stdout, errors) = check_refused(&dir.path().join("keygate.toml"));
    assert_eq!(errors.len(), 3, "{stdout}");
    assert!(
        stdout.contains("keygate.toml:4: rate_limit: requests must be"),
        "{stdout}"
    );
    assert!(
        stdout.contains("'**' may only be the last segment"),
        "{stdout}"
    );
    assert!(stdout.contains("unknown upstream \"b\""), "{stdout}");

    // The snapshot the refused config names is checked too: its errors are
    // among every error.
    std::fs::write(dir.path().join("keys.toml"), "[[keys]]\nid = \"k1\"\n").unwrap();
    let (stdout, errors) = check_refused(&dir.path().join("keygate.toml"));
    assert_eq!(errors.len(), 4, "{stdout}");
    assert!(
        errors[3].contains("keys.toml:1: missing field `name`"),
        "{stdout}"
    );

    // Unknown fields (typos) are reported all at once, in file order, beside
    // the other errors of the file and of its snapshot.
    std::fs::write(
        dir.path().join("keygate.toml"),
        "[server]\nlisten = [\"127.0.0.1:8080\"]\ncolour = \"red\"\n\n[[upstreams]]\nname = \"a\"\nservers = [\"127.0.0.1:1\"]\ntmeout = 5\n\n[[routes]]\nname = \"r\"\npath = \"/x/**\"\nupstream = \"b\"\nauth = \"company\"\nsope = \"admin\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("keys.toml"),
        "[[workspaces]]\nid = \"w\"\ncompany = \"c\"\nowner = \"x\"\n",
    )
    .unwrap();
    let (stdout, errors) = check_refused(&dir.path().join("keygate.toml"));
    assert_eq!(errors.len(), 5, "{stdout}");
    for (error, start) in errors.iter().zip([
        "keygate.toml:3: unknown field `colour`",
        "keygate.toml:8: unknown field `tmeout`",
        "keygate.toml:15: unknown field `sope`",
        "keygate.toml:10: route \"r\": unknown upstream \"b\"",
        "keys.toml:4: unknown field `owner`",
    ]) {
        assert!(error.contains(start), "{start:?} in {stdout}");
    }
}

/// A config that loads but holds likely mistakes: `check` prints a
/// `warning:` line for each and still exits 0; `run` logs them at start-up.
#[test]
fn check_and_start_up_warn_about_unreachable_routes_and_open_admin() {
    let up = Upstream::start();
    let routes = "\
[[routes]]
name = \"everything\"
path = \"/api/v1/company/**\"
upstream = \"api\"
auth = \"company\"

[[routes]]
name = \"keys_admin\"
path = \"/api/v1/company/keys/**\"
upstream = \"api\"
auth = \"company\"
scope = \"admin\"

[[routes]]
name = \"public\"
path = \"/pub/**\"
upstream = \"api\"
auth = \"none\"
scope = \"none\"

[[routes]]
name = \"pub_keyed\"
path = \"/pub/secret\"
upstream = \"api\"
auth = \"any\"
";
    let config = standard_config(up.addr, "", routes).replace(
        "listen = \"127.0.0.1:{admin}\"",
        "listen = \"0.0.0.0:{admin}\"",
    );
    let gw = Gateway::start(&config, "");
    let expected = [
        "warning: route keys_admin (\"/api/v1/company/keys/**\") can never match: the earlier route everything (\"/api/v1/company/**\") covers every path it does; move it above".to_string(),
        "warning: route public (auth = \"none\", \"/pub/**\") comes before the keyed route pub_keyed and covers it: those requests are proxied without any key check".to_string(),
        "warning: route company_keys (\"/api/v1/company/keys/**\") can never match: the earlier route everything (\"/api/v1/company/**\") covers every path it does; move it above".to_string(),
        "warning: route company_workspace (\"/api/v1/company/workspaces/{workspace}/**\") can never match: the earlier route everything (\"/api/v1/company/**\") covers every path it does; move it above".to_string(),
        "warning: route company has the same path \"/api/v1/company/**\" as the earlier route everything, so it never matches".to_string(),
        format!("warning: admin listener 0.0.0.0:{} is not on loopback and has no token_hash: whoever reaches it can list keys and reload; set [admin] token_hash or listen on 127.0.0.1", gw.ports.admin),
    ];
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(gw.config_path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let warnings: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("warning: "))
        .collect();
    assert_eq!(warnings, expected, "{stdout}");
    assert!(
        stdout.lines().last().unwrap().starts_with("ok: "),
        "{stdout}"
    );
    let log = gw.log();
    for w in &expected {
        let json = serde_json::to_string(w).unwrap();
        assert!(log.contains(&json), "start-up log lacks {json}\n{log}");
    }
    // Warnings change nothing: the covered route is still served by the first.
    let mut snap = Snapshot::new();
    let key = snap.company_key("k1", "acme").scopes(&["read:all"]).add();
    gw.write_keys(&snap.render());
    gw.reload_by_signal();
    let r = gw.get("/api/v1/company/keys/x", Some(&key));
    assert_eq!(r.status().as_u16(), 200);
}
