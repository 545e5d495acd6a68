//! `keygate demo` and `keygate healthcheck` (CONTRACT §6): the demo on a copy
//! of the bundled config with free ports, every curl line it prints replayed
//! and its advertised outcome checked; the health probe against a live and a
//! dead admin listener.

use crate::support::*;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A `keygate demo` process; killed and reaped by its own handle on drop.
struct Demo {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

/// Copies a pipe into a shared string, line by line, until it closes.
fn drain(
    pipe: impl std::io::Read + Send + 'static,
) -> (Arc<Mutex<String>>, std::thread::JoinHandle<()>) {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&text);
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            let mut s = sink.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    });
    (text, reader)
}

impl Demo {
    fn spawn(config: &Path, tmp: &Path) -> Demo {
        let mut child = Command::new(BIN)
            .args(["demo", "--config"])
            .arg(config)
            // The demo's temp folder goes inside the test's, which cleans it up.
            .env("TMPDIR", tmp)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Drained until the process ends, so its access logs never fill a pipe.
        let (stdout, out_reader) = drain(child.stdout.take().unwrap());
        let (stderr, err_reader) = drain(child.stderr.take().unwrap());
        Demo {
            child,
            stdout,
            stderr,
            readers: vec![out_reader, err_reader],
        }
    }

    fn output(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}

/// The bundled config with its three fixed ports swapped for free ones.
fn bundled_config_copy(dir: &Path) -> (std::path::PathBuf, u16, u16, u16) {
    let bundled = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/keygate.toml");
    let text = std::fs::read_to_string(bundled).unwrap();
    let (http, admin, upstream) = (free_port(), free_port(), free_port());
    for fixed in ["127.0.0.1:8080", "127.0.0.1:9091", "127.0.0.1:9000"] {
        assert!(
            text.contains(fixed),
            "the bundled config listens on {fixed}"
        );
    }
    let text = text
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{http}"))
        .replace("127.0.0.1:9091", &format!("127.0.0.1:{admin}"))
        .replace("127.0.0.1:9000", &format!("127.0.0.1:{upstream}"));
    let path = dir.join("keygate.toml");
    std::fs::write(&path, text).unwrap();
    (path, http, admin, upstream)
}

/// One printed example: the status its comment promises and the request.
#[derive(Debug)]
struct Example {
    expect: String,
    repeat: usize,
    method: String,
    url: String,
    key: Option<String>,
}

fn parse_examples(text: &str) -> Vec<Example> {
    let mut out = Vec::new();
    let mut expect = String::new();
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix("# ") {
            expect = comment.split(':').next().unwrap_or_default().to_string();
            continue;
        }
        let repeat = if line.starts_with("curl ") {
            1
        } else if let Some(rest) = line.strip_prefix("for i in ") {
            rest.split(';').next().unwrap().split_whitespace().count()
        } else {
            continue;
        };
        let method = if line.contains("-X POST") {
            "POST"
        } else {
            "GET"
        };
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap()
            .trim_end_matches(';')
            .to_string();
        let key = line
            .split_once("Bearer ")
            .map(|(_, rest)| rest.split('\'').next().unwrap().to_string());
        out.push(Example {
            expect: expect.clone(),
            repeat,
            method: method.into(),
            url,
            key,
        });
    }
    out
}

fn send(client: &reqwest::blocking::Client, e: &Example) -> reqwest::blocking::Response {
    let mut r = client.request(e.method.parse().unwrap(), &e.url);
    if let Some(k) = &e.key {
        r = r.header("Authorization", format!("Bearer {k}"));
    }
    r.send().unwrap()
}

fn json_body(r: reqwest::blocking::Response) -> serde_json::Value {
    r.json().unwrap()
}

#[test]
fn demo_prints_curl_lines_whose_outcomes_really_happen() {
    let tmp = tempfile::tempdir().unwrap();
    let (config, http, admin, upstream) = bundled_config_copy(tmp.path());
    let demo = Demo::spawn(&config, tmp.path());
    let text = wait_for("the demo's curl lines", Duration::from_secs(60), || {
        let out = demo.output();
        let start = out.find("keygate demo is ready")?;
        let tail = &out[start..];
        tail.contains("/metrics").then(|| tail.to_string())
    });

    assert!(text.contains(&format!("http://127.0.0.1:{http}")), "{text}");
    assert!(text.contains(&format!("127.0.0.1:{upstream}")), "{text}");
    let examples = parse_examples(&text);
    let expects: Vec<&str> = examples.iter().map(|e| e.expect.as_str()).collect();
    assert_eq!(
        expects,
        ["200", "401", "403", "403", "429", "metrics"],
        "{text}"
    );
    for e in &examples {
        let port = if e.expect == "metrics" { admin } else { http };
        assert!(
            e.url.starts_with(&format!("http://127.0.0.1:{port}/")),
            "{e:?}"
        );
    }
    let client = client();

    // 200, and the echo upstream shows what keygate told it.
    let r = send(&client, &examples[0]);
    assert_eq!(r.status(), 200);
    let echo = json_body(r);
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["path"], "/api/v1/company/workspaces");
    assert_eq!(echo["headers"]["x-keygate-key-id"], "key_demo_admin");
    assert_eq!(echo["headers"]["x-keygate-key-type"], "company");
    assert_eq!(echo["headers"]["x-keygate-company"], "acme");
    assert!(
        echo["headers"].get("authorization").is_none(),
        "the upstream never sees the key"
    );

    assert_json_error(
        send(&client, &examples[1]),
        401,
        "UNAUTHORIZED",
        "Missing bearer token",
    );
    assert!(examples[2].key.as_deref().unwrap().starts_with("ord_"));
    assert_json_error(
        send(&client, &examples[2]),
        403,
        "FORBIDDEN",
        "This endpoint requires a company API key. Use a company-scoped API key to access company-level resources.",
    );
    assert_eq!(examples[3].method, "POST");
    assert_json_error(
        send(&client, &examples[3]),
        403,
        "FORBIDDEN",
        "API key is missing the required scope: write:all",
    );

    let limited = &examples[4];
    assert_eq!(limited.repeat, 3);
    let statuses: Vec<u16> = (0..limited.repeat)
        .map(|_| send(&client, limited).status().as_u16())
        .collect();
    assert_eq!(statuses, [200, 200, 429]);

    let metrics = send(&client, &examples[5]);
    assert_eq!(metrics.status(), 200);
    let metrics = metrics.text().unwrap();
    assert!(
        metrics.contains("keygate_rate_limited_total{route=\"posts\"} 1"),
        "{metrics}"
    );

    // The demo's files sit in its own temp folder and hold hashes, not keys.
    let files = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("files"))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .unwrap();
    assert!(Path::new(&files).starts_with(tmp.path()), "{files}");
    let snapshot = std::fs::read_to_string(Path::new(&files).join("keys.toml")).unwrap();
    for e in &examples {
        if let Some(k) = &e.key {
            assert!(!snapshot.contains(k.as_str()));
            assert!(snapshot.contains(&hash(k)));
        }
    }
    drop(demo);
}

#[test]
fn demo_refuses_to_start_when_the_echo_port_is_taken() {
    let tmp = tempfile::tempdir().unwrap();
    let (config, _, _, upstream) = bundled_config_copy(tmp.path());
    let _busy = std::net::TcpListener::bind(("127.0.0.1", upstream)).unwrap();
    let mut demo = Demo::spawn(&config, tmp.path());
    let status = wait_for("the demo to give up", Duration::from_secs(30), || {
        demo.child.try_wait().unwrap()
    });
    assert_eq!(status.code(), Some(1));
    for r in demo.readers.drain(..) {
        r.join().unwrap();
    }
    let err = demo.stderr.lock().unwrap().clone();
    assert!(
        err.contains("cannot start the echo upstream") && err.contains(&upstream.to_string()),
        "{err}"
    );
}

#[test]
fn healthcheck_passes_on_a_live_gateway_and_fails_when_nothing_listens() {
    let up = Upstream::start();
    let mut snap = Snapshot::new();
    snap.company_key("k", "acme").scopes(&["admin"]).add();
    let mut gw = Gateway::start(&standard_config(up.addr, "", ""), &snap.render());
    let config = gw.config_path();
    let probe = |args: &[&str]| {
        Command::new(BIN)
            .arg("healthcheck")
            .args(args)
            .output()
            .unwrap()
    };
    let ok = probe(&["--config", config.to_str().unwrap()]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let admin = format!("127.0.0.1:{}", gw.ports.admin);
    assert!(probe(&["--admin", &admin]).status.success());

    let nobody = format!("127.0.0.1:{}", free_port());
    let down = probe(&["--admin", &nobody]);
    assert_eq!(down.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&down.stderr).contains("cannot connect"));

    // The gateway gone: the same config now fails the probe.
    let mut child = gw.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        probe(&["--config", config.to_str().unwrap()]).status.code(),
        Some(1)
    );
}
