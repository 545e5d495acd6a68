//! Per-key token buckets (contract §4 row 13) and the arithmetic of the
//! `X-RateLimit-*`, `RateLimit*` and `Retry-After` headers.
//!
//! Each bucket is one `AtomicU64` holding the GCRA "theoretical arrival time":
//! the instant at which the bucket will be full again. A request costs one
//! emission interval `T = per_secs / requests`; it is allowed when the bucket
//! would not be more than `burst · T` in debt. This is exactly a token bucket of
//! capacity `burst` refilled at `requests/per_secs`, updated with one CAS and no
//! lock of its own.
//!
//! Buckets live in a sharded `DashMap` outside the reloadable state, so a reload
//! keeps them; a bucket is reset only when its key's limit changes.
//!
//! Bounded: at most `max_buckets` buckets. A bucket that has refilled to full
//! carries no information (it is the same as no bucket), so idle buckets are
//! swept periodically and whenever the map is full. If the map is still full of
//! non-idle buckets, a new key is served as if its bucket were full and is not
//! tracked until room frees up: the trade-off is that, only in that overload,
//! such a key can exceed its limit; no request is refused for lack of memory.
//! Buckets are created only for authenticated keys, so clients cannot fill the
//! map with made-up keys.
//!
//! In a fleet (`[cluster]`, CONTRACT §7) the same bucket holds this
//! instance's allowance of the fleet's bucket, which [`crate::cluster`]
//! reconciles with Redis off the request path: [`Limiter::collect`] hands it
//! what was admitted since the last report, [`Limiter::apply`] sets the
//! allowance from the fleet's answer. Between syncs a request costs the
//! allowance `N·T` (so it refills at this instance's share of the rate),
//! except while the fleet has lately told this instance it is the only one
//! using the key: then `T`, so it may spend the whole remainder. That lapses
//! three sync periods after the read that said so, so an instance whose
//! syncs stall cannot keep spending a bucket others have started on; and an
//! instance joining such a key keeps to what it holds until the sole user
//! has heard of it (see `cluster/sync.lua`). The rate-limit headers show the
//! fleet's bucket as last read, minus what this instance admitted since.

use crate::config::OnUnavailable;
use crate::model::limit::Limit;
use crate::util::clock::Clock;
use dashmap::DashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

const NANOS_PER_SEC: u64 = crate::model::limit::NANOS_PER_SEC;

/// What the limiter decided for one request, with the figures for the headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Whether the request took a token.
    pub allowed: bool,
    /// The limit applied.
    pub limit: Limit,
    /// Whole tokens left.
    pub remaining: u64,
    /// Seconds until the bucket is full, rounded up.
    pub reset_secs: u64,
    /// Seconds until one token is back, rounded up, at least 1 (denials only).
    pub retry_after_secs: u64,
    /// The fleet's limiter cannot be reached and `on_unavailable = "deny"`:
    /// answer 503 (never set without `[cluster]`).
    pub unavailable: bool,
}

/// How the limiter counts: alone, or as one instance of a fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fleet {
    /// No `[cluster]`: every bucket is this instance's alone.
    Alone,
    /// Reconciled with Redis: buckets hold this instance's allowance.
    Synced {
        /// Instances of the fleet last seen (at least 1).
        instances: u32,
    },
    /// Redis cannot be reached: `on_unavailable` applies.
    Degraded {
        /// Instances of the fleet last seen (at least 1).
        instances: u32,
        /// What to do meanwhile.
        mode: OnUnavailable,
    },
}

impl Fleet {
    fn pack(self) -> u64 {
        let (tag, mode, n) = match self {
            Fleet::Alone => (0u64, 0u64, 1u32),
            Fleet::Synced { instances } => (1, 0, instances),
            Fleet::Degraded { instances, mode } => (2, mode as u64, instances),
        };
        tag | mode << 8 | u64::from(n.max(1)) << 32
    }

    fn unpack(v: u64) -> Fleet {
        let instances = ((v >> 32) as u32).max(1);
        match v & 0xff {
            1 => Fleet::Synced { instances },
            2 => Fleet::Degraded {
                instances,
                mode: match (v >> 8) & 0xff {
                    0 => OnUnavailable::LocalShare,
                    1 => OnUnavailable::LocalFull,
                    2 => OnUnavailable::Allow,
                    _ => OnUnavailable::Deny,
                },
            },
            _ => Fleet::Alone,
        }
    }
}

struct Bucket {
    /// GCRA arrival time of this instance's bucket (its allowance in a fleet).
    tat: AtomicU64,
    limit: Limit,
    /// What one request takes from `tat` while synced: `N·T`, this
    /// instance's share of the fleet's rate.
    cost: AtomicU64,
    /// Until when (monotonic nanoseconds) this instance may spend the whole
    /// remainder at `T`, as the only one using the bucket; 0 when not.
    alone_until: AtomicU64,
    /// Requests admitted since the last report to the fleet.
    pending: AtomicU64,
    /// When the first of them was admitted (monotonic nanoseconds).
    pending_since: AtomicU64,
    /// Requests reported in the sync now in flight, not yet in `fleet_tat`.
    inflight: AtomicU64,
    /// A request was refused since the last report.
    denied: AtomicBool,
    /// The fleet reserved a token for this instance (counted there already):
    /// spent when its own allowance refuses, and not reported again. One at
    /// most: an instance asks only while it holds none.
    reserved: AtomicBool,
    /// The fleet bucket's arrival time as last read, on this instance's
    /// clock; 0 until the first sync.
    fleet_tat: AtomicU64,
    /// The bucket's name in the fleet (a hash, computed once by the sync).
    fleet_id: OnceLock<[u8; 16]>,
}

impl Bucket {
    /// Counts one admitted request for the fleet; returns the pending count.
    #[inline]
    fn count(&self, now: u64) -> u64 {
        let before = self.pending.fetch_add(1, Ordering::AcqRel);
        if before == 0 {
            self.pending_since.store(now, Ordering::Relaxed);
        }
        before + 1
    }

    /// A report of `consumed` requests is answered or given back: they are
    /// no longer in flight.
    fn settle(&self, consumed: u64) {
        let _ = self
            .inflight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(consumed))
            });
    }

    fn new(limit: Limit, now: u64, cost: u64) -> Bucket {
        Bucket {
            tat: AtomicU64::new(now),
            limit,
            cost: AtomicU64::new(cost),
            alone_until: AtomicU64::new(0),
            pending: AtomicU64::new(0),
            pending_since: AtomicU64::new(0),
            inflight: AtomicU64::new(0),
            denied: AtomicBool::new(false),
            reserved: AtomicBool::new(false),
            fleet_tat: AtomicU64::new(0),
            fleet_id: OnceLock::new(),
        }
    }
}

/// One bucket's consumption since the last report, for the fleet sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The bucket id (a key id, or a rotation chain's root).
    pub bucket: Arc<str>,
    /// Its limit (part of its fleet identity).
    pub limit: Limit,
    /// Its fleet name, from the sync's naming function.
    pub fleet_id: [u8; 16],
    /// Requests admitted since the last report.
    pub consumed: u64,
    /// Nanoseconds since the first of them: the fleet credits the refill of
    /// that time (a report held back by an outage is not a burst now).
    pub age: u64,
    /// Whether a request was refused since the last report.
    pub denied: bool,
    /// Whether it asks for one of the fleet's last tokens: it refused a
    /// request and holds none reserved.
    pub wants_token: bool,
    /// When the fleet's bucket is full again as last read (this instance's
    /// monotonic nanoseconds; 0 if never read): what Redis is told to start
    /// from if it no longer holds the bucket (restarted, failed over).
    pub fleet_tat: u64,
}

/// The fleet's answer for one bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FleetBucket {
    /// Nanoseconds until the fleet's bucket is full again (its debt; may
    /// exceed the capacity when the fleet over-spent).
    pub level: u64,
    /// Who else spends from it.
    pub share: Share,
    /// Whether one token was reserved for this instance (already in
    /// `level`).
    pub reserved: bool,
}

/// Who spends from a fleet bucket, as one sync's answer says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Share {
    /// This instance alone: it may spend the whole remainder until `until`
    /// (its monotonic nanoseconds), when it must have heard again.
    Alone {
        /// Three sync periods after the report was sent.
        until: u64,
    },
    /// Others too (or the fleet has no record of the bucket yet): this
    /// instance spends its share, `remaining / N`.
    Shared,
    /// Others too, and one of them may still be spending the remainder it
    /// was told was its own, which the answer does not count yet: this
    /// instance keeps to what it holds (at most its share) until that one
    /// has synced.
    Held,
}

/// The per-key token buckets.
pub struct Limiter {
    /// foldhash (hashbrown's default, seeded per process) rather than
    /// SipHash: ids come from the operator's snapshot, and a bucket is only
    /// made for an authenticated key, so clients cannot choose what is hashed.
    buckets: DashMap<Arc<str>, Bucket, hashbrown::DefaultHashBuilder>,
    max_buckets: AtomicU64,
    clock: Arc<dyn Clock>,
    last_sweep: AtomicU64,
    untracked: AtomicU64,
    fleet: AtomicU64,
    wake: tokio::sync::Notify,
}

impl Limiter {
    /// An empty limiter holding at most `max_buckets` buckets.
    pub fn new(clock: Arc<dyn Clock>, max_buckets: usize) -> Self {
        Limiter {
            buckets: DashMap::with_hasher(hashbrown::DefaultHashBuilder::default()),
            max_buckets: AtomicU64::new(max_buckets as u64),
            clock,
            last_sweep: AtomicU64::new(0),
            untracked: AtomicU64::new(0),
            fleet: AtomicU64::new(Fleet::Alone.pack()),
            wake: tokio::sync::Notify::new(),
        }
    }

    /// Changes the bound (a reload may change `max_buckets`).
    pub fn set_max_buckets(&self, max: usize) {
        self.max_buckets.store(max as u64, Ordering::Relaxed);
    }

    /// Buckets currently held.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no bucket is held.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Requests served untracked because the map was full of active buckets.
    pub fn untracked(&self) -> u64 {
        self.untracked.load(Ordering::Relaxed)
    }

    /// How the limiter counts now.
    pub fn fleet(&self) -> Fleet {
        Fleet::unpack(self.fleet.load(Ordering::Relaxed))
    }

    /// Set by the fleet sync (and back to [`Fleet::Alone`] when `[cluster]`
    /// is removed).
    pub fn set_fleet(&self, fleet: Fleet) {
        self.fleet.store(fleet.pack(), Ordering::Relaxed);
    }

    /// Resolves when a bucket wants an early sync (a new bucket, or one that
    /// refused a request).
    pub fn wants_sync(&self) -> tokio::sync::futures::Notified<'_> {
        self.wake.notified()
    }

    /// Takes one token from `key_id`'s bucket if there is one.
    pub fn check(&self, key_id: &str, limit: Limit) -> Outcome {
        let now = self.clock.mono_nanos();
        let fleet = self.fleet();
        if let Some(bucket) = self.buckets.get(key_id)
            && bucket.limit == limit
        {
            return self.take_from(&bucket, fleet, now);
        }
        self.check_slow(key_id, limit, now, fleet)
    }

    /// New key, or a key whose limit changed (its bucket is reset).
    #[cold]
    fn check_slow(&self, key_id: &str, limit: Limit, now: u64, fleet: Fleet) -> Outcome {
        let max = self.max_buckets.load(Ordering::Relaxed) as usize;
        if !self.buckets.contains_key(key_id) && self.buckets.len() >= max {
            self.sweep_at_most_once_a_second(now);
            if self.buckets.len() >= max {
                self.untracked.fetch_add(1, Ordering::Relaxed);
                let interval = limit.interval();
                return take(&AtomicU64::new(now), limit, interval, interval, now);
            }
        }
        // Until the first sync, a new bucket in a fleet is this instance's
        // share of a full one.
        let cost = match fleet {
            Fleet::Alone => limit.interval(),
            Fleet::Synced { instances } | Fleet::Degraded { instances, .. } => {
                share_cost(limit, instances)
            }
        };
        let entry = self
            .buckets
            .entry(Arc::from(key_id))
            .and_modify(|b| {
                if b.limit != limit {
                    *b = Bucket::new(limit, now, cost);
                }
            })
            .or_insert_with(|| Bucket::new(limit, now, cost));
        if fleet != Fleet::Alone {
            self.wake.notify_one();
        }
        self.take_from(&entry, fleet, now)
    }

    fn take_from(&self, b: &Bucket, fleet: Fleet, now: u64) -> Outcome {
        let limit = b.limit;
        let interval = limit.interval();
        match fleet {
            Fleet::Alone => take(&b.tat, limit, interval, interval, now),
            Fleet::Synced { .. } => {
                let cost = if b.alone_until.load(Ordering::Relaxed) > now {
                    interval
                } else {
                    b.cost.load(Ordering::Relaxed)
                };
                let mut own = take(&b.tat, limit, cost, interval, now);
                let pending = if own.allowed {
                    b.count(now)
                } else if b
                    .reserved
                    .compare_exchange(true, false, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    // Counted by the fleet when it was reserved.
                    own.allowed = true;
                    b.pending.load(Ordering::Acquire)
                } else {
                    b.denied.store(true, Ordering::Relaxed);
                    self.wake.notify_one();
                    b.pending.load(Ordering::Acquire)
                };
                // What the fleet has not counted yet: the sync in flight's
                // report and what was admitted since.
                let unseen = pending + b.inflight.load(Ordering::Acquire);
                let view = b.fleet_tat.load(Ordering::Relaxed).max(now) + unseen * interval;
                fleet_view(limit, own.allowed, view - now)
            }
            Fleet::Degraded { instances, mode } => {
                let cost = match mode {
                    OnUnavailable::LocalShare => share_cost(limit, instances),
                    OnUnavailable::LocalFull | OnUnavailable::Allow => interval,
                    OnUnavailable::Deny => {
                        return Outcome {
                            allowed: false,
                            limit,
                            remaining: 0,
                            reset_secs: 0,
                            retry_after_secs: 1,
                            unavailable: true,
                        };
                    }
                };
                let mut outcome = take(&b.tat, limit, cost, cost, now);
                if outcome.allowed || mode == OnUnavailable::Allow {
                    // Told to the fleet once Redis answers again.
                    b.count(now);
                    outcome.allowed = true;
                    outcome.retry_after_secs = 0;
                }
                outcome
            }
        }
    }

    fn sweep_at_most_once_a_second(&self, now: u64) {
        let last = self.last_sweep.load(Ordering::Relaxed);
        if (last == 0 || now.saturating_sub(last) >= NANOS_PER_SEC)
            && self
                .last_sweep
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.sweep();
        }
    }

    /// Drops every bucket that has refilled to full and has nothing left to
    /// tell the fleet. Returns how many remain.
    pub fn sweep(&self) -> usize {
        let now = self.clock.mono_nanos();
        self.buckets.retain(|_, b| {
            b.tat.load(Ordering::Acquire) > now
                || b.fleet_tat.load(Ordering::Relaxed) > now
                || b.pending.load(Ordering::Acquire) > 0
        });
        self.buckets.len()
    }

    /// Drops the buckets of keys no longer in the snapshot (after a reload).
    pub fn retain_keys(&self, mut keep: impl FnMut(&str) -> bool) {
        self.buckets.retain(|id, _| keep(id));
    }

    /// Starts bucket `to` from the state of bucket `from`, whose requests
    /// are now counted under `to` (a rotation chain renamed by a reload that
    /// deleted its older keys): what was spent stays spent, and what was
    /// admitted and not yet told to the fleet moves along. Nothing happens
    /// when `from` holds nothing or `to` is already in use.
    pub fn carry(&self, from: &str, to: &str) {
        if from == to || self.buckets.contains_key(to) {
            return;
        }
        let copy = {
            let Some(b) = self.buckets.get(from) else {
                return;
            };
            let pending = b.pending.swap(0, Ordering::AcqRel);
            Bucket {
                tat: AtomicU64::new(b.tat.load(Ordering::Acquire)),
                limit: b.limit,
                cost: AtomicU64::new(b.cost.load(Ordering::Relaxed)),
                alone_until: AtomicU64::new(0),
                pending: AtomicU64::new(pending),
                pending_since: AtomicU64::new(b.pending_since.load(Ordering::Relaxed)),
                inflight: AtomicU64::new(0),
                denied: AtomicBool::new(false),
                reserved: AtomicBool::new(false),
                // Where the fleet's copy starts, if it has none under the
                // new name.
                fleet_tat: AtomicU64::new(b.fleet_tat.load(Ordering::Relaxed)),
                fleet_id: OnceLock::new(),
            }
        };
        self.buckets.entry(Arc::from(to)).or_insert(copy);
        if self.fleet() != Fleet::Alone {
            self.wake.notify_one();
        }
    }

    /// What the fleet must hear: every bucket that admitted or refused a
    /// request since the last report, is not full, or was never synced. The
    /// consumption handed out is cleared here; give it back with
    /// [`Limiter::restore`] if the report fails.
    pub fn collect(&self, name: impl Fn(&str, Limit) -> [u8; 16]) -> Vec<Report> {
        let now = self.clock.mono_nanos();
        let mut out = Vec::new();
        for entry in self.buckets.iter() {
            let b = entry.value();
            let fleet_tat = b.fleet_tat.load(Ordering::Relaxed);
            let pending = b.pending.load(Ordering::Acquire);
            let denied = b.denied.load(Ordering::Relaxed);
            if pending == 0
                && !denied
                && fleet_tat != 0
                && fleet_tat <= now
                && b.tat.load(Ordering::Acquire) <= now
            {
                continue;
            }
            let consumed = b.pending.swap(0, Ordering::AcqRel);
            b.inflight.fetch_add(consumed, Ordering::AcqRel);
            let denied = b.denied.swap(false, Ordering::Relaxed);
            let age = if consumed > 0 {
                now.saturating_sub(b.pending_since.load(Ordering::Relaxed))
            } else {
                0
            };
            // Never synced and nothing counted for the fleet: the bucket was
            // spent from alone (before `[cluster]` was set), and the fleet
            // starts from where it stands.
            let known = if fleet_tat == 0 && consumed == 0 {
                b.tat.load(Ordering::Acquire)
            } else {
                fleet_tat
            };
            out.push(Report {
                age,
                bucket: Arc::clone(entry.key()),
                limit: b.limit,
                fleet_id: *b.fleet_id.get_or_init(|| name(entry.key(), b.limit)),
                consumed,
                denied,
                wants_token: denied && !b.reserved.load(Ordering::Acquire),
                fleet_tat: known,
            });
        }
        out
    }

    /// Gives back what a failed report took, so the next one sends it.
    pub fn restore(&self, reports: &[Report]) {
        for r in reports {
            if let Some(b) = self.buckets.get(&*r.bucket)
                && b.limit == r.limit
            {
                if r.consumed > 0 {
                    b.settle(r.consumed);
                    let now = self.clock.mono_nanos();
                    let before = b.pending.fetch_add(r.consumed, Ordering::AcqRel);
                    let since = now.saturating_sub(r.age);
                    if before == 0 {
                        b.pending_since.store(since, Ordering::Relaxed);
                    } else {
                        b.pending_since.fetch_min(since, Ordering::Relaxed);
                    }
                }
                if r.denied {
                    b.denied.store(true, Ordering::Relaxed);
                }
            }
        }
    }

    /// Sets a bucket from the fleet's answer, read at `at` (this instance's
    /// monotonic clock). What was admitted since the report was sent is
    /// still pending and is taken off the allowance again.
    pub fn apply(&self, report: &Report, answer: FleetBucket, at: u64) {
        let Some(b) = self.buckets.get(&*report.bucket) else {
            return;
        };
        if b.limit != report.limit {
            return;
        }
        let Fleet::Synced { instances } = self.fleet() else {
            b.settle(report.consumed);
            return;
        };
        let limit = b.limit;
        let interval = limit.interval();
        if answer.reserved {
            b.reserved.store(true, Ordering::Release);
        }
        b.fleet_tat
            .store((at + answer.level).max(1), Ordering::Release);
        // Now in `fleet_tat`: the headers stop adding them.
        b.settle(report.consumed);
        let pending = b.pending.load(Ordering::Acquire);
        let share = share_cost(limit, instances);
        b.cost.store(share, Ordering::Relaxed);
        let (alone_until, cost) = match answer.share {
            Share::Alone { until } => (until, interval),
            Share::Shared | Share::Held => (0, share),
        };
        b.alone_until.store(alone_until, Ordering::Relaxed);
        let tat = at + answer.level + pending * cost;
        if answer.share == Share::Held {
            // Never more than the fleet's figure allows, nor than what this
            // instance already held.
            b.tat.fetch_max(tat, Ordering::AcqRel);
        } else {
            b.tat.store(tat, Ordering::Release);
        }
    }
}

/// What a request takes from this instance's share: `N·T`, so the share
/// holds `burst/N` tokens and refills at `rate/N`; never more than the
/// capacity, so a share can always admit one request.
fn share_cost(limit: Limit, instances: u32) -> u64 {
    limit
        .interval()
        .saturating_mul(u64::from(instances.max(1)))
        .min(limit.capacity())
}

/// The headers' figures from the fleet's bucket, `level` nanoseconds from full.
fn fleet_view(limit: Limit, allowed: bool, level: u64) -> Outcome {
    let interval = limit.interval();
    let capacity = limit.capacity();
    Outcome {
        allowed,
        limit,
        remaining: if allowed {
            capacity.saturating_sub(level) / interval
        } else {
            0
        },
        reset_secs: secs_ceil(level),
        retry_after_secs: if allowed {
            0
        } else {
            secs_ceil((level + interval).saturating_sub(capacity)).max(1)
        },
        unavailable: false,
    }
}

/// One GCRA step on a bucket's arrival time: a request costs `cost`; the
/// figures count tokens of `unit` nanoseconds.
fn take(tat: &AtomicU64, limit: Limit, cost: u64, unit: u64, now: u64) -> Outcome {
    let tau = limit.capacity();
    let mut current = tat.load(Ordering::Acquire);
    loop {
        let base = current.max(now);
        let next = base + cost;
        if next - now > tau {
            return Outcome {
                allowed: false,
                limit,
                remaining: 0,
                reset_secs: secs_ceil(base - now),
                retry_after_secs: secs_ceil(next - tau - now).max(1),
                unavailable: false,
            };
        }
        match tat.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {
                return Outcome {
                    allowed: true,
                    limit,
                    remaining: (tau - (next - now)) / unit,
                    reset_secs: secs_ceil(next - now),
                    retry_after_secs: 0,
                    unavailable: false,
                };
            }
            Err(actual) => current = actual,
        }
    }
}

fn secs_ceil(nanos: u64) -> u64 {
    nanos.div_ceil(NANOS_PER_SEC)
}

#[cfg(test)]
mod tests;
