//! Reload at scale: a generated 1,000,000-key snapshot.
//!
//! 1. Load + validate + index time of the snapshot (JSON and TOML), and the
//!    heap it keeps per key (a counting allocator tracks live bytes; RSS is
//!    reported too).
//! 2. The real `keygate` binary on that snapshot: request latency measured
//!    by a client while SIGHUP reloads rebuild and swap the whole state.
//!
//! `cargo bench --bench reload_scale` (release). `KEYGATE_SCALE_KEYS` changes
//! the key count. Bounded: six reloads, loopback only, every process
//! started is killed by its own handle.

use sha2::{Digest, Sha256};
use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

struct Live;
static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; only counts live bytes.
unsafe impl GlobalAlloc for Live {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size(), Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        LIVE.fetch_add(n, Ordering::Relaxed);
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static ALLOC: Live = Live;

fn rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<usize>().ok())
        .map_or(0, |pages| pages * 4096)
}

fn key_text(i: usize) -> String {
    format!("ord_{i:040}")
}

fn snapshot_json(n: usize) -> String {
    let mut s = String::with_capacity(n * 300);
    s.push_str("{\"workspaces\":[");
    for w in 0..100 {
        if w > 0 {
            s.push(',');
        }
        write!(s, "{{\"id\":\"ws_{w}\",\"company\":\"c{}\"}}", w % 10).unwrap_or(());
    }
    s.push_str("],\"keys\":[");
    for i in 0..n {
        if i > 0 {
            s.push(',');
        }
        let hash = hex::encode(Sha256::digest(key_text(i).as_bytes()));
        let w = i % 100;
        write!(
            s,
            "{{\"id\":\"key_{i:08}\",\"name\":\"service {i}\",\"type\":\"workspace\",\"company\":\"c{}\",\"workspace\":\"ws_{w}\",\"scopes\":[\"read:all\",\"write:all\"],\"hash\":\"sha256:{hash}\",\"created_at\":\"2026-11-01T10:00:00Z\"}}",
            w % 10
        )
        .unwrap_or(());
    }
    s.push_str("]}");
    s
}

fn snapshot_toml(n: usize) -> String {
    let mut s = String::with_capacity(n * 300);
    for w in 0..100 {
        write!(
            s,
            "[[workspaces]]\nid = \"ws_{w}\"\ncompany = \"c{}\"\n",
            w % 10
        )
        .unwrap_or(());
    }
    for i in 0..n {
        let hash = hex::encode(Sha256::digest(key_text(i).as_bytes()));
        let w = i % 100;
        write!(
            s,
            "[[keys]]\nid = \"key_{i:08}\"\nname = \"service {i}\"\ntype = \"workspace\"\ncompany = \"c{}\"\nworkspace = \"ws_{w}\"\nscopes = [\"read:all\", \"write:all\"]\nhash = \"sha256:{hash}\"\ncreated_at = \"2026-11-01T10:00:00Z\"\n",
            w % 10
        )
        .unwrap_or(());
    }
    s
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would run us as a test.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n: usize = std::env::var("KEYGATE_SCALE_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("temp dir");
    println!("== {n} keys");

    // 1. Load time and memory, in-process.
    let json = snapshot_json(n);
    let json_path = dir.path().join("keys.json");
    std::fs::write(&json_path, &json).expect("write json");
    drop(json);
    let toml = snapshot_toml(n);
    let toml_path = dir.path().join("keys.toml");
    std::fs::write(&toml_path, &toml).expect("write toml");
    drop(toml);
    for path in [&json_path, &toml_path] {
        let text = std::fs::read_to_string(path).expect("read");
        let size = text.len();
        let live_before = LIVE.load(Ordering::Relaxed);
        let rss_before = rss_bytes();
        let t = Instant::now();
        let index = keygate::snapshot::KeyIndex::parse(path, &text).expect("valid snapshot");
        let load = t.elapsed();
        drop(text);
        keygate::util::sys::release_freed_memory();
        let live_after = LIVE.load(Ordering::Relaxed);
        // `text` was live before and is freed now: what remains is the index.
        let kept = (live_after + size).saturating_sub(live_before);
        println!(
            "{}: {} MB parsed+validated+indexed in {:.2} s; heap kept {:.0} bytes/key; RSS +{:.0} bytes/key",
            path.extension().and_then(|e| e.to_str()).unwrap_or("?"),
            size / 1_000_000,
            load.as_secs_f64(),
            kept as f64 / index.len() as f64,
            rss_bytes().saturating_sub(rss_before) as f64 / index.len() as f64,
        );
        drop(index);
    }

    // Rate-limit buckets: heap per tracked key.
    {
        use keygate::model::limit::Limit;
        use keygate::request::limiter::Limiter;
        let limiter = Limiter::new(Arc::new(keygate::util::clock::SystemClock::new()), n + 1);
        let ids: Vec<String> = (0..n).map(|i| format!("key_{i:08}")).collect();
        let before = LIVE.load(Ordering::Relaxed);
        for id in &ids {
            limiter.check(id, Limit::DEFAULT);
        }
        let per_bucket = LIVE.load(Ordering::Relaxed).saturating_sub(before) as f64 / n as f64;
        println!(
            "rate-limit buckets: {} held, {per_bucket:.0} bytes each (map entry + key id copy)",
            limiter.len()
        );
    }

    // 2. Latency while the real gateway reloads the JSON snapshot.
    let up = std::net::TcpListener::bind("127.0.0.1:0").expect("upstream");
    let up_addr = up.local_addr().expect("addr");
    let stop = Arc::new(AtomicBool::new(false));
    let upstream = {
        let stop = Arc::clone(&stop);
        up.set_nonblocking(false).ok();
        std::thread::spawn(move || serve_tiny_upstream(up, stop))
    };
    let port = free_port();
    let admin = free_port();
    std::fs::write(
        dir.path().join("keygate.toml"),
        format!(
            "[server]\nlisten = [\"127.0.0.1:{port}\"]\nthreads = 1\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n\
             [keys]\nsnapshot = \"keys.json\"\n[rate_limit]\nrequests = 1000000000\nper_secs = 1\n\
             [[upstreams]]\nname = \"api\"\nservers = [\"{up_addr}\"]\n\
             [[routes]]\nname = \"r\"\npath = \"/w/{{workspace}}/**\"\nupstream = \"api\"\nauth = \"workspace\"\n"
        ),
    )
    .expect("config");
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(["run", "--config"])
        .arg(dir.path().join("keygate.toml"))
        .env("RUST_LOG", "warn,keygate::control::reload=info")
        .stdout(Stdio::from(
            std::fs::File::create(dir.path().join("gateway.log")).expect("log file"),
        ))
        .stderr(Stdio::null())
        .spawn()
        .expect("start keygate");
    let ready = wait_ready(admin, Duration::from_secs(120));
    println!(
        "gateway start with {n} keys: ready in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let rss = process_rss(child.id());
    println!("gateway RSS with {n} keys: {} MB", rss / 1_000_000);
    if !ready {
        let _ = child.kill();
        let _ = child.wait();
        panic!("gateway did not become ready");
    }

    // One reload with no traffic: the load + validate + index + swap time.
    let log_path = dir.path().join("gateway.log");
    let t = Instant::now();
    reload_and_wait(child.id(), &log_path);
    println!(
        "reload with no traffic (SIGHUP to logged as swapped): {:.2} s",
        t.elapsed().as_secs_f64()
    );

    let key = key_text(n / 2);
    let path = format!("/w/ws_{}/x", (n / 2) % 100);
    let client_stop = Arc::new(AtomicBool::new(false));
    let client = {
        let client_stop = Arc::clone(&client_stop);
        std::thread::spawn(move || {
            // Sized up front: growing it would copy megabytes between requests.
            let mut samples: Vec<(Instant, Duration)> = Vec::with_capacity(4_000_000);
            let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
            conn.set_nodelay(true).ok();
            let req =
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n");
            let mut buf = vec![0u8; 4096];
            while !client_stop.load(Ordering::Relaxed) && samples.len() < samples.capacity() {
                let t = Instant::now();
                conn.write_all(req.as_bytes()).expect("send");
                let n = read_response(&mut conn, &mut buf);
                let took = t.elapsed();
                assert!(
                    buf[..n].starts_with(b"HTTP/1.1 200"),
                    "{}",
                    String::from_utf8_lossy(&buf[..n])
                );
                samples.push((t, took));
            }
            samples
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    // Reload windows alternate with calm windows as long as the reload took,
    // so both see the same machine for the same time.
    let mut reload_windows = Vec::new();
    let mut calm_windows = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        reload_and_wait(child.id(), &log_path);
        let took = t.elapsed();
        reload_windows.push((t, Instant::now()));
        println!(
            "reload (SIGHUP to logged as swapped): {:.2} s",
            took.as_secs_f64()
        );
        // Freeing the old state (on its own thread) settles first.
        std::thread::sleep(Duration::from_millis(500));
        let calm = Instant::now();
        std::thread::sleep(took);
        calm_windows.push((calm, Instant::now()));
    }
    client_stop.store(true, Ordering::Relaxed);
    let samples = client.join().expect("client thread");
    println!(
        "gateway RSS after the reloads: {} MB",
        process_rss(child.id()) / 1_000_000
    );
    let _ = child.kill();
    let _ = child.wait();
    stop.store(true, Ordering::Relaxed);
    let _ = std::net::TcpStream::connect(up_addr);
    upstream.join().ok();

    // The gateway's own account of each reload: built (read, parse, index)
    // and swapped, in milliseconds from the start of the reload.
    let log = std::fs::read_to_string(dir.path().join("gateway.log")).unwrap_or_default();
    for line in log
        .lines()
        .filter(|l| l.contains("\"message\":\"reloaded\""))
    {
        let field = |name: &str| {
            line.split(&format!("\"{name}\":"))
                .nth(1)
                .and_then(|r| r.split([',', '}']).next())
                .unwrap_or("?")
                .to_string()
        };
        println!(
            "  gateway: built in {} ms, swapped at {} ms",
            field("built_ms"),
            field("swapped_ms")
        );
    }

    let mut all: Vec<Duration> = samples.iter().map(|(_, d)| *d).collect();
    all.sort();
    let median = all[all.len() / 2];
    println!(
        "latency: {} requests, median {median:?}, p99 {:?}",
        all.len(),
        all[all.len() * 99 / 100]
    );
    for (what, windows) in [
        ("during reloads", &reload_windows),
        ("calm, as long", &calm_windows),
    ] {
        let mut inside: Vec<(Instant, Duration)> = samples
            .iter()
            .filter(|(t, _)| windows.iter().any(|(a, b)| t >= a && t <= b))
            .copied()
            .collect();
        inside.sort_by_key(|(_, d)| *d);
        let Some(&(at, worst)) = inside.last() else {
            continue;
        };
        let pct = |p: f64| inside[((inside.len() - 1) as f64 * p) as usize].1;
        // Where in its window the slowest request fell: tells parsing (early)
        // from the swap (late).
        let (start, _) = windows
            .iter()
            .find(|(a, b)| at >= *a && at <= *b)
            .copied()
            .unwrap_or((at, at));
        // On a shared VM a few requests stall whatever the gateway does (the
        // vCPU is not running); how often that happens is what a reload could
        // change, so count them per second of window.
        let slow = inside.iter().filter(|(_, d)| *d > median * 10).count();
        let seconds: f64 = windows.iter().map(|(a, b)| (*b - *a).as_secs_f64()).sum();
        println!(
            "  {what} ({seconds:.1} s): {} requests, p99 {:?}, p99.9 {:?}, {slow} over 10x median ({:.1}/s), slowest {worst:?} = {:.1}x median (at +{:.2} s)",
            inside.len(),
            pct(0.99),
            pct(0.999),
            slow as f64 / seconds,
            worst.as_secs_f64() / median.as_secs_f64(),
            (at - start).as_secs_f64()
        );
    }
}

/// Sends SIGHUP and waits (bounded) for the gateway's log to report one more
/// reload. Neither step runs anything in the gateway or forks this process:
/// both would show up in the latency being measured.
fn reload_and_wait(pid: u32, log: &std::path::Path) {
    let count = || {
        std::fs::read_to_string(log)
            .map(|l| l.matches("\"message\":\"reloaded\"").count())
            .unwrap_or(0)
    };
    let before = count();
    // SAFETY: kill(2) on the gateway this bench started and still holds.
    unsafe { libc::kill(pid as i32, libc::SIGHUP) };
    let t = Instant::now();
    while count() == before && t.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn process_rss(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/statm"))
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<usize>().ok())
        .map_or(0, |p| p * 4096)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

fn wait_ready(admin: u16, timeout: Duration) -> bool {
    let t = Instant::now();
    while t.elapsed() < timeout {
        if http_get(admin, "/readyz").is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Reads one response with a Content-Length body.
fn read_response(conn: &mut std::net::TcpStream, buf: &mut [u8]) -> usize {
    let mut n = 0;
    loop {
        let r = conn.read(&mut buf[n..]).expect("read");
        assert!(r > 0, "connection closed");
        n += r;
        let text = &buf[..n];
        if let Some(end) = text.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&text[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if n >= end + 4 + len {
                return n;
            }
        }
    }
}

/// A minimal keep-alive upstream answering 200 "ok" (bench only).
fn serve_tiny_upstream(listener: std::net::TcpListener, stop: Arc<AtomicBool>) {
    for conn in listener.incoming() {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let Ok(mut conn) = conn else { continue };
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            let mut pending = Vec::new();
            loop {
                let Ok(r) = conn.read(&mut buf) else { return };
                if r == 0 {
                    return;
                }
                pending.extend_from_slice(&buf[..r]);
                while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                    pending.drain(..end + 4);
                    if conn
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                        .is_err()
                    {
                        return;
                    }
                }
            }
        });
    }
}
