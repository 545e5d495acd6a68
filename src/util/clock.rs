//! Time, injected: the limiter and the decision take a clock so expiry,
//! revocation ages and refill are tested without sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// A source of monotonic and wall-clock time.
pub trait Clock: Send + Sync + 'static {
    /// Monotonic nanoseconds since an arbitrary origin (never goes back).
    fn mono_nanos(&self) -> u64;
    /// Wall-clock seconds since the Unix epoch.
    fn unix_secs(&self) -> i64;
    /// Wall-clock microseconds since the Unix epoch (log timestamps).
    fn unix_micros(&self) -> i64 {
        self.unix_secs().saturating_mul(1_000_000)
    }
}

/// The real clock.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    /// A clock whose monotonic origin is now.
    pub fn new() -> Self {
        SystemClock {
            origin: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn mono_nanos(&self) -> u64 {
        // u64 nanoseconds last 584 years of uptime.
        self.origin.elapsed().as_nanos() as u64
    }

    fn unix_secs(&self) -> i64 {
        unix_now()
    }

    fn unix_micros(&self) -> i64 {
        unix_micros_now()
    }
}

/// Wall-clock seconds since the epoch (0 if the system clock is before 1970).
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Wall-clock microseconds since the epoch (0 before 1970).
pub fn unix_micros_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// A clock moved by hand, for tests and benches.
#[derive(Debug, Default)]
pub struct ManualClock {
    nanos: AtomicU64,
    unix: AtomicI64,
}

impl ManualClock {
    /// A clock at monotonic 0 and the given wall-clock second.
    pub fn at(unix_secs: i64) -> Arc<Self> {
        Arc::new(ManualClock {
            nanos: AtomicU64::new(0),
            unix: AtomicI64::new(unix_secs),
        })
    }

    /// Moves both clocks forward.
    pub fn advance(&self, d: std::time::Duration) {
        self.nanos.fetch_add(d.as_nanos() as u64, Ordering::SeqCst);
        self.unix.fetch_add(d.as_secs() as i64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn mono_nanos(&self) -> u64 {
        self.nanos.load(Ordering::SeqCst)
    }

    fn unix_secs(&self) -> i64 {
        self.unix.load(Ordering::SeqCst)
    }
}
