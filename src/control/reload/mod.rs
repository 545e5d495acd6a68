//! Reload: SIGHUP, `POST /reload` and the file watch all call
//! [`Reloader::reload`], which builds a complete new [`Gateway`] off the request
//! path and installs it with one store. A refused reload changes nothing: it is
//! logged with every reason, counted, and the old gateway keeps serving.
//! Requests in flight keep the `Arc<Gateway>` they started with.

use crate::config::{AdminConfig, Config, PlainHttp, RouteConfig, ServerConfig, TlsConfig};
use crate::gateway::Gateway;
use crate::gateway::cert::CertStore;
use crate::model::problem::Problems;
use crate::request::Shared;
use crate::request::limiter::Limiter;
use crate::snapshot::KeyIndex;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What a successful reload changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReloadReport {
    /// One-line summary of what is now loaded.
    pub loaded: String,
    /// Key ids new in the snapshot.
    pub keys_added: Vec<String>,
    /// Key ids gone from the snapshot.
    pub keys_removed: Vec<String>,
    /// Key ids newly revoked.
    pub keys_revoked: Vec<String>,
    /// Rotations among the added keys: `NEW replaces OLD`.
    pub keys_rotated: Vec<String>,
    /// Key ids whose record changed otherwise (scopes, expiry, hash, limit, ...).
    pub keys_changed: Vec<String>,
    /// Route names added.
    pub routes_added: Vec<String>,
    /// Route names removed.
    pub routes_removed: Vec<String>,
    /// Route names changed.
    pub routes_changed: Vec<String>,
    /// Upstream names added.
    pub upstreams_added: Vec<String>,
    /// Upstream names removed.
    pub upstreams_removed: Vec<String>,
    /// Upstream names changed.
    pub upstreams_changed: Vec<String>,
    /// Settings that changed but only take effect after a restart.
    pub restart_required: Vec<String>,
}

/// Added, removed and changed names between two keyed lists.
fn diff_named<T: PartialEq>(
    old: &[(String, T)],
    new: &[(String, T)],
) -> (Vec<String>, Vec<String>, Vec<String>) {
    let old_map: HashMap<&str, &T> = old.iter().map(|(n, v)| (n.as_str(), v)).collect();
    let new_names: HashSet<&str> = new.iter().map(|(n, _)| n.as_str()).collect();
    let mut added = Vec::new();
    let mut changed = Vec::new();
    for (n, v) in new {
        match old_map.get(n.as_str()) {
            None => added.push(n.clone()),
            Some(o) if *o != v => changed.push(n.clone()),
            Some(_) => {}
        }
    }
    let removed = old
        .iter()
        .filter(|(n, _)| !new_names.contains(n.as_str()))
        .map(|(n, _)| n.clone())
        .collect();
    (added, removed, changed)
}

/// Keys added, removed, revoked and changed. Snapshots mostly keep their
/// order from one version to the next, so records are first compared slot by
/// slot; only those whose slot holds another id (a key added or removed in
/// the middle shifts the rest) are matched by id.
fn diff_keys(old: &KeyIndex, new: &KeyIndex, now: i64, r: &mut ReloadReport) {
    // New slots of revoked and changed keys, sorted into file order at the end.
    let (mut revoked, mut changed) = (Vec::new(), Vec::new());
    let mut compare = |o: usize, n: usize| {
        let (ok, nk) = (old.record(o), new.record(n));
        let was_revoked = ok.is_revoked_at(now);
        let is_revoked = nk.is_revoked_at(now);
        if is_revoked && !was_revoked {
            revoked.push(n);
        } else if ok != nk || old.digest(o) != new.digest(n) {
            changed.push(n);
        }
    };
    let (olds, news) = (old.records(), new.records());
    let mut old_left: hashbrown::HashMap<&str, usize> = hashbrown::HashMap::new();
    let mut new_left: Vec<usize> = Vec::new();
    for slot in 0..olds.len().max(news.len()) {
        match (olds.get(slot), news.get(slot)) {
            (Some(o), Some(n)) if o.id() == n.id() => compare(slot, slot),
            (o, n) => {
                if let Some(o) = o {
                    old_left.insert(o.id(), slot);
                }
                if n.is_some() {
                    new_left.push(slot);
                }
            }
        }
    }
    let mut added = Vec::new();
    for n in new_left {
        match old_left.remove(news[n].id()) {
            None => added.push(n),
            Some(o) => compare(o, n),
        }
    }
    // Old keys no new key matched: removed, in the old file's order.
    let mut removed: Vec<usize> = old_left.into_values().collect();
    removed.sort_unstable();
    revoked.sort_unstable();
    changed.sort_unstable();
    let ids = |records: &[crate::snapshot::KeyRecord], slots: Vec<usize>| -> Vec<String> {
        slots
            .into_iter()
            .map(|s| records[s].id().to_string())
            .collect()
    };
    r.keys_rotated = added
        .iter()
        .filter_map(|&s| {
            let k = &news[s];
            k.replaces().map(|old| format!("{} replaces {old}", k.id()))
        })
        .collect();
    r.keys_added = ids(news, added);
    r.keys_removed = ids(olds, removed);
    r.keys_revoked = ids(news, revoked);
    r.keys_changed = ids(news, changed);
}

/// Rotation chains whose bucket `new` names after another key than `old`
/// did (a reload deleted the older keys the name came from, or cut a
/// `replaces`) start their new bucket from the old one: a reload resets a
/// bucket only when its limit changes (CONTRACT §6, §9). Keys that shared a
/// bucket and no longer do (the key linking them was deleted) are logged:
/// each counts on its own from now on.
fn carry_chain_buckets(old: &KeyIndex, new: &KeyIndex, limiter: &Limiter) {
    let old_of: HashMap<&str, &str> = old.chain_members().collect();
    let new_of: HashMap<&str, &str> = new.chain_members().collect();
    if old_of.is_empty() && new_of.is_empty() {
        return;
    }
    // Only keys that left every chain need asking whether they are still
    // here: few, so the id set is made only for them.
    let mut present: Option<HashSet<&str>> = None;
    let mut bucket_now = |id: &str| -> Option<String> {
        if let Some(&b) = new_of.get(id) {
            return Some(b.to_string());
        }
        let ids = present.get_or_insert_with(|| new.records().iter().map(|r| r.id()).collect());
        ids.contains(id).then(|| id.to_string())
    };
    let mut now_in: HashMap<&str, Vec<(&str, String)>> = HashMap::new();
    for id in new_of
        .keys()
        .chain(old_of.keys().filter(|id| !new_of.contains_key(*id)))
    {
        let Some(to) = bucket_now(id) else {
            continue;
        };
        let from = old_of.get(id).copied().unwrap_or(id);
        if from != to {
            limiter.carry(from, &to);
        }
        if old_of.contains_key(id) {
            now_in.entry(from).or_default().push((id, to));
        }
    }
    for (from, mut keys) in now_in {
        keys.sort_unstable();
        let mut buckets: Vec<&str> = keys.iter().map(|(_, b)| b.as_str()).collect();
        buckets.sort_unstable();
        buckets.dedup();
        if buckets.len() > 1 {
            let ids: Vec<&str> = keys.iter().map(|(id, _)| *id).collect();
            tracing::warn!(
                keys = ?ids,
                bucket = from,
                "these keys no longer share one rate-limit bucket: the key that linked their rotations was removed; each part now counts on its own"
            );
        }
    }
}

/// Describes what changes from `old` to `new` at time `now`; restart-only
/// settings are compared with `running`, what the process started with.
pub fn diff(old: &Gateway, new: &Gateway, running: &Config, now: i64) -> ReloadReport {
    let mut r = ReloadReport {
        loaded: new.summary(),
        ..Default::default()
    };
    diff_keys(&old.policy.keys, &new.policy.keys, now, &mut r);

    fn routes(g: &Gateway) -> Vec<(String, RouteShape<'_>)> {
        g.config
            .routes
            .iter()
            .map(|rt| (rt.name.clone(), RouteShape::of(rt, &g.config)))
            .collect()
    }
    let (a, rm, c) = diff_named(&routes(old), &routes(new));
    (r.routes_added, r.routes_removed, r.routes_changed) = (a, rm, c);
    let ups = |g: &Gateway| -> Vec<(String, crate::config::UpstreamConfig)> {
        g.config
            .upstreams
            .iter()
            .map(|u| (u.name.clone(), u.clone()))
            .collect()
    };
    let (a, rm, c) = diff_named(&ups(old), &ups(new));
    (r.upstreams_added, r.upstreams_removed, r.upstreams_changed) = (a, rm, c);

    r.restart_required = restart_required(running, &new.config);
    r
}

/// What of a route a reload compares: every field, by name, so that a new
/// one cannot silently be left out (the upstream by name, not by index).
#[derive(Debug, PartialEq)]
struct RouteShape<'a> {
    pattern: &'a crate::model::pattern::Pattern,
    upstream: &'a str,
    auth: crate::config::AuthMode,
    scope: crate::model::scope::ScopeRule,
    methods: &'a Option<Vec<http::Method>>,
    enforce: crate::config::Enforcement,
}

impl<'a> RouteShape<'a> {
    fn of(route: &'a RouteConfig, config: &'a Config) -> Self {
        let RouteConfig {
            name: _,
            pattern,
            upstream,
            auth,
            scope,
            methods,
            enforce,
        } = route;
        RouteShape {
            pattern,
            upstream: &config.upstreams[*upstream].name,
            auth: *auth,
            scope: *scope,
            methods,
            enforce: *enforce,
        }
    }
}

/// The settings that changed but apply only after a restart. Every field of
/// `[server]` and `[admin]` is named here, as restart-only or not, so a new
/// one needs a decision.
fn restart_required(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let ServerConfig {
        listen,
        threads,
        grace_period,
        max_header_bytes: _,
        max_headers: _,
        header_timeout: _,
        body_timeout: _,
        send_timeout: _,
        keepalive_timeout: _,
        upgrade_sock,
        tls,
    } = &old.server;
    let n = &new.server;
    let mut changed = |differs: bool, what: &str| {
        if differs {
            out.push(what.to_string());
        }
    };
    changed(*listen != n.listen, "server.listen");
    changed(*threads != n.threads, "server.threads");
    changed(*grace_period != n.grace_period, "server.grace_period_secs");
    changed(*upgrade_sock != n.upgrade_sock, "server.upgrade_sock");
    let tls_listen = |t: &Option<TlsConfig>| {
        t.as_ref().map(|t| {
            let TlsConfig {
                listen,
                cert: _,
                key: _,
                plain_http: _,
            } = t;
            listen.clone()
        })
    };
    changed(tls_listen(tls) != tls_listen(&n.tls), "server.tls.listen");
    let AdminConfig {
        listen: admin_listen,
        token_hash: _,
    } = &old.admin;
    changed(*admin_listen != new.admin.listen, "admin.listen");
    out
}

/// What plain HTTP runs under after a reload, when that is not what the new
/// file says: `plain_http = "reject"` refuses every request on the plain
/// listeners, and a reload that turns it on while this process serves no
/// TLS listener (listeners come with a restart) would leave clients no way
/// in. It waits for the restart, as the listeners do; a process started
/// that way was told so by `check` and keeps it.
fn held_plain_http(running: &Config, old: PlainHttp, new: PlainHttp) -> Option<PlainHttp> {
    let serves_tls = running
        .server
        .tls
        .as_ref()
        .is_some_and(|t| !t.listen.is_empty());
    (new == PlainHttp::Reject && old != PlainHttp::Reject && !serves_tls).then_some(old)
}

/// Key ids in a log line: a snapshot that swaps a million keys must not make
/// one line of tens of megabytes. The first [`Capped::SHOWN`] ids are listed,
/// then how many more there are (`POST /reload` answers the whole lists).
struct Capped<'a>(&'a [String]);

impl Capped<'_> {
    const SHOWN: usize = 100;
}

impl std::fmt::Debug for Capped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut list = f.debug_list();
        list.entries(self.0.iter().take(Self::SHOWN));
        if self.0.len() > Self::SHOWN {
            list.entry(&format_args!("... {} more", self.0.len() - Self::SHOWN));
        }
        list.finish()
    }
}

/// Frees a replaced gateway here, on the reload thread. Requests that started
/// on it still hold it; whichever drops the last reference frees it, and
/// freeing a million-key index takes milliseconds that must not land on a
/// request. So wait (bounded) until only this reference is left.
fn retire(old: Arc<Gateway>) {
    const PATIENCE: Duration = Duration::from_secs(120);
    let started = std::time::Instant::now();
    // Freeing is background work like building: requests come first.
    crate::util::sys::lower_thread_priority();
    while Arc::strong_count(&old) > 1 && started.elapsed() < PATIENCE {
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(old);
    crate::util::sys::release_freed_memory();
}

/// Performs reloads, one at a time.
pub struct Reloader {
    config_path: PathBuf,
    shared: Arc<Shared>,
    /// The config the process started with: listeners, threads and the rest
    /// of the restart-only settings still run as it says, whatever the
    /// reloads since, so each reload reports what still differs from it.
    running: Config,
    certs: Option<Arc<CertStore>>,
    lock: Mutex<()>,
    last_watched: Mutex<Option<WatchedDigests>>,
    watch_cache: Mutex<DigestCache>,
}

type WatchedDigests = (Option<[u8; 32]>, Option<[u8; 32]>);

impl Reloader {
    /// A reloader of `config_path` into `shared.state`.
    pub fn new(config_path: PathBuf, shared: Arc<Shared>, certs: Option<Arc<CertStore>>) -> Self {
        let running = shared.state.load().config.clone();
        Reloader {
            config_path,
            running,
            shared,
            certs,
            lock: Mutex::new(()),
            last_watched: Mutex::new(None),
            watch_cache: Mutex::new(DigestCache::default()),
        }
    }

    /// Builds, validates and installs a new gateway. Blocking (file reads,
    /// name resolution): call it from a blocking thread.
    pub fn reload(&self, trigger: &str) -> Result<ReloadReport, Problems> {
        let _one_at_a_time = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let started = std::time::Instant::now();
        let old = self.shared.state.load_full();
        let metrics = &self.shared.metrics;
        let built = Gateway::load(&self.config_path, metrics, Some(&old));
        let built_in = started.elapsed();
        let mut new = match built {
            Ok(g) => g,
            Err(problems) => {
                for p in &problems.0 {
                    tracing::error!(trigger, problem = %p, "reload refused; still serving the previous config and keys");
                }
                // Counted once logged: whoever sees the count finds the reasons.
                metrics.reload_failure.inc();
                return Err(problems);
            }
        };
        let held = held_plain_http(&self.running, old.policy.plain_http, new.policy.plain_http);
        if let Some(running) = held {
            new.policy.plain_http = running;
        }
        let now = self.shared.clock.unix_secs();
        if let (Some(store), Some(tls), Some(ck)) =
            (&self.certs, &new.config.server.tls, &new.certificate)
        {
            store.install(&tls.cert, &tls.key, (**ck).clone());
        }
        self.shared
            .limiter
            .set_max_buckets(new.config.rate_limit.max_buckets);
        // Before the swap: a request under the new names finds its bucket.
        carry_chain_buckets(&old.policy.keys, &new.policy.keys, &self.shared.limiter);
        let new = Arc::new(new);
        self.shared.state.store(Arc::clone(&new));
        let swapped_in = started.elapsed();
        // Described after the swap: the new state serves while this runs.
        let mut report = diff(&old, &new, &self.running, now);
        if held.is_some() {
            report.restart_required.push("server.tls.plain_http".into());
        }
        // Buckets of keys that are gone are dropped; a changed limit resets
        // its bucket on the key's next request.
        if !report.keys_removed.is_empty() {
            // A removed key whose id still names a rotation chain's bucket
            // keeps it: its successors draw from it.
            let shared: HashSet<&str> = new.policy.keys.chain_buckets().collect();
            let removed: HashSet<&str> = report
                .keys_removed
                .iter()
                .map(String::as_str)
                .filter(|id| !shared.contains(id))
                .collect();
            self.shared.limiter.retain_keys(|id| !removed.contains(id));
        }
        tracing::info!(
            trigger,
            loaded = %report.loaded,
            built_ms = built_in.as_millis() as u64,
            swapped_ms = swapped_in.as_millis() as u64,
            keys_added = ?Capped(&report.keys_added),
            keys_removed = ?Capped(&report.keys_removed),
            keys_revoked = ?Capped(&report.keys_revoked),
            keys_rotated = ?Capped(&report.keys_rotated),
            keys_changed = ?Capped(&report.keys_changed),
            routes_added = ?report.routes_added,
            routes_removed = ?report.routes_removed,
            routes_changed = ?report.routes_changed,
            upstreams_added = ?report.upstreams_added,
            upstreams_removed = ?report.upstreams_removed,
            upstreams_changed = ?report.upstreams_changed,
            "reloaded"
        );
        if new.policy.keys.is_empty() && !old.policy.keys.is_empty() {
            tracing::warn!(
                keys_removed = old.policy.keys.len(),
                "reload left no key: every keyed request now gets 401; if the snapshot was being written (a truncation before the write), reload again once it is whole, and write it atomically (temp file and rename, as `keygate keys` does)"
            );
        }
        for setting in &report.restart_required {
            tracing::warn!(setting = %setting, "changed setting takes effect only after a restart");
        }
        crate::config::warnings::log(&new.config);
        new.record_key_gauges(metrics, now);
        // Counted once logged and the gauges set: whoever sees the count
        // finds the report and the new figures.
        metrics.last_reload_success.set(now);
        metrics.reload_success.inc();
        // Never hold up the caller (POST /reload answers now) for slow requests.
        let spawned = std::thread::Builder::new()
            .name("keygate-retire".into())
            .spawn(move || retire(old));
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot spawn a thread to free the old state; freeing it on the request path");
        }
        Ok(report)
    }

    /// Reloads on a dedicated low-priority thread: parsing and indexing a large
    /// snapshot takes a core for a while, and the request threads come first.
    pub async fn reload_async(
        self: &Arc<Self>,
        trigger: &'static str,
    ) -> Result<ReloadReport, Problems> {
        let me = Arc::clone(self);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name("keygate-reload".into())
            .spawn(move || {
                crate::util::sys::lower_thread_priority();
                let _ = tx.send(me.reload(trigger));
            });
        let failed = |message: String| {
            Err(Problems(vec![crate::model::problem::Problem {
                location: self.config_path.display().to_string(),
                message,
            }]))
        };
        if let Err(e) = spawned {
            return failed(format!("cannot start the reload thread: {e}"));
        }
        match rx.await {
            Ok(r) => r,
            Err(_) => failed("the reload thread ended without an answer".into()),
        }
    }

    /// Whether the config's or the snapshot's content differs from both what
    /// is loaded and what the watch last tried and saw refused (a broken file
    /// is reported once, not on every tick).
    fn files_changed(&self) -> bool {
        let gw = self.shared.state.load();
        let now = std::time::SystemTime::now();
        let seen = {
            let mut cache = self.watch_cache.lock().unwrap_or_else(|p| p.into_inner());
            // A reload may have pointed the config at another snapshot.
            cache.keep_only(&[&self.config_path, &gw.config.keys.snapshot]);
            (
                cache.digest(&self.config_path, now).0,
                cache.digest(&gw.config.keys.snapshot, now).0,
            )
        };
        let loaded = (Some(gw.fingerprint.config), Some(gw.fingerprint.snapshot));
        let mut last = self.last_watched.lock().unwrap_or_else(|p| p.into_inner());
        let changed = seen != loaded && last.as_ref() != Some(&seen);
        *last = Some(seen);
        changed
    }
}

/// Content digests of watched files, read again only when a file's metadata
/// moves: a million-key snapshot is 250 MB to read and hash on every tick.
#[derive(Default)]
struct DigestCache {
    entries: Vec<(PathBuf, FileStamp, [u8; 32])>,
}

/// What any change to a file's content changes: a write moves the size or the
/// modification and change times, a rename-over moves the inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl DigestCache {
    /// A file whose times are this old is trusted to be unchanged while its
    /// stamp is: a write in the same clock tick as the read that was hashed
    /// could otherwise leave every field as it was.
    const SETTLED: Duration = Duration::from_secs(2);

    /// Forgets every file but these.
    fn keep_only(&mut self, paths: &[&std::path::Path]) {
        self.entries
            .retain(|(p, _, _)| paths.contains(&p.as_path()));
    }

    /// The digest of the file's content (`None` if it cannot be read) and
    /// whether it was read for this answer.
    fn digest(
        &mut self,
        path: &std::path::Path,
        now: std::time::SystemTime,
    ) -> (Option<[u8; 32]>, bool) {
        use std::os::unix::fs::MetadataExt;
        let Ok(meta) = std::fs::metadata(path) else {
            self.entries.retain(|(p, _, _)| p != path);
            return (None, false);
        };
        let stamp = FileStamp {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        };
        let now_secs = now
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |n| n.as_secs() as i64);
        // In whole seconds, rounded so that "settled" is never early.
        let settled =
            |(secs, _): (i64, i64)| now_secs > secs.saturating_add(Self::SETTLED.as_secs() as i64);
        if let Some((_, s, d)) = self.entries.iter().find(|(p, _, _)| p == path)
            && *s == stamp
            && settled(stamp.mtime)
            && settled(stamp.ctime)
        {
            return (Some(*d), false);
        }
        self.entries.retain(|(p, _, _)| p != path);
        let Ok(bytes) = std::fs::read(path) else {
            return (None, true);
        };
        let digest: [u8; 32] = Sha256::digest(&bytes).into();
        // Stamped before the read: a change during it moves the stamp, so the
        // next tick reads again.
        self.entries.push((path.to_path_buf(), stamp, digest));
        (Some(digest), true)
    }
}

/// The background service: SIGHUP and the file watch.
pub struct ReloadService {
    /// The shared reloader.
    pub reloader: Arc<Reloader>,
}

#[async_trait]
impl BackgroundService for ReloadService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
        // Readiness waits for this: after "ready", a SIGHUP reloads.
        self.reloader.shared.lifecycle.set_reload_signal_handled();
        let mut hup = match hup {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP; reload with POST /reload");
                return;
            }
        };
        // A short tick re-reads `watch_secs` each time, so a reload that turns
        // the watch on or changes its period takes effect within a second.
        let mut last_watch = std::time::Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = hup.recv() => {
                    let _ = self.reloader.reload_async("SIGHUP").await;
                }
                _ = tokio::time::sleep(Duration::from_secs(1)) => {
                    let watch = self.reloader.shared.state.load().config.keys.watch;
                    if let Some(period) = watch
                        && last_watch.elapsed() >= period
                    {
                        last_watch = std::time::Instant::now();
                        let r = Arc::clone(&self.reloader);
                        let changed = tokio::task::spawn_blocking(move || r.files_changed())
                            .await
                            .unwrap_or(false);
                        if changed {
                            let _ = self.reloader.reload_async("file change").await;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::key::KeyDigest;

    /// An index of company keys `(id, scope, more JSON fields)` in this order.
    fn json_index(keys: &[(&str, &str, String)]) -> KeyIndex {
        let keys: Vec<String> = keys
            .iter()
            .map(|(id, scope, more)| {
                format!(
                    "{{\"id\":\"{id}\",\"name\":\"n\",\"type\":\"company\",\"company\":\"acme\",\
                     \"scopes\":[\"{scope}\"],\"hash\":\"{}\",\"created_at\":\"2026-11-01T10:00:00Z\"{more}}}",
                    KeyDigest::of(id.as_bytes()).to_text()
                )
            })
            .collect();
        let text = format!("{{\"keys\":[{}]}}", keys.join(","));
        KeyIndex::parse(std::path::Path::new("keys.json"), &text).expect("valid")
    }

    /// An index of company keys `(id, revoked_at, scope)` in this order.
    fn index(keys: &[(&str, Option<i64>, &str)]) -> KeyIndex {
        let keys: Vec<(&str, &str, String)> = keys
            .iter()
            .map(|&(id, revoked, scope)| {
                let revoked = revoked
                    .map(|t| format!(",\"revoked_at\":\"{}\"", crate::snapshot::format_time(t)))
                    .unwrap_or_default();
                (id, scope, revoked)
            })
            .collect();
        json_index(&keys)
    }

    fn report(old: &KeyIndex, new: &KeyIndex, now: i64) -> [Vec<String>; 4] {
        let mut r = ReloadReport::default();
        diff_keys(old, new, now, &mut r);
        [r.keys_added, r.keys_removed, r.keys_revoked, r.keys_changed]
    }

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn rejecting_plain_http_waits_for_a_tls_listener() {
        let text = "[server]\nlisten = [\"127.0.0.1:8080\"]\n\n[[upstreams]]\nname = \"api\"\nservers = [\"127.0.0.1:9000\"]\n";
        let plain = Config::parse(std::path::Path::new("/k/keygate.toml"), text).unwrap();
        let mut tls = plain.clone();
        tls.server.tls = Some(TlsConfig {
            listen: vec!["127.0.0.1:8443".parse().unwrap()],
            cert: "c.pem".into(),
            key: "k.pem".into(),
            plain_http: PlainHttp::Allow,
        });
        use PlainHttp::{Allow, Reject};
        // Turned on while no TLS listener runs: held.
        assert_eq!(held_plain_http(&plain, Allow, Reject), Some(Allow));
        // Started that way, turned off, or with TLS listeners running: as written.
        assert_eq!(held_plain_http(&plain, Reject, Reject), None);
        assert_eq!(held_plain_http(&plain, Reject, Allow), None);
        assert_eq!(held_plain_http(&tls, Allow, Reject), None);
        assert_eq!(held_plain_http(&tls, Allow, Allow), None);
    }

    #[test]
    fn logged_id_lists_are_capped() {
        let ids = |n: usize| (0..n).map(|i| format!("k{i}")).collect::<Vec<_>>();
        assert_eq!(format!("{:?}", Capped(&[])), "[]");
        assert_eq!(format!("{:?}", Capped(&ids(2))), r#"["k0", "k1"]"#);
        assert_eq!(
            format!("{:?}", Capped(&ids(100))),
            format!("{:?}", ids(100))
        );
        let long = format!("{:?}", Capped(&ids(1_000_000)));
        assert!(long.starts_with(r#"["k0", "k1", "#), "{long}");
        assert!(long.ends_with(r#""k99", ... 999900 more]"#), "{long}");
    }

    #[test]
    fn watched_files_are_read_again_only_when_their_stamp_moves() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        let later = || std::time::SystemTime::now() + Duration::from_secs(10);
        std::fs::write(&path, "one").unwrap();
        let mut cache = DigestCache::default();
        let one: [u8; 32] = Sha256::digest(b"one").into();
        assert_eq!(cache.digest(&path, later()), (Some(one), true));
        assert_eq!(cache.digest(&path, later()), (Some(one), false));
        // Written just now: not trusted by its stamp until it settles.
        assert_eq!(
            cache.digest(&path, std::time::SystemTime::now()),
            (Some(one), true)
        );
        // Rewritten in place: the size moves (a same-size rewrite moves the
        // change time, unless it lands in the same clock tick, which is why
        // a stamp is trusted only once settled).
        std::fs::write(&path, "four").unwrap();
        let four: [u8; 32] = Sha256::digest(b"four").into();
        assert_eq!(cache.digest(&path, later()), (Some(four), true));
        assert_eq!(cache.digest(&path, later()), (Some(four), false));
        // Renamed over: another inode.
        let next = dir.path().join("next.json");
        std::fs::write(&next, "six").unwrap();
        std::fs::rename(&next, &path).unwrap();
        let six: [u8; 32] = Sha256::digest(b"six").into();
        assert_eq!(cache.digest(&path, later()), (Some(six), true));
        // Gone, then back with the old content.
        std::fs::remove_file(&path).unwrap();
        assert_eq!(cache.digest(&path, later()), (None, false));
        std::fs::write(&path, "one").unwrap();
        assert_eq!(cache.digest(&path, later()), (Some(one), true));
        // Two files are tracked apart.
        let other = dir.path().join("keygate.toml");
        std::fs::write(&other, "four").unwrap();
        assert_eq!(cache.digest(&other, later()), (Some(four), true));
        assert_eq!(cache.digest(&path, later()), (Some(one), false));
        assert_eq!(cache.digest(&other, later()), (Some(four), false));
        cache.keep_only(&[&other]);
        assert_eq!(cache.digest(&path, later()), (Some(one), true));
        assert_eq!(cache.digest(&other, later()), (Some(four), false));
    }

    #[test]
    fn same_snapshot_changes_nothing() {
        let keys = [("a", None, "admin"), ("b", None, "admin")];
        assert_eq!(
            report(&index(&keys), &index(&keys), NOW),
            [vec![], vec![], vec![], vec![]] as [Vec<String>; 4]
        );
    }

    #[test]
    fn in_place_revocation_and_change_are_told_apart() {
        let old = index(&[
            ("a", None, "admin"),
            ("b", None, "admin"),
            ("c", None, "admin"),
        ]);
        // b revoked in the past, c with another scope, a revoked only in the future.
        let new = index(&[
            ("a", Some(NOW + 60), "admin"),
            ("b", Some(NOW - 1), "admin"),
            ("c", None, "read:all"),
        ]);
        assert_eq!(
            report(&old, &new, NOW),
            [vec![], vec![], ids(&["b"]), ids(&["a", "c"])]
        );
        // Already revoked before: no longer "newly revoked".
        assert_eq!(
            report(&new, &new, NOW),
            [vec![], vec![], vec![], vec![]] as [Vec<String>; 4]
        );
    }

    #[test]
    fn keys_inserted_removed_and_moved_are_matched_by_id() {
        let old = index(&[
            ("a", None, "admin"),
            ("b", None, "admin"),
            ("c", None, "admin"),
            ("d", None, "admin"),
            ("e", None, "admin"),
        ]);
        // x inserted at the front shifts every slot; b removed; e moved before
        // c and changed; d revoked.
        let new = index(&[
            ("x", None, "admin"),
            ("a", None, "admin"),
            ("e", None, "write:all"),
            ("c", None, "admin"),
            ("d", Some(NOW), "admin"),
            ("y", None, "admin"),
        ]);
        assert_eq!(
            report(&old, &new, NOW),
            [ids(&["x", "y"]), ids(&["b"]), ids(&["d"]), ids(&["e"])]
        );
        // Backwards: x and y removed, b added.
        assert_eq!(
            report(&new, &old, NOW),
            [ids(&["b"]), ids(&["x", "y"]), vec![], ids(&["d", "e"])]
        );
    }

    /// An index of company keys `(id, replaces)` in this order.
    fn chain(keys: &[(&str, Option<&str>)]) -> KeyIndex {
        let keys: Vec<(&str, &str, String)> = keys
            .iter()
            .map(|&(id, replaces)| {
                let replaces = replaces
                    .map(|r| format!(",\"replaces\":\"{r}\""))
                    .unwrap_or_default();
                (id, "admin", replaces)
            })
            .collect();
        json_index(&keys)
    }

    #[test]
    fn a_chain_renamed_by_deleting_its_older_keys_keeps_what_it_spent() {
        use crate::model::limit::Limit;
        let limit = Limit::from_raw(3, 60, None).unwrap();
        let limiter = Limiter::new(crate::util::clock::ManualClock::at(NOW), 100);
        let spend = |l: &Limiter, bucket: &str| while l.check(bucket, limit).allowed {};
        let full = chain(&[("a", None), ("b", Some("a")), ("c", Some("b"))]);
        assert_eq!(full.bucket_id(2), "a");
        spend(&limiter, "a");
        // a deleted: still "a" (b replaces it); then b: "b" (c replaces it).
        let no_a = chain(&[("b", Some("a")), ("c", Some("b"))]);
        carry_chain_buckets(&full, &no_a, &limiter);
        let only_c = chain(&[("c", Some("b"))]);
        assert_eq!(only_c.bucket_id(0), "b");
        carry_chain_buckets(&no_a, &only_c, &limiter);
        assert!(
            !limiter.check("b", limit).allowed,
            "spent before the rename"
        );
        // The link in the middle deleted: both parts start from the chain's
        // state, each on its own from then on.
        let limiter = Limiter::new(crate::util::clock::ManualClock::at(NOW), 100);
        spend(&limiter, "a");
        let split = chain(&[("a", None), ("c", Some("b"))]);
        carry_chain_buckets(&full, &split, &limiter);
        assert_eq!(split.bucket_id(0), "a");
        assert!(!limiter.check("a", limit).allowed);
        assert!(!limiter.check("b", limit).allowed);
        // A key cut out of a chain (its `replaces` removed) keeps it too.
        let limiter = Limiter::new(crate::util::clock::ManualClock::at(NOW), 100);
        spend(&limiter, "a");
        let cut = chain(&[("a", None), ("b", None), ("c", Some("b"))]);
        carry_chain_buckets(&full, &cut, &limiter);
        assert_eq!(cut.bucket_id(1), "b");
        assert!(!limiter.check("b", limit).allowed);
    }

    #[test]
    fn empty_sides() {
        let some = index(&[("a", None, "admin"), ("b", None, "admin")]);
        let none = index(&[]);
        assert_eq!(
            report(&none, &some, NOW),
            [ids(&["a", "b"]), vec![], vec![], vec![]]
        );
        assert_eq!(
            report(&some, &none, NOW),
            [vec![], ids(&["a", "b"]), vec![], vec![]]
        );
    }
}
