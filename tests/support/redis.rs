//! A real `redis-server` of the test's own on a free port (no persistence),
//! stopped, continued, killed and restarted by its own pid; `redis-cli` to
//! read what the gateways keep in it; and the helpers that run a fleet of
//! gateways on it.

use super::{Gateway, Pki, free_port, wait_for};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The server binary (Debian's `redis-server` package).
pub const REDIS_SERVER: &str = "redis-server";
/// Its client, installed with it.
pub const REDIS_CLI: &str = "redis-cli";

/// A `redis-server` process on 127.0.0.1, its data dir a temp dir.
pub struct Redis {
    pub port: u16,
    /// `--requirepass`, if any.
    pub password: Option<String>,
    /// The TLS port, for a server started with `start_tls` (the plain port
    /// stays open on `port` for `redis-cli`).
    pub tls_port: Option<u16>,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Redis {
    /// A server without a password, answering PING.
    pub fn start() -> Redis {
        Self::start_with(None)
    }

    /// A server with `--requirepass password`, answering PING.
    pub fn start_with_password(password: &str) -> Redis {
        Self::start_with(Some(password))
    }

    /// A server also listening with TLS on `tls_port`, its certificate for
    /// `localhost` and 127.0.0.1 signed by `pki`'s CA (written to `ca_path`).
    pub fn start_tls(pki: &Pki) -> Redis {
        let mut r = Self::new(None);
        pki.write(r.dir.path());
        r.tls_port = Some(free_port());
        r.launch();
        r
    }

    fn start_with(password: Option<&str>) -> Redis {
        let mut r = Self::new(password);
        r.launch();
        r
    }

    fn new(password: Option<&str>) -> Redis {
        Redis {
            port: free_port(),
            password: password.map(Into::into),
            tls_port: None,
            dir: tempfile::tempdir().unwrap(),
            child: None,
        }
    }

    /// The CA that signed a TLS server's certificate.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// `rediss://127.0.0.1:TLS_PORT/0` of a server started with `start_tls`.
    pub fn tls_url(&self) -> String {
        let port = self.tls_port.expect("started with start_tls");
        format!("rediss://127.0.0.1:{port}/0")
    }

    fn launch(&mut self) {
        assert!(self.child.is_none(), "redis-server is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let mut cmd = Command::new(REDIS_SERVER);
        cmd.arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        if let Some(p) = &self.password {
            cmd.arg("--requirepass").arg(p);
        }
        if let Some(port) = self.tls_port {
            let file = |name: &str| self.dir.path().join(name);
            cmd.arg("--tls-port")
                .arg(port.to_string())
                .arg("--tls-cert-file")
                .arg(file("cert.pem"))
                .arg("--tls-key-file")
                .arg(file("key.pem"))
                .arg("--tls-ca-cert-file")
                .arg(file("ca.pem"))
                .args(["--tls-auth-clients", "no"]);
        }
        self.child = Some(
            cmd.spawn()
                .expect("redis-server (apt-get install redis-server)"),
        );
        let port = self.port;
        wait_for(
            &format!("redis-server on port {port} to answer PING"),
            Duration::from_secs(10),
            || {
                if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                    panic!(
                        "redis-server exited with {status}: {}",
                        std::fs::read_to_string(self.log_path()).unwrap_or_default()
                    );
                }
                self.try_cli(&["PING"])
                    .filter(|out| out.trim() == "PONG")
                    .map(|_| ())
            },
        );
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// `redis://127.0.0.1:PORT/0`, with the password if the server has one.
    pub fn url(&self) -> String {
        match &self.password {
            Some(p) => self.url_with_password(p),
            None => format!("redis://127.0.0.1:{}/0", self.port),
        }
    }

    /// `redis://:PASSWORD@127.0.0.1:PORT/0`, whatever the server's password.
    pub fn url_with_password(&self, password: &str) -> String {
        format!("redis://:{password}@127.0.0.1:{}/0", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .expect("redis-server is not running")
            .id()
    }

    fn signal(&self, sig: libc::c_int) {
        let pid = libc::pid_t::try_from(self.pid()).unwrap();
        // SAFETY: kill(2) on the pid of our own child, which we have not reaped.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig})");
    }

    /// SIGSTOP: the server keeps its sockets but answers nothing.
    pub fn stop(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// SIGCONT after [`Redis::stop`].
    pub fn cont(&self) {
        self.signal(libc::SIGCONT);
    }

    /// SIGKILL (by its own handle), and reaps it; everything it held is lost.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// Kills it if it runs, and starts a fresh (empty) server on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    /// `redis-cli` with these arguments; `None` if it failed. Must not be
    /// called while the server is stopped.
    pub fn try_cli(&self, args: &[&str]) -> Option<String> {
        let mut cmd = Command::new(REDIS_CLI);
        cmd.arg("-h")
            .arg("127.0.0.1")
            .arg("-p")
            .arg(self.port.to_string())
            .args(args)
            .stdin(Stdio::null());
        // From the environment, so the password is on no command line.
        match &self.password {
            Some(p) => cmd.env("REDISCLI_AUTH", p),
            None => cmd.env_remove("REDISCLI_AUTH"),
        };
        let out = cmd.output().expect("redis-cli");
        let stdout = String::from_utf8(out.stdout).unwrap();
        // redis-cli exits 0 on server errors too, printing `ERR ...` or
        // `(error) ...`: treat those as failures.
        (out.status.success()
            && !stdout.starts_with("ERR")
            && !stdout.starts_with("NOAUTH")
            && !stdout.starts_with("WRONGPASS")
            && !stdout.starts_with("(error)"))
        .then_some(stdout)
    }

    /// `redis-cli` with these arguments; its output (one line per reply item).
    #[track_caller]
    pub fn cli(&self, args: &[&str]) -> String {
        self.try_cli(args)
            .unwrap_or_else(|| panic!("redis-cli {args:?} failed"))
    }

    /// Every Redis key matching `pattern` (a SCAN loop), sorted.
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let mut cursor = "0".to_string();
        let mut out = Vec::new();
        loop {
            let reply = self.cli(&["SCAN", &cursor, "MATCH", pattern, "COUNT", "1000"]);
            let mut lines = reply.lines();
            cursor = lines.next().unwrap().trim().to_string();
            out.extend(lines.filter(|l| !l.is_empty()).map(String::from));
            if cursor == "0" {
                break;
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// PTTL of a key, in ms (-1: no TTL, -2: no such key).
    pub fn pttl(&self, key: &str) -> i64 {
        self.cli(&["PTTL", key]).trim().parse().unwrap()
    }

    /// The whole value of a key as text, by its type (hash: field/value
    /// lines; zset: member/score lines).
    pub fn dump(&self, key: &str) -> String {
        let kind = self.cli(&["TYPE", key]).trim().to_string();
        match kind.as_str() {
            "string" => self.cli(&["GET", key]),
            "hash" => self.cli(&["HGETALL", key]),
            "zset" => self.cli(&["ZRANGE", key, "0", "-1", "WITHSCORES"]),
            "set" => self.cli(&["SMEMBERS", key]),
            "list" => self.cli(&["LRANGE", key, "0", "-1"]),
            "none" => String::new(),
            other => panic!("{key} is a {other}"),
        }
    }

    /// Members of a sorted set.
    pub fn zrange(&self, key: &str) -> Vec<String> {
        self.cli(&["ZRANGE", key, "0", "-1"])
            .lines()
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect()
    }

    /// One field of a hash.
    pub fn hget(&self, key: &str, field: &str) -> Option<String> {
        let v = self.cli(&["HGET", key, field]).trim().to_string();
        (!v.is_empty()).then_some(v)
    }

    /// Redis's clock (TIME), in microseconds.
    pub fn now_micros(&self) -> f64 {
        let out = self.cli(&["TIME"]);
        let mut parts = out.lines().map(|l| l.trim().parse::<f64>().unwrap());
        let secs = parts.next().unwrap();
        let micros = parts.next().unwrap();
        secs * 1e6 + micros
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        // SIGKILL works on a stopped process too.
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A `[cluster]` table on `redis` with namespace `ns`, plus `extra` lines
/// (`sync_ms = ...`, `on_unavailable = ...`).
pub fn cluster_table(redis_url: &str, ns: &str, extra: &str) -> String {
    format!("[cluster]\nredis = \"{redis_url}\"\nnamespace = \"{ns}\"\n{extra}\n")
}

/// `n` gateways on the same config and snapshot (each on its own ports and
/// folder), each ready.
pub fn start_fleet(n: usize, config: &str, keys_toml: &str) -> Vec<Gateway> {
    let fleet: Vec<Gateway> = (0..n).map(|_| Gateway::spawn(config, keys_toml)).collect();
    for g in &fleet {
        g.wait_ready();
    }
    fleet
}

impl Gateway {
    /// The body of `/readyz` (whatever its status).
    pub fn readyz(&self) -> serde_json::Value {
        self.client
            .get(self.admin_url("/readyz"))
            .send()
            .unwrap()
            .json()
            .unwrap()
    }

    /// Waits until `/readyz` reports `"cluster":{"up":up,"instances":n}`.
    pub fn wait_cluster(&self, up: bool, instances: u64) {
        let want = serde_json::json!({"up": up, "instances": instances});
        wait_for(
            &format!("/readyz to show cluster {want}"),
            Duration::from_secs(15),
            || (self.readyz()["cluster"] == want).then_some(()),
        );
    }

    /// Waits until `/readyz` reports the cluster up or down, whatever the count.
    pub fn wait_cluster_up(&self, up: bool) {
        wait_for(
            &format!("/readyz to show cluster up = {up}"),
            Duration::from_secs(15),
            || (self.readyz()["cluster"]["up"] == up).then_some(()),
        );
    }

    /// Syncs with Redis done so far (the sync duration histogram's count).
    pub fn syncs(&self) -> f64 {
        self.metric("keygate_cluster_sync_duration_seconds_count")
            .unwrap_or(0.0)
    }

    /// Waits until a whole sync has run that started after this call: two
    /// more are counted (one at a time is in flight).
    pub fn wait_synced(&self) {
        let from = self.syncs();
        wait_for("two more cluster syncs", Duration::from_secs(15), || {
            (self.syncs() >= from + 2.0).then_some(())
        });
    }

    /// Log lines whose message is exactly `message`.
    pub fn count_logged(&self, message: &str) -> usize {
        let needle = format!("\"message\":{}", serde_json::to_string(message).unwrap());
        self.log().lines().filter(|l| l.contains(&needle)).count()
    }

    /// Waits until a line with this message is logged.
    pub fn wait_logged(&self, message: &str) {
        wait_for(
            &format!("the log line {message:?}"),
            Duration::from_secs(15),
            || (self.count_logged(message) > 0).then_some(()),
        );
    }

    /// POST /reload; its status.
    pub fn reload_by_post(&self) -> u16 {
        self.client
            .post(self.admin_url("/reload"))
            .send()
            .unwrap()
            .status()
            .as_u16()
    }
}
