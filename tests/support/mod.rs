//! Shared test harness: a real echo upstream on 127.0.0.1 (OS-assigned port),
//! the real `keygate` binary started on a config written to a temp dir, keys
//! minted like production ones, and an HTTP client. Everything started here
//! is stopped by its own handle when dropped. One file per role; everything
//! is re-exported here, so a test file needs only `use crate::support::*;`.

#![allow(dead_code)]

// The `keygate run` process, its config and files, the client and JSON errors.
mod gateway;
// A test CA and leaf certificate, and clients that trust it.
mod pki;
// Raw HTTP/1.1 on a socket and the shared assertions on gateway answers.
mod raw;
// A redis-server of the test's own (stop, kill, restart) and fleets of gateways on it.
mod redis;
// `keys.toml` text built from minted keys.
mod snapshot;
// The real echo upstream and what it saw.
mod upstream;

pub use self::redis::*;
pub use gateway::*;
pub use pki::*;
pub use raw::*;
pub use snapshot::*;
pub use upstream::*;

use sha2::{Digest, Sha256};
use std::net::TcpListener;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
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
