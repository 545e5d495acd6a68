//! The real `keygate run` process on a config written to its own temp dir,
//! the standard config, the HTTP client and the JSON-error assertion.

use super::{BIN, assert_no_secret_in, free_port, wait_for};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

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
    /// More environment variables of the process.
    pub env: Vec<(String, String)>,
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
        Self::spawn_env(config, keys_toml, write, rust_log, &[])
    }

    /// Like `spawn_logging`, with these environment variables set too.
    pub fn spawn_env(
        config: &str,
        keys_toml: &str,
        write: impl FnOnce(&Path),
        rust_log: &str,
        env: &[(&str, &str)],
    ) -> Gateway {
        let mut g = Self::prepare(config, keys_toml, write, rust_log, env);
        g.launch();
        g
    }

    /// The gateway's folder and files, with no process started yet.
    pub fn prepare(
        config: &str,
        keys_toml: &str,
        write: impl FnOnce(&Path),
        rust_log: &str,
        env: &[(&str, &str)],
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
        Gateway {
            dir,
            ports,
            child: None,
            client: client(),
            rust_log: rust_log.into(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// Starts (or restarts) the process on the existing files.
    pub fn launch(&mut self) {
        let log = self.open_log();
        self.launch_with_stdout(Stdio::from(log.try_clone().unwrap()));
    }

    /// Like `launch`, with stdout sent to `stdout` (stderr to the log file).
    pub fn launch_with_stdout(&mut self, stdout: Stdio) {
        let child = Command::new(BIN)
            .arg("run")
            .arg("--config")
            .arg(self.config_path())
            .env("RUST_LOG", &self.rust_log)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(stdout)
            .stderr(Stdio::from(self.open_log()))
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn open_log(&self) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap()
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
        let pid = self.pid();
        wait_for("gateway /readyz", Duration::from_secs(30), || {
            // A process that exited (a refused config, a busy port) is never
            // ready: say why at once instead of at the deadline.
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let exited = state
                .rsplit_once(')')
                .is_none_or(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']));
            assert!(
                !exited,
                "the gateway exited before it was ready:\n{}",
                self.log()
            );
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
        // The reload thread runs at nice +10: on a machine busy with other
        // tests, a large snapshot waits for CPU behind them.
        wait_for("reload to be counted", Duration::from_secs(60), || {
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
        // no key and no key hash (skipped while unwinding from a failure,
        // where the log's end is shown instead, to tell what the gateway
        // was doing).
        if !std::thread::panicking() {
            assert_no_secret_in(&self.log(), "a gateway log");
        } else {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            eprintln!("--- the gateway's log, last 40 lines ---\n{tail}\n---");
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

/// Like [`Gateway::start`], but with files written into the gateway's folder
/// before it starts (certificates, CA bundles).
pub fn start_with_files(config: &str, keys_toml: &str, write: impl FnOnce(&Path)) -> Gateway {
    let g = Gateway::spawn_with(config, keys_toml, write);
    g.wait_ready();
    g
}
