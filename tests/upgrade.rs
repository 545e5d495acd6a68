//! Upgrades without a refused connection (CONTRACT §10), black box: a second
//! `keygate run --upgrade` takes every listener (plain, TLS, admin) of a
//! running gateway on SIGQUIT while clients keep sending; SIGQUIT with
//! nobody waiting keeps serving; a refused config on the new side changes
//! nothing.

use crate::support::*;
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A second process on the gateway's files; killed when dropped.
struct Successor {
    child: Child,
    log: std::path::PathBuf,
}

impl Successor {
    fn start(gw: &Gateway) -> Successor {
        let log = gw.dir.path().join("successor.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(BIN)
            .args(["run", "--upgrade", "--config"])
            .arg(gw.config_path())
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .unwrap();
        Successor { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_for_line(&self, needle: &str) {
        wait_for(
            &format!("{needle:?} from the new process"),
            Duration::from_secs(20),
            || self.log().contains(needle).then_some(()),
        );
    }
}

impl Drop for Successor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config_with_upgrade_sock(up: std::net::SocketAddr) -> String {
    standard_config(up, "", "").replace(
        "grace_period_secs = 5\n",
        "grace_period_secs = 5\nupgrade_sock = \"upgrade.sock\"\n",
    )
}

/// A client loop: `keep_alive` reuses its connection (reqwest's pool),
/// otherwise every request opens a new one. Counts answers and failures. A
/// request on a reused connection that the old process closes at its
/// shutdown, before any byte of an answer, is sent again once, as HTTP/1.1
/// allows for idempotent requests (RFC 9112 §9.3.1) and browsers and most
/// clients do; such retries are counted apart.
fn client_loop(
    url: String,
    key: String,
    keep_alive: bool,
    stop: Arc<AtomicBool>,
    counts: Arc<Counts>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let client = reqwest::blocking::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(if keep_alive { 4 } else { 0 })
            .build()
            .unwrap();
        while !stop.load(Ordering::SeqCst) {
            let mut outcome = client.get(&url).bearer_auth(&key).send();
            if keep_alive
                && outcome
                    .as_ref()
                    .is_err_and(|e| e.is_request() && !e.is_timeout())
            {
                counts.retried.fetch_add(1, Ordering::SeqCst);
                outcome = client.get(&url).bearer_auth(&key).send();
            }
            match outcome {
                Ok(r) if r.status().as_u16() == 200 => {
                    counts.ok.fetch_add(1, Ordering::SeqCst);
                }
                Ok(r) => counts
                    .failed
                    .lock()
                    .unwrap()
                    .push(format!("status {}", r.status())),
                Err(e) => counts
                    .failed
                    .lock()
                    .unwrap()
                    .push(format!("keep_alive={keep_alive}: {e:?}")),
            }
        }
    })
}

#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    retried: AtomicU64,
    failed: std::sync::Mutex<Vec<String>>,
}

#[test]
fn an_upgrade_hands_every_listener_over_without_a_refused_connection_or_failed_request() {
    let up = Upstream::start();
    let pki = Pki::new();
    let mut snap = Snapshot::new();
    let key = snap
        .company_key("k1", "acme")
        .scopes(&["read:all"])
        .extra("rate_limit = { requests = 1000000, per_secs = 1 }")
        .add();
    let config = config_with_upgrade_sock(up.addr).replace(
        "[admin]",
        "[server.tls]\nlisten = [\"127.0.0.1:{https}\"]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n\n[admin]",
    );
    let mut gw = start_with_files(&config, &snap.render(), |d| pki.write(d));
    // A stale socket file from a crashed process is in the way.
    {
        let _stale =
            std::os::unix::net::UnixListener::bind(gw.dir.path().join("upgrade.sock")).unwrap();
    }
    let url = gw.url("/api/v1/company/steady");
    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(Counts::default());
    let ok = &counts.ok;
    let loops: Vec<_> = [true, true, false, false]
        .into_iter()
        .map(|keep| {
            client_loop(
                url.clone(),
                key.clone(),
                keep,
                Arc::clone(&stop),
                Arc::clone(&counts),
            )
        })
        .collect();
    wait_for("steady traffic", Duration::from_secs(10), || {
        (ok.load(Ordering::SeqCst) > 50).then_some(())
    });
    // A slow request in flight on the old process finishes there.
    up.delay_ms.store(1500, Ordering::SeqCst);
    let slow_url = gw.url("/api/v1/company/slow");
    let slow_key = key.clone();
    let slow = std::thread::spawn(move || {
        client()
            .get(slow_url)
            .bearer_auth(slow_key)
            .send()
            .map(|r| r.status().as_u16())
    });
    wait_for("the slow request upstream", Duration::from_secs(10), || {
        up.seen()
            .iter()
            .any(|s| s.url == "/api/v1/company/slow")
            .then_some(())
    });
    up.delay_ms.store(0, Ordering::SeqCst);

    let successor = Successor::start(&gw);
    successor.wait_for_line("upgrade: waiting for the listening sockets");
    wait_for(
        "the upgrade socket to listen",
        Duration::from_secs(10),
        || {
            let table = std::fs::read_to_string("/proc/net/unix").unwrap();
            table.contains("upgrade.sock.admin").then_some(())
        },
    );
    let before = ok.load(Ordering::SeqCst);
    gw.signal("QUIT");
    successor.wait_for_line("upgrade: took over every listener");
    let status = gw.wait_exit(Duration::from_secs(30));
    assert!(
        status.success(),
        "the old process drains and exits 0: {status:?}"
    );
    assert_eq!(
        slow.join().unwrap().unwrap(),
        200,
        "the in-flight request finished"
    );
    // The new process serves everything now, admin included.
    wait_for("the new process ready", Duration::from_secs(20), || {
        let r = gw.client.get(gw.admin_url("/readyz")).send().ok()?;
        (r.status().as_u16() == 200).then_some(())
    });
    let after_exit = ok.load(Ordering::SeqCst);
    wait_for(
        "traffic on the new process",
        Duration::from_secs(10),
        || (ok.load(Ordering::SeqCst) > after_exit + 50).then_some(()),
    );
    stop.store(true, Ordering::SeqCst);
    for l in loops {
        l.join().unwrap();
    }
    let failed = counts.failed.lock().unwrap().clone();
    let retried = counts.retried.load(Ordering::SeqCst);
    eprintln!(
        "upgrade: {} requests answered by the two processes, {} failed, {retried} resent once on a reused connection",
        ok.load(Ordering::SeqCst),
        failed.len()
    );
    assert_eq!(
        failed,
        Vec::<String>::new(),
        "no request failed through the hand-over"
    );
    assert!(
        retried <= 2,
        "at most one resend per kept-alive client: {retried}"
    );
    assert!(ok.load(Ordering::SeqCst) > before + 100, "traffic went on");
    let https = pki.client(gw.ports.https);
    let r = https
        .get(format!(
            "https://localhost:{}/api/v1/company/tls",
            gw.ports.https
        ))
        .bearer_auth(&key)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "the TLS listener travelled too");
    let metrics = gw
        .client
        .get(gw.admin_url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("keygate_requests_total"),
        "the admin listener travelled"
    );
    let old_log = gw.log();
    assert!(
        old_log.contains("upgrade: handing every listener to the new process"),
        "{old_log}"
    );
    assert!(!old_log.contains("\"level\":\"ERROR\""), "{old_log}");
    assert!(
        !successor.log().contains("\"level\":\"ERROR\""),
        "{}",
        successor.log()
    );
    assert!(
        !gw.dir.path().join("upgrade.sock.admin").exists(),
        "hand-over socket removed"
    );
}

#[test]
fn a_kept_alive_connection_is_told_to_close_on_its_first_answer_after_the_hand_over() {
    let up = Upstream::start();
    let mut snap = Snapshot::new();
    let key = snap.company_key("k1", "acme").scopes(&["read:all"]).add();
    let mut gw = Gateway::start(&config_with_upgrade_sock(up.addr), &snap.render());
    let request = head(
        "GET",
        "/api/v1/company/raw",
        &[&format!("Authorization: Bearer {key}")],
    );
    let mut conn = Conn::connect(gw.ports.http);
    assert!(conn.send(request.as_bytes()));
    let before = conn.read_reply().expect("an answer before the hand-over");
    assert_eq!(before.status, 200);
    assert_eq!(before.header("connection"), Some("keep-alive"));

    let successor = Successor::start(&gw);
    successor.wait_for_line("upgrade: waiting for the listening sockets");
    gw.signal("QUIT");
    successor.wait_for_line("upgrade: took over every listener");
    // The old process still answers on the connection it holds, and says
    // so: the client goes to the new process before the old one stops.
    assert!(conn.send(request.as_bytes()));
    let after = conn.read_reply().expect("the old process answers");
    assert_eq!(after.status, 200);
    assert!(
        after.closes(),
        "the first answer after the hand-over: {after:?}"
    );
    assert!(
        conn.is_closed_within(Duration::from_secs(10)),
        "and the connection is closed"
    );
    let status = gw.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{status:?}");
}

#[test]
fn sigquit_with_nobody_waiting_keeps_serving() {
    let up = Upstream::start();
    let mut snap = Snapshot::new();
    let key = snap.company_key("k1", "acme").scopes(&["read:all"]).add();
    let gw = Gateway::start(&config_with_upgrade_sock(up.addr), &snap.render());
    // Once with no socket file, once with one left by a process that died.
    for stale in [false, true] {
        if stale {
            let _gone =
                std::os::unix::net::UnixListener::bind(gw.dir.path().join("upgrade.sock")).unwrap();
        }
        let said = gw
            .log()
            .matches("upgrade: no new process is waiting; still serving")
            .count();
        gw.signal("QUIT");
        wait_for("the refusal logged", Duration::from_secs(10), || {
            (gw.log()
                .matches("upgrade: no new process is waiting; still serving")
                .count()
                > said)
                .then_some(())
        });
        assert_eq!(
            gw.get("/api/v1/company/x", Some(&key)).status().as_u16(),
            200
        );
        let ready = gw.client.get(gw.admin_url("/readyz")).send().unwrap();
        assert_eq!(ready.status().as_u16(), 200, "still ready");
    }
    let mut gw = gw;
    assert!(
        gw.child.as_mut().unwrap().try_wait().unwrap().is_none(),
        "still running"
    );
}

#[test]
fn a_refused_config_on_the_new_side_exits_1_and_leaves_the_old_serving() {
    let up = Upstream::start();
    let mut snap = Snapshot::new();
    let key = snap.company_key("k1", "acme").scopes(&["read:all"]).add();
    let gw = Gateway::start(&config_with_upgrade_sock(up.addr), &snap.render());
    let broken = gw.dir.path().join("broken.toml");
    let mut f = std::fs::File::create(&broken).unwrap();
    f.write_all(b"[server]\nlisten = [\"127.0.0.1:1\"]\nthreads = 0\n")
        .unwrap();
    drop(f);
    let started = Instant::now();
    let out = Command::new(BIN)
        .args(["run", "--upgrade", "--config"])
        .arg(&broken)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "refused at once"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("server.threads"), "{err}");
    assert_eq!(
        gw.get("/api/v1/company/x", Some(&key)).status().as_u16(),
        200
    );
    assert!(
        !gw.log().contains("upgrade: handing"),
        "nothing was handed over"
    );
}

#[test]
fn one_waiter_at_a_time_on_private_sockets_and_a_waiter_nobody_answers_says_so_and_cleans_up() {
    use std::os::unix::fs::PermissionsExt;
    let up = Upstream::start();
    let mut snap = Snapshot::new();
    let key = snap.company_key("k1", "acme").scopes(&["read:all"]).add();
    let gw = Gateway::start(&config_with_upgrade_sock(up.addr), &snap.render());
    let sock = gw.dir.path().join("upgrade.sock");
    let admin_sock = gw.dir.path().join("upgrade.sock.admin");
    let mut first = Successor::start(&gw);
    first.wait_for_line("send it SIGQUIT");
    for path in [&sock, &admin_sock] {
        let mode = std::fs::metadata(path).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o077,
            0,
            "{}: only its owner may connect ({mode:o})",
            path.display()
        );
    }
    let second = Command::new(BIN)
        .args(["run", "--upgrade", "--config"])
        .arg(gw.config_path())
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains("another `keygate run --upgrade` is already waiting"),
        "{err}"
    );
    // Nobody sends SIGQUIT: the first gives up, says so, and leaves no socket.
    let status = wait_for("the waiter to give up", Duration::from_secs(20), || {
        first.child.try_wait().unwrap()
    });
    assert_eq!(status.code(), Some(1));
    assert!(
        first
            .log()
            .contains("upgrade: no running gateway handed over its listening sockets in time"),
        "{}",
        first.log()
    );
    assert!(!sock.exists() && !admin_sock.exists());
    assert_eq!(
        gw.get("/api/v1/company/x", Some(&key)).status().as_u16(),
        200
    );
    // A path that is not a socket is not deleted by a waiter.
    std::fs::write(&sock, "not a socket").unwrap();
    let out = Command::new(BIN)
        .args(["run", "--upgrade", "--config"])
        .arg(gw.config_path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a socket"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&sock).unwrap(), "not a socket");
}

#[test]
fn an_upgrade_that_moves_the_admin_listener_serves_admin_on_the_new_address() {
    let up = Upstream::start();
    let mut snap = Snapshot::new();
    snap.company_key("k1", "acme").scopes(&["read:all"]).add();
    let mut gw = Gateway::start(&config_with_upgrade_sock(up.addr), &snap.render());
    let old = format!("127.0.0.1:{}", gw.ports.admin);
    let new = format!("127.0.0.1:{}", free_port());
    let text = std::fs::read_to_string(gw.config_path()).unwrap();
    assert_eq!(text.matches(&old).count(), 1, "{text}");
    write_atomic(&gw.config_path(), &text.replace(&old, &new));
    let next = Successor::start(&gw);
    next.wait_for_line("send it SIGQUIT");
    gw.signal("QUIT");
    next.wait_for_line("upgrade: took over every listener");
    assert!(
        next.log().contains("upgrade: admin listener moved"),
        "{}",
        next.log()
    );
    let health = wait_for("admin on the new address", Duration::from_secs(10), || {
        gw.client
            .get(format!("http://{new}/readyz"))
            .send()
            .ok()
            .filter(|r| r.status() == 200)
    });
    assert_eq!(health.status(), 200);
    assert!(gw.wait_exit(Duration::from_secs(30)).success());
    assert!(
        std::net::TcpStream::connect(&old).is_err(),
        "nothing left on the old admin address"
    );
}
