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

use crate::model::limit::Limit;
use crate::util::clock::Clock;
use dashmap::DashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

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
}

struct Bucket {
    tat: AtomicU64,
    limit: Limit,
}

/// The per-key token buckets.
pub struct Limiter {
    buckets: DashMap<Arc<str>, Bucket>,
    max_buckets: AtomicU64,
    clock: Arc<dyn Clock>,
    last_sweep: AtomicU64,
    untracked: AtomicU64,
}

impl Limiter {
    /// An empty limiter holding at most `max_buckets` buckets.
    pub fn new(clock: Arc<dyn Clock>, max_buckets: usize) -> Self {
        Limiter {
            buckets: DashMap::new(),
            max_buckets: AtomicU64::new(max_buckets as u64),
            clock,
            last_sweep: AtomicU64::new(0),
            untracked: AtomicU64::new(0),
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

    /// Takes one token from `key_id`'s bucket if there is one.
    pub fn check(&self, key_id: &str, limit: Limit) -> Outcome {
        let now = self.clock.mono_nanos();
        if let Some(bucket) = self.buckets.get(key_id)
            && bucket.limit == limit
        {
            return take(&bucket.tat, limit, now);
        }
        self.check_slow(key_id, limit, now)
    }

    /// New key, or a key whose limit changed (its bucket is reset).
    #[cold]
    fn check_slow(&self, key_id: &str, limit: Limit, now: u64) -> Outcome {
        let max = self.max_buckets.load(Ordering::Relaxed) as usize;
        if !self.buckets.contains_key(key_id) && self.buckets.len() >= max {
            self.sweep_at_most_once_a_second(now);
            if self.buckets.len() >= max {
                self.untracked.fetch_add(1, Ordering::Relaxed);
                return take(&AtomicU64::new(now), limit, now);
            }
        }
        let entry = self
            .buckets
            .entry(Arc::from(key_id))
            .and_modify(|b| {
                if b.limit != limit {
                    *b = Bucket {
                        tat: AtomicU64::new(now),
                        limit,
                    };
                }
            })
            .or_insert_with(|| Bucket {
                tat: AtomicU64::new(now),
                limit,
            });
        take(&entry.tat, limit, now)
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

    /// Drops every bucket that has refilled to full. Returns how many remain.
    pub fn sweep(&self) -> usize {
        let now = self.clock.mono_nanos();
        self.buckets
            .retain(|_, b| b.tat.load(Ordering::Acquire) > now);
        self.buckets.len()
    }

    /// Drops the buckets of keys no longer in the snapshot (after a reload).
    pub fn retain_keys(&self, mut keep: impl FnMut(&str) -> bool) {
        self.buckets.retain(|id, _| keep(id));
    }
}

/// One GCRA step on a bucket's arrival time.
fn take(tat: &AtomicU64, limit: Limit, now: u64) -> Outcome {
    let t = limit.interval();
    let tau = limit.capacity();
    let mut current = tat.load(Ordering::Acquire);
    loop {
        let base = current.max(now);
        let next = base + t;
        if next - now > tau {
            return Outcome {
                allowed: false,
                limit,
                remaining: 0,
                reset_secs: secs_ceil(base - now),
                retry_after_secs: secs_ceil(next - tau - now).max(1),
            };
        }
        match tat.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {
                return Outcome {
                    allowed: true,
                    limit,
                    remaining: (tau - (next - now)) / t,
                    reset_secs: secs_ceil(next - now),
                    retry_after_secs: 0,
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
