//! Shared test harness: a real echo upstream on 127.0.0.1 (OS-assigned port),
//! the real `keygate` binary started on a config written to a temp dir, keys
//! minted like production ones, and an HTTP client. Everything started here
//! is stopped by its own handle when dropped.

#![allow(dead_code)]

mod raw;
pub use raw::*;

use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_keygate");

/// A deadline-bounded wait: polls `f` until it returns `Some`, or panics.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A free port on 127.0.0.1 (bound then released). Handed out in sequence
/// from 20000-31999, below the kernel's ephemeral range, so two tests of this
/// run never get the same number and no socket bound to port 0 (upstreams,
/// outgoing connections) takes one a gateway is about to bind.
pub fn free_port() -> u16 {
    use std::sync::atomic::AtomicU32;
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Start where the previous run (another pid) is unlikely to have left TIME_WAITs.
    let start = std::process::id() % SPAN;
    loop {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = (FIRST + (start + n) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Every key minted in this test run: each gateway's log is checked against
/// all of them (and their hashes) when the gateway is dropped.
static MINTED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// A key of the production form: prefix + 40 random alphanumerics.
pub fn mint(prefix: &str) -> String {
    let key = mint_unrecorded(prefix);
    MINTED.lock().unwrap().push(key.clone());
    key
}

/// Panics if any key minted so far, or its hash (with or without the
/// `sha256:` prefix), appears in `log`.
pub fn assert_no_secret_in(log: &str, what: &str) {
    let secrets: std::collections::HashSet<String> = MINTED
        .lock()
        .unwrap()
        .iter()
        .flat_map(|k| [k.clone(), hash(k)[7..].to_string()])
        .collect();
    // Keys and hex digests are runs of [A-Za-z0-9_]: look each run up instead
    // of searching the log once per key ever minted.
    let leaked = log
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .find(|token| token.len() >= 32 && secrets.contains(*token));
    assert!(leaked.is_none(), "a key or key hash reached {what}");
}

/// No key of `keys`, nor its hash (either form), nor its body without the
/// prefix, nor any bearer credential, and no key minted in the run, is in `log`.
#[track_caller]
pub fn assert_keys_kept_out_of(log: &str, keys: &[String]) {
    assert!(!log.is_empty(), "the gateway logged nothing");
    for key in keys {
        let h = hash(key);
        let bare = h.trim_start_matches("sha256:");
        assert!(!log.contains(key.as_str()), "a key is in the log");
        assert!(!log.contains(&h), "a key hash is in the log");
        assert!(!log.contains(bare), "a bare key hash is in the log");
        // Key bodies without their prefix, in case a prefix was cut off.
        let body = key.trim_start_matches("ord_c_").trim_start_matches("ord_");
        assert!(!log.contains(body), "a key body is in the log");
    }
    let lower = log.to_ascii_lowercase();
    let mut from = 0;
    while let Some(i) = lower[from..].find("bearer") {
        let at = from + i + "bearer".len();
        let after = &lower[at..];
        let value = after.trim_start_matches([' ', '\t']);
        assert!(
            value.len() == after.len() || !value.starts_with(|c: char| c.is_ascii_alphanumeric()),
            "a bearer credential is in the log near {:?}",
            &log[from + i..(at + 40).min(log.len())]
        );
        from = at;
    }
    assert_no_secret_in(log, "the gateway log");
}

fn mint_unrecorded(prefix: &str) -> String {
    use rand::RngExt;
    const ALPHA: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let body: String = (0..40)
        .map(|_| ALPHA[rng.random_range(0..ALPHA.len())] as char)
        .collect();
    format!("{prefix}{body}")
}

/// `sha256:<hex>` of a key.
pub fn hash(key: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(key.as_bytes())))
}

// ---------------------------------------------------------------- upstream --

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Method.
    pub method: String,
    /// Raw request target.
    pub url: String,
    /// Headers, names lowercased, in arrival order.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Seen {
    /// Every value of a header.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The single value of a header (panics if repeated).
    pub fn header(&self, name: &str) -> Option<&str> {
        let all = self.all(name);
        assert!(
            all.len() <= 1,
            "header {name} appears {} times: {all:?}",
            all.len()
        );
        all.first().copied()
    }
}

/// A real HTTP/1.1 upstream (hyper) that answers `status` with a JSON echo of
/// the request and records what it saw. `delay_ms` makes it slow (timeouts);
/// a `pad=N` query parameter follows the echo with N bytes of padding (a
/// large response).
pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub delay_ms: Arc<AtomicU64>,
    pub status: Arc<AtomicU64>,
    accepted: Arc<AtomicU64>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Upstream {
    pub fn start() -> Upstream {
        Self::start_on("127.0.0.1:0")
    }

    pub fn start_on(addr: &str) -> Upstream {
        Self::serve(addr, None)
    }

    /// The echo upstream behind TLS with the given certificate.
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> Upstream {
        use tokio_rustls::rustls;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let certs: Vec<_> = rustls_pemfile::certs(&mut cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
            .unwrap()
            .unwrap();
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Self::serve(
            "127.0.0.1:0",
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))),
        )
    }

    fn serve(addr: &str, tls: Option<tokio_rustls::TlsAcceptor>) -> Upstream {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let std_listener = TcpListener::bind(addr).unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let status = Arc::new(AtomicU64::new(200));
        let accepted = Arc::new(AtomicU64::new(0));
        {
            let (seen, delay_ms, status, accepted) = (
                Arc::clone(&seen),
                Arc::clone(&delay_ms),
                Arc::clone(&status),
                Arc::clone(&accepted),
            );
            runtime.spawn(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        continue;
                    };
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let (seen, delay_ms, status) = (
                        Arc::clone(&seen),
                        Arc::clone(&delay_ms),
                        Arc::clone(&status),
                    );
                    let tls = tls.clone();
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |req| {
                            echo(
                                req,
                                Arc::clone(&seen),
                                Arc::clone(&delay_ms),
                                Arc::clone(&status),
                            )
                        });
                        let http = hyper::server::conn::http1::Builder::new();
                        let _ = match tls {
                            None => {
                                http.serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                                    .await
                            }
                            Some(acceptor) => match acceptor.accept(tcp).await {
                                Ok(stream) => {
                                    http.serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                                        .await
                                }
                                Err(_) => return,
                            },
                        };
                    });
                }
            });
        }
        Upstream {
            addr,
            seen,
            delay_ms,
            status,
            accepted,
            runtime: Some(runtime),
        }
    }

    /// Requests seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The last request seen.
    pub fn last(&self) -> Seen {
        self.seen()
            .last()
            .cloned()
            .expect("the upstream saw no request")
    }

    /// How many requests it saw.
    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn clear(&self) {
        self.seen.lock().unwrap().clear();
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }
}

async fn echo(
    req: hyper::Request<hyper::body::Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
    delay_ms: Arc<AtomicU64>,
    status: Arc<AtomicU64>,
) -> Result<hyper::Response<http_body_util::Full<bytes::Bytes>>, hyper::Error> {
    use http_body_util::BodyExt;
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes().to_vec();
    let s = Seen {
        method: parts.method.to_string(),
        url: parts.uri.to_string(),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
    };
    let echo = serde_json::json!({
        "method": s.method,
        "url": s.url,
        "headers": s.headers,
    });
    seen.lock().unwrap().push(s);
    let d = delay_ms.load(Ordering::SeqCst);
    if d > 0 {
        tokio::time::sleep(Duration::from_millis(d)).await;
    }
    let mut body = echo.to_string().into_bytes();
    let pad = parts
        .uri
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("pad=")))
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(0);
    body.resize(body.len() + pad.min(256 << 20), b' ');
    Ok(hyper::Response::builder()
        .status(status.load(Ordering::SeqCst) as u16)
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap())
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

// ---------------------------------------------------------------- snapshot --

/// A key to put in a snapshot, with its secret.
#[derive(Debug, Clone)]
pub struct TestKey {
    pub id: String,
    pub key: String,
    pub toml: String,
}

/// Builds `keys.toml` text.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub workspaces: Vec<(String, String)>,
    pub keys: Vec<TestKey>,
}

impl Snapshot {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn workspace(mut self, id: &str, company: &str) -> Self {
        self.workspaces.push((id.into(), company.into()));
        self
    }

    /// Adds a key; `extra` is more TOML lines (`expires_at = ...`).
    pub fn key(
        &mut self,
        id: &str,
        key_type: &str,
        company: &str,
        workspace: Option<&str>,
        scopes: &[&str],
        extra: &str,
    ) -> String {
        let prefix = if key_type == "company" {
            "ord_c_"
        } else {
            "ord_"
        };
        let key = mint(prefix);
        let mut t = String::new();
        writeln!(t, "[[keys]]").unwrap();
        writeln!(t, "id = {id:?}").unwrap();
        writeln!(t, "name = \"{id} name\"").unwrap();
        writeln!(t, "type = {key_type:?}").unwrap();
        writeln!(t, "company = {company:?}").unwrap();
        if let Some(w) = workspace {
            writeln!(t, "workspace = {w:?}").unwrap();
        }
        writeln!(t, "scopes = {scopes:?}").unwrap();
        writeln!(t, "hash = {:?}", hash(&key)).unwrap();
        writeln!(t, "created_at = \"2026-11-01T10:00:00Z\"").unwrap();
        if !extra.is_empty() {
            writeln!(t, "{extra}").unwrap();
        }
        self.keys.push(TestKey {
            id: id.into(),
            key: key.clone(),
            toml: t,
        });
        key
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for (id, c) in &self.workspaces {
            writeln!(out, "[[workspaces]]\nid = {id:?}\ncompany = {c:?}\n").unwrap();
        }
        for k in &self.keys {
            writeln!(out, "{}", k.toml).unwrap();
        }
        out
    }
}

// ----------------------------------------------------------------- gateway --

/// Ports and addresses a gateway config is written with.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub http: u16,
    pub admin: u16,
    /// Filled in for `{https}` (TLS listeners).
    pub https: u16,
}

/// A config with the sample routes, pointing at `upstream`. `{http}`,
/// `{admin}`, `{upstream}` are filled in; `extra` is appended verbatim.
pub fn standard_config(upstream: SocketAddr, extra_top: &str, extra_routes: &str) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:{{http}}"]
threads = 2
grace_period_secs = 5

[admin]
listen = "127.0.0.1:{{admin}}"

[keys]
snapshot = "keys.toml"

[rate_limit]
requests = 100
per_secs = 60

{extra_top}

[[upstreams]]
name = "api"
servers = ["{upstream}"]
connect_timeout_ms = 1000
read_timeout_ms = 2000

{extra_routes}

[[routes]]
name = "health"
path = "/healthz"
upstream = "api"
auth = "none"
scope = "none"

[[routes]]
name = "company_keys"
path = "/api/v1/company/keys/**"
upstream = "api"
auth = "company"
scope = "admin"

[[routes]]
name = "company_workspace"
path = "/api/v1/company/workspaces/{{workspace}}/**"
upstream = "api"
auth = "company"

[[routes]]
name = "company"
path = "/api/v1/company/**"
upstream = "api"
auth = "company"
scope = "auto"

[[routes]]
name = "posts"
path = "/api/v1/workspaces/{{workspace}}/posts/**"
upstream = "api"
auth = "any"

[[routes]]
name = "records"
path = "/api/v1/workspaces/{{workspace}}/records/**"
upstream = "api"
auth = "workspace"
methods = ["GET", "POST"]

[[routes]]
name = "profiles"
path = "/api/v1/profiles/**"
upstream = "api"
auth = "workspace"
"#
    )
}

/// A running `keygate run` process on its own temp dir.
pub struct Gateway {
    pub dir: tempfile::TempDir,
    pub ports: Ports,
    pub child: Option<Child>,
    pub client: reqwest::blocking::Client,
    /// `RUST_LOG` of the process (`info` unless a test says otherwise).
    pub rust_log: String,
}

impl Gateway {
    /// Writes `config` (with `{http}`, `{admin}` filled) and `keys.toml`, starts
    /// the binary and waits until `/readyz` answers 200.
    pub fn start(config: &str, keys_toml: &str) -> Gateway {
        let g = Self::spawn(config, keys_toml);
        g.wait_ready();
        g
    }

    /// Like `start` without waiting for readiness.
    pub fn spawn(config: &str, keys_toml: &str) -> Gateway {
        Self::spawn_with(config, keys_toml, |_| {})
    }

    /// Like `spawn`, with more files written into the gateway's folder first
    /// (certificates, CA bundles).
    pub fn spawn_with(config: &str, keys_toml: &str, write: impl FnOnce(&Path)) -> Gateway {
        Self::spawn_logging(config, keys_toml, write, "info")
    }

    /// Like `spawn_with`, with this `RUST_LOG`.
    pub fn spawn_logging(
        config: &str,
        keys_toml: &str,
        write: impl FnOnce(&Path),
        rust_log: &str,
    ) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path());
        let ports = Ports {
            http: free_port(),
            admin: free_port(),
            https: free_port(),
        };
        let config = config
            .replace("{http}", &ports.http.to_string())
            .replace("{https}", &ports.https.to_string())
            .replace("{admin}", &ports.admin.to_string());
        std::fs::write(dir.path().join("keygate.toml"), config).unwrap();
        std::fs::write(dir.path().join("keys.toml"), keys_toml).unwrap();
        let mut g = Gateway {
            dir,
            ports,
            child: None,
            client: client(),
            rust_log: rust_log.into(),
        };
        g.launch();
        g
    }

    /// Starts (or restarts) the process on the existing files.
    pub fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let child = Command::new(BIN)
            .arg("run")
            .arg("--config")
            .arg(self.config_path())
            .env("RUST_LOG", &self.rust_log)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("keygate.toml")
    }

    pub fn keys_path(&self) -> PathBuf {
        self.dir.path().join("keys.toml")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("gateway.log")
    }

    /// Everything the process wrote so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports.http)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports.admin)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn wait_ready(&self) {
        wait_for("gateway /readyz", Duration::from_secs(30), || {
            self.client
                .get(self.admin_url("/readyz"))
                .send()
                .ok()
                .filter(|r| r.status() == 200)
                .map(|_| ())
        });
    }

    /// GET with an optional bearer key.
    pub fn get(&self, path: &str, key: Option<&str>) -> reqwest::blocking::Response {
        self.request("GET", path, key)
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
    ) -> reqwest::blocking::Response {
        let mut r = self.client.request(method.parse().unwrap(), self.url(path));
        if let Some(k) = key {
            r = r.header("Authorization", format!("Bearer {k}"));
        }
        r.send().unwrap()
    }

    /// Sends a signal to the process.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit, returning its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let child = self.child.as_mut().unwrap();
        wait_for("gateway exit", timeout, || child.try_wait().unwrap())
    }

    /// The access-log line of the request with this `X-Request-Id`.
    pub fn access_line(&self, request_id: &str) -> serde_json::Value {
        let needle = format!("\"request_id\":\"{request_id}\"");
        wait_for(
            &format!("an access-log line for {request_id}"),
            Duration::from_secs(10),
            || {
                self.log()
                    .lines()
                    .find(|l| l.contains(&needle) && l.contains("keygate::access"))
                    .map(|l| serde_json::from_str(l).unwrap())
            },
        )
    }

    /// No line of the log is at level ERROR.
    #[track_caller]
    pub fn assert_no_error_logged(&self) {
        let log = self.log();
        let errors: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("\"level\":\"ERROR\""))
            .collect();
        assert!(errors.is_empty(), "ERROR lines in the log: {errors:#?}");
    }

    /// Current value of a metric line (exact series text before the value).
    pub fn metric(&self, series: &str) -> Option<f64> {
        let text = self
            .client
            .get(self.admin_url("/metrics"))
            .send()
            .unwrap()
            .text()
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
    }

    /// Rewrites the snapshot atomically (temp + rename).
    pub fn write_keys(&self, text: &str) {
        write_atomic(&self.keys_path(), text);
    }

    /// Rewrites the config atomically, filling the same ports in.
    pub fn write_config(&self, text: &str) {
        let text = text
            .replace("{http}", &self.ports.http.to_string())
            .replace("{https}", &self.ports.https.to_string())
            .replace("{admin}", &self.ports.admin.to_string());
        write_atomic(&self.config_path(), &text);
    }

    /// SIGHUP, then waits until `keygate_reloads_total{result}` moves.
    pub fn reload_by_signal(&self) -> &'static str {
        let ok = self
            .metric("keygate_reloads_total{result=\"success\"}")
            .unwrap_or(0.0);
        let bad = self
            .metric("keygate_reloads_total{result=\"failure\"}")
            .unwrap_or(0.0);
        self.signal("HUP");
        wait_for("reload to be counted", Duration::from_secs(20), || {
            let ok2 = self
                .metric("keygate_reloads_total{result=\"success\"}")
                .unwrap_or(0.0);
            let bad2 = self
                .metric("keygate_reloads_total{result=\"failure\"}")
                .unwrap_or(0.0);
            if ok2 > ok {
                Some("success")
            } else if bad2 > bad {
                Some("failure")
            } else {
                None
            }
        })
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Every test's gateway log, whatever the test was about, must hold
        // no key and no key hash (skipped while unwinding from a failure).
        if !std::thread::panicking() {
            assert_no_secret_in(&self.log(), "a gateway log");
        }
    }
}

pub fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A client that never uses a proxy and never follows redirects.
pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Parses a gateway-made JSON body and checks it is exactly `{code, message}`.
pub fn assert_json_error(
    resp: reqwest::blocking::Response,
    status: u16,
    code: &str,
    message: &str,
) {
    assert_eq!(resp.status().as_u16(), status, "status");
    assert_eq!(
        resp.headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap()),
        Some("application/json"),
        "content-type"
    );
    assert!(resp.headers().contains_key("x-request-id"), "x-request-id");
    let body: serde_json::Value = resp.json().unwrap();
    assert_eq!(body, serde_json::json!({"code": code, "message": message}));
}

// --------------------------------------------------------------------- TLS --

/// A test CA and a leaf certificate it signed for `localhost` and 127.0.0.1.
pub struct Pki {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl Pki {
    pub fn new() -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "keygate test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate().unwrap();
        let leaf_params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
        Pki {
            ca_pem: ca_cert.pem(),
            cert_pem: leaf.pem(),
            key_pem: leaf_key.serialize_pem(),
        }
    }

    /// Writes `ca.pem`, `cert.pem` and `key.pem` into `dir`.
    pub fn write(&self, dir: &Path) {
        std::fs::write(dir.join("ca.pem"), &self.ca_pem).unwrap();
        write_atomic(&dir.join("cert.pem"), &self.cert_pem);
        write_atomic(&dir.join("key.pem"), &self.key_pem);
    }

    /// A client trusting only this CA, resolving `localhost` to 127.0.0.1.
    pub fn client(&self, port: u16) -> reqwest::blocking::Client {
        reqwest::blocking::Client::builder()
            .no_proxy()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap())
            .resolve("localhost", SocketAddr::from(([127, 0, 0, 1], port)))
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

/// Like [`Gateway::start`], but with files written into the gateway's folder
/// before it starts (certificates, CA bundles).
pub fn start_with_files(config: &str, keys_toml: &str, write: impl FnOnce(&Path)) -> Gateway {
    let g = Gateway::spawn_with(config, keys_toml, write);
    g.wait_ready();
    g
}
