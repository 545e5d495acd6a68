//! Cluster mode (CONTRACT §7): the background service that reconciles the
//! limiter's buckets with the fleet's in Redis every `sync_ms`, and earlier
//! when a bucket asks, so a key's limit holds for the whole fleet. The
//! request path never waits for it: it answers from the limiter.
//!
//! One sync is one script call per batch of buckets (`sync.lua`), run on
//! Redis's clock, that adds what this instance admitted, heartbeats its
//! membership and returns each bucket's fleet level; at most one call is in
//! flight. A failed call gives the consumption back to the limiter to be sent
//! again, marks the instance degraded (logged once) and applies
//! `on_unavailable` until Redis answers again.
//!
//! What Redis holds is named by hashes of bucket and key ids, never a key or
//! a key hash, and every Redis key has a TTL. Fleet-wide `last_used_at`
//! travels in its own script (`used.lua`) once a second and is read back by
//! `GET /keys` ([`FleetReader::fleet_last_used`]).

pub mod link;

use crate::config::ClusterConfig;
use crate::gateway::Gateway;
use crate::model::limit::Limit;
use crate::request::Shared;
use crate::request::limiter::{Fleet, FleetBucket, Report, Share};
use crate::snapshot::KeyIndex;
use async_trait::async_trait;
use link::{Link, LinkError};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use redis::Script;
use sha2::{Digest, Sha256};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// Buckets per script call: bounds the time Redis spends in one call.
const BATCH: usize = 500;

/// Keys per `last_used` call.
const USED_BATCH: usize = 1000;

/// How long Redis keeps a key's fleet-wide last use after its last update.
const USED_TTL_SECS: u64 = 30 * 24 * 3600;

/// How often last uses are pushed.
const USED_EVERY: Duration = Duration::from_secs(1);

/// While degraded, Redis is tried again this often at most (and at least
/// every sync period).
const RETRY_EVERY: Duration = Duration::from_millis(200);

/// How often the service looks for a `[cluster]` table while there is none.
const IDLE_POLL: Duration = Duration::from_millis(100);

/// The fleet as this instance sees it, for `/readyz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// Whether the last sync succeeded.
    pub up: bool,
    /// Instances seen in the last 3 sync periods.
    pub instances: u32,
}

/// The fleet's status from the limiter's mode; `None` without `[cluster]`.
pub fn status(fleet: Fleet) -> Option<Status> {
    match fleet {
        Fleet::Alone => None,
        Fleet::Synced { instances } => Some(Status {
            up: true,
            instances,
        }),
        Fleet::Degraded { instances, .. } => Some(Status {
            up: false,
            instances,
        }),
    }
}

/// A bucket's name in Redis: a hash of its id and limit, so a changed limit
/// is a fresh bucket fleet-wide (CONTRACT §6) and no key id is stored.
pub fn bucket_name(bucket: &str, limit: Limit) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(b"keygate bucket\0");
    h.update(bucket.as_bytes());
    h.update(format!("\0{}/{}:{}", limit.requests, limit.per_secs, limit.burst).as_bytes());
    first_16(h)
}

/// A key's last-use entry name in Redis: a hash of its id.
pub fn used_name(key_id: &str) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(b"keygate last use\0");
    h.update(key_id.as_bytes());
    first_16(h)
}

fn first_16(h: Sha256) -> [u8; 16] {
    let full = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[..16]);
    out
}

fn redis_key(namespace: &str, kind: &str, name: &[u8; 16]) -> String {
    format!("{namespace}:{kind}:{}", hex::encode(name))
}

/// Microseconds as Redis's script reads them.
fn micros(nanos: u64) -> String {
    format!("{}.{:03}", nanos / 1000, nanos % 1000)
}

/// The reconciliation service.
pub struct ClusterService {
    shared: Arc<Shared>,
    instance: String,
    /// The open link, also used by `GET /keys`.
    link: Arc<tokio::sync::Mutex<Option<Link>>>,
    state: Mutex<SyncState>,
}

#[derive(Default)]
struct SyncState {
    /// Why the instance is degraded, once logged.
    degraded: Option<String>,
    /// Last uses already pushed, by slot of `keys`.
    pushed: Vec<i64>,
    /// The state whose key index `pushed` refers to (not kept alive).
    keys: Weak<Gateway>,
    last_push: Option<Instant>,
}

impl ClusterService {
    /// A service for `shared`'s limiter; it follows `[cluster]` across reloads.
    pub fn new(shared: Arc<Shared>) -> Self {
        ClusterService {
            shared,
            instance: format!("{:016x}", rand::random::<u64>()),
            link: Arc::new(tokio::sync::Mutex::new(None)),
            state: Mutex::new(SyncState::default()),
        }
    }

    /// The link `GET /keys` reads fleet-wide last uses through.
    pub fn reader(&self) -> FleetReader {
        FleetReader {
            link: Arc::clone(&self.link),
        }
    }

    fn wanted(&self) -> Option<ClusterConfig> {
        self.shared.state.load().config.cluster.clone()
    }

    /// Makes the link match `[cluster]`; `false` when there is none.
    async fn follow_config(&self) -> bool {
        let want = self.wanted();
        let mut link = self.link.lock().await;
        let same = match (&*link, &want) {
            (Some(l), Some(w)) => l.config == *w,
            (None, None) => true,
            _ => false,
        };
        if same {
            return want.is_some();
        }
        let limiter = &self.shared.limiter;
        let metrics = &self.shared.metrics.cluster;
        // The same Redis and fleet with other settings: an outage in
        // progress goes on (one `cluster degraded`, one `cluster recovered`).
        let same_fleet = matches!((&*link, &want),
            (Some(l), Some(w)) if l.config.redis == w.redis && l.config.namespace == w.namespace);
        if let Some(old) = link.take()
            && !same_fleet
        {
            // In the background: an old Redis that no longer answers must not
            // hold up the new one for its timeout. (The same fleet is not
            // left: this instance stays a member under the same id.)
            let instance = self.instance.clone();
            tokio::spawn(async move { leave(old, &instance).await });
        }
        if want.is_none() {
            self.lock_state().degraded = None;
        } else if !same_fleet {
            // Up again once the new Redis has answered a sync; an outage of
            // the old one ends with `cluster recovered` then.
            metrics.up.set(0);
        }
        match want {
            None => {
                limiter.set_fleet(Fleet::Alone);
                metrics.up.set(0);
                metrics.instances.set(0);
                tracing::info!("cluster off: each key's limit is enforced by this instance alone");
                false
            }
            Some(config) => {
                tracing::info!(
                    redis = %config.redis.redacted(),
                    namespace = %config.namespace,
                    sync_ms = config.sync.as_millis() as u64,
                    timeout_ms = config.timeout.as_millis() as u64,
                    on_unavailable = config.on_unavailable.as_str(),
                    "cluster on"
                );
                // Until the first sync says otherwise, this instance is
                // alone in its fleet.
                if limiter.fleet() == Fleet::Alone {
                    limiter.set_fleet(Fleet::Synced { instances: 1 });
                }
                if let Some(s) = status(limiter.fleet()) {
                    metrics.instances.set(i64::from(s.instances));
                }
                match Link::new(config) {
                    Ok(l) => *link = Some(l),
                    Err(e) => tracing::error!(reason = %e, "cluster link cannot be made"),
                }
                true
            }
        }
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, SyncState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One sync of every bucket that has something to tell or to learn.
    async fn sync(&self) {
        let mut guard = self.link.lock().await;
        let Some(link) = guard.as_mut() else {
            return;
        };
        let limiter = &self.shared.limiter;
        let metrics = &self.shared.metrics.cluster;
        let namespace = link.config.namespace.clone();
        let sync_ms = link.config.sync.as_millis() as u64;
        let started = Instant::now();
        // While degraded, a PING comes first: a call that times out on a
        // stopped server is still run when it resumes, so consumption is sent
        // only once the server answers (at most the batch in flight when it
        // stopped is counted twice, which errs on the strict side).
        if self.lock_state().degraded.is_some()
            && let Err(e) = link
                .call("ping", async |mut conn| {
                    redis::cmd("PING").query_async::<String>(&mut conn).await
                })
                .await
        {
            let on_unavailable = link.config.on_unavailable;
            drop(guard);
            self.sync_failed(started, e, on_unavailable);
            return;
        }
        // A new link reads Redis's clock first: the first report of a bucket
        // this instance already spent from (before `[cluster]` was set, or
        // on another Redis) must tell where it stands, in Redis's time.
        if link.clock_offset.is_none() {
            let read = link
                .call("time", async |mut conn| {
                    redis::cmd("TIME")
                        .query_async::<(String, String)>(&mut conn)
                        .await
                })
                .await;
            match read {
                Ok((secs, micros)) => {
                    let at = self.shared.clock.mono_nanos();
                    if let (Ok(s), Ok(u)) = (secs.parse::<i64>(), micros.parse::<i64>()) {
                        link.clock_offset =
                            Some(s.saturating_mul(1_000_000).saturating_add(u) - local_micros(at));
                    }
                }
                Err(e) => {
                    let on_unavailable = link.config.on_unavailable;
                    drop(guard);
                    self.sync_failed(started, e, on_unavailable);
                    return;
                }
            }
        }
        let reports = limiter.collect(bucket_name);
        let members = format!("{namespace}:members");
        let mut sent = 0;
        let mut failure = None;
        let mut batches = reports.chunks(BATCH).peekable();
        let empty: &[Report] = &[];
        let mut first = true;
        // One call even with nothing to report: it is the heartbeat.
        while first || batches.peek().is_some() {
            let batch = batches.next().unwrap_or(empty);
            let heartbeat = first;
            first = false;
            let offset = link.clock_offset;
            let timeout_us = i64::try_from(link.config.timeout.as_micros()).unwrap_or(i64::MAX);
            let clock = &self.shared.clock;
            // An answer that this instance alone uses a bucket holds for 3
            // periods from here (the script's grant runs from later still).
            let alone_until = clock.mono_nanos().saturating_add(3 * sync_ms * 1_000_000);
            let answer = link
                .call("sync", async |mut conn| {
                    // On Redis's clock: when this instance gives up on the call.
                    let deadline = offset.map_or(0, |o| {
                        local_micros(clock.mono_nanos())
                            .saturating_add(o)
                            .saturating_add(timeout_us)
                    });
                    let script = sync_script();
                    let mut call = script.prepare_invoke();
                    call.key(&members);
                    for r in batch {
                        call.key(redis_key(&namespace, "b", &r.fleet_id));
                    }
                    call.arg(&self.instance)
                        .arg(sync_ms)
                        .arg(if heartbeat { "1" } else { "0" })
                        .arg(deadline.max(0));
                    for r in batch {
                        // On Redis's clock, so only once the offset is known
                        // (the script caps it at an empty bucket).
                        let known = match offset {
                            Some(o) if r.fleet_tat > 0 => {
                                local_micros(r.fleet_tat).saturating_add(o).max(0)
                            }
                            _ => 0,
                        };
                        call.arg(micros(r.limit.interval()))
                            .arg(micros(r.limit.capacity()))
                            .arg(r.consumed)
                            .arg(micros(r.age))
                            .arg(known)
                            .arg(if r.wants_token { "1" } else { "0" });
                    }
                    call.invoke_async::<Vec<redis::Value>>(&mut conn).await
                })
                .await;
            let at = self.shared.clock.mono_nanos();
            match answer.and_then(|a| parse_answer(&a, batch.len(), alone_until)) {
                Ok(SyncAnswer::Late { redis_now }) => {
                    link.clock_offset = Some(redis_now - local_micros(at));
                    failure = Some(LinkError {
                        kind: crate::telemetry::metrics::UpstreamErrorKind::Timeout,
                        reason: "the sync reached Redis after timeout_ms".into(),
                    });
                    break;
                }
                Ok(SyncAnswer::Applied {
                    redis_now,
                    instances,
                    buckets,
                }) => {
                    // Read late by the answer's trip back: deadlines err early.
                    link.clock_offset = Some(redis_now - local_micros(at));
                    limiter.set_fleet(Fleet::Synced { instances });
                    metrics.instances.set(i64::from(instances));
                    for (r, b) in batch.iter().zip(buckets) {
                        limiter.apply(r, b, at);
                    }
                    sent += batch.len();
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        let on_unavailable = link.config.on_unavailable;
        drop(guard);
        metrics
            .sync_duration
            .observe(started.elapsed().as_secs_f64());
        match failure {
            None => {
                metrics.up.set(1);
                let mut state = self.lock_state();
                if let Some(reason) = state.degraded.take() {
                    // Redis may have lost what it held (a restart, a
                    // failover): every last use known here is told again.
                    state.pushed.fill(0);
                    drop(state);
                    tracing::info!(was = %reason, "cluster recovered");
                }
            }
            Some(e) => {
                // Nothing admitted is lost: it goes out with the next sync.
                limiter.restore(&reports[sent..]);
                self.degrade(e, on_unavailable);
            }
        }
    }

    /// A sync that failed before its reports went out: timed, then degraded.
    fn sync_failed(
        &self,
        started: Instant,
        e: LinkError,
        on_unavailable: crate::config::OnUnavailable,
    ) {
        self.shared
            .metrics
            .cluster
            .sync_duration
            .observe(started.elapsed().as_secs_f64());
        self.degrade(e, on_unavailable);
    }

    /// A failed sync: counted, the limiter told, logged once per spell.
    fn degrade(&self, e: LinkError, on_unavailable: crate::config::OnUnavailable) {
        let limiter = &self.shared.limiter;
        let metrics = &self.shared.metrics.cluster;
        metrics.failure(e.kind);
        metrics.up.set(0);
        let instances = match limiter.fleet() {
            Fleet::Synced { instances } | Fleet::Degraded { instances, .. } => instances,
            Fleet::Alone => 1,
        };
        limiter.set_fleet(Fleet::Degraded {
            instances,
            mode: on_unavailable,
        });
        let mut state = self.lock_state();
        if state.degraded.is_none() {
            tracing::warn!(
                reason = %e,
                on_unavailable = on_unavailable.as_str(),
                instances,
                "cluster degraded"
            );
            state.degraded = Some(e.reason);
        }
    }

    /// Pushes the last uses that changed since the last push, once a second.
    async fn push_last_used(&self) {
        let gw = self.shared.state.load_full();
        let changed: Vec<(usize, i64)> = {
            let mut state = self.lock_state();
            if state.degraded.is_some() || state.last_push.is_some_and(|t| t.elapsed() < USED_EVERY)
            {
                return;
            }
            state.last_push = Some(Instant::now());
            let keys = &gw.policy.keys;
            if !Weak::ptr_eq(&state.keys, &Arc::downgrade(&gw)) {
                state.pushed = vec![0; keys.len()];
                state.keys = Arc::downgrade(&gw);
            }
            (0..keys.len())
                .filter_map(|slot| match keys.last_used(slot) {
                    Some(t) if t > state.pushed[slot] => Some((slot, t)),
                    _ => None,
                })
                .collect()
        };
        if changed.is_empty() {
            return;
        }
        let keys = &gw.policy.keys;
        let mut guard = self.link.lock().await;
        let Some(link) = guard.as_mut() else {
            return;
        };
        let namespace = link.config.namespace.clone();
        for batch in changed.chunks(USED_BATCH) {
            let answer = link
                .call("last use", async |mut conn| {
                    let script = used_script();
                    let mut call = script.prepare_invoke();
                    for &(slot, _) in batch {
                        call.key(redis_key(
                            &namespace,
                            "u",
                            &used_name(keys.record(slot).id()),
                        ));
                    }
                    call.arg(USED_TTL_SECS);
                    for &(_, t) in batch {
                        call.arg(t);
                    }
                    call.invoke_async::<Vec<i64>>(&mut conn).await
                })
                .await;
            match answer {
                Ok(seen) => {
                    let mut state = self.lock_state();
                    for (&(slot, t), fleet) in batch.iter().zip(seen) {
                        keys.note_used(slot, fleet);
                        if let Some(p) = state.pushed.get_mut(slot) {
                            *p = t.max(fleet);
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(reason = %e, "cluster: last uses not pushed; trying again");
                    return;
                }
            }
        }
    }
}

/// Leaves the fleet (so the others' shares grow at once): best effort.
async fn leave(mut link: Link, instance: &str) {
    let members = format!("{}:members", link.config.namespace);
    let _ = link
        .call("leave", async |mut conn| {
            redis::cmd("ZREM")
                .arg(&members)
                .arg(instance)
                .query_async::<i64>(&mut conn)
                .await
        })
        .await;
}

/// A monotonic instant in whole microseconds.
fn local_micros(nanos: u64) -> i64 {
    i64::try_from(nanos / 1000).unwrap_or(i64::MAX)
}

/// What one call of the sync script answered.
#[derive(Debug, Clone, PartialEq)]
enum SyncAnswer {
    /// The report counted: the fleet's size and each bucket as it now is.
    Applied {
        /// Redis's clock when the script ran, µs.
        redis_now: i64,
        instances: u32,
        buckets: Vec<FleetBucket>,
    },
    /// The call ran after its deadline (a stalled server resuming its
    /// queue) and changed nothing; the report is still this instance's.
    Late {
        /// Redis's clock when the script ran, µs.
        redis_now: i64,
    },
}

/// `alone_until`: until when an answer that this instance alone uses a
/// bucket holds.
fn parse_answer(
    answer: &[redis::Value],
    buckets: usize,
    alone_until: u64,
) -> Result<SyncAnswer, LinkError> {
    let bad = || LinkError {
        kind: crate::telemetry::metrics::UpstreamErrorKind::Other,
        reason: "unexpected answer from the sync script".into(),
    };
    let int = |v: &redis::Value| match v {
        redis::Value::Int(n) => Some(*n),
        _ => None,
    };
    let number = |v: &redis::Value| match v {
        redis::Value::BulkString(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|n| n.is_finite()),
        _ => None,
    };
    let (Some(first), Some(now)) = (answer.first().and_then(int), answer.get(1)) else {
        return Err(bad());
    };
    let redis_now = number(now).ok_or_else(bad)? as i64;
    if first == -1 && answer.len() == 2 {
        return Ok(SyncAnswer::Late { redis_now });
    }
    if answer.len() != 2 + 3 * buckets {
        return Err(bad());
    }
    let instances = first.clamp(1, i64::from(u32::MAX)) as u32;
    let mut out = Vec::with_capacity(buckets);
    for one in answer[2..].chunks(3) {
        let level = number(&one[0]).ok_or_else(bad)?;
        let share = match int(&one[1]).ok_or_else(bad)? {
            0 => Share::Alone { until: alone_until },
            1 => Share::Shared,
            2 => Share::Held,
            _ => return Err(bad()),
        };
        let reserved = match int(&one[2]).ok_or_else(bad)? {
            0 => false,
            1 => true,
            _ => return Err(bad()),
        };
        out.push(FleetBucket {
            level: (level.max(0.0) * 1000.0) as u64,
            share,
            reserved,
        });
    }
    Ok(SyncAnswer::Applied {
        redis_now,
        instances,
        buckets: out,
    })
}

fn sync_script() -> &'static Script {
    static SCRIPT: std::sync::OnceLock<Script> = std::sync::OnceLock::new();
    SCRIPT.get_or_init(|| Script::new(include_str!("sync.lua")))
}

fn used_script() -> &'static Script {
    static SCRIPT: std::sync::OnceLock<Script> = std::sync::OnceLock::new();
    SCRIPT.get_or_init(|| Script::new(include_str!("used.lua")))
}

#[async_trait]
impl BackgroundService for ClusterService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            if *shutdown.borrow() {
                break;
            }
            if !self.follow_config().await {
                tokio::select! {
                    _ = tokio::time::sleep(IDLE_POLL) => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
            let started = Instant::now();
            self.sync().await;
            self.push_last_used().await;
            let Some(config) = self.wanted() else {
                continue;
            };
            let degraded = self.lock_state().degraded.is_some();
            let period = if degraded {
                config.sync.min(RETRY_EVERY)
            } else {
                config.sync
            };
            let next = tokio::time::Instant::from_std(started + period);
            // A bucket may ask for an early sync; never more often than four
            // times a period.
            let earliest = tokio::time::Instant::from_std(started + period / 4);
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = self.shared.limiter.wants_sync(), if !degraded => {
                    tokio::time::sleep_until(earliest).await;
                }
                _ = shutdown.changed() => {}
            }
        }
        // Shutting down: tell the fleet what was admitted, and leave it.
        if self.wanted().is_some() {
            self.sync().await;
        }
        if let Some(link) = self.link.lock().await.take() {
            leave(link, &self.instance).await;
        }
    }
}

/// Reads fleet-wide last uses for `GET /keys`.
#[derive(Clone)]
pub struct FleetReader {
    link: Arc<tokio::sync::Mutex<Option<Link>>>,
}

impl FleetReader {
    /// Raises the last use of `slots` of `keys` to the fleet's latest. Within
    /// `timeout_ms`; on any failure the local figures stand.
    pub async fn fleet_last_used(&self, keys: &KeyIndex, slots: std::ops::Range<usize>) {
        let mut guard = self.link.lock().await;
        let Some(link) = guard.as_mut() else {
            return;
        };
        let namespace = link.config.namespace.clone();
        let names: Vec<String> = slots
            .clone()
            .map(|slot| redis_key(&namespace, "u", &used_name(keys.record(slot).id())))
            .collect();
        if names.is_empty() {
            return;
        }
        let answer = link
            .call("read last uses", async |mut conn| {
                redis::cmd("MGET")
                    .arg(&names)
                    .query_async::<Vec<Option<i64>>>(&mut conn)
                    .await
            })
            .await;
        if let Ok(seen) = answer {
            for (slot, t) in slots.zip(seen) {
                if let Some(t) = t {
                    keys.note_used(slot, t);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
