//! The request path, in the order a request takes it: [`downstream`] (the
//! client connection: TLS, head deadline, refused heads), [`proxy`] (the
//! Pingora glue, one call per phase), [`precheck`] (framing and head size),
//! [`decide`] (rows 1-12, pure), [`limiter`] (row 13), [`headers`] (what the
//! upstream and the client are told), [`respond`] (a denial written out) and
//! [`failure`] (what a failed proxy attempt was). [`Shared`] is what every
//! request reads; [`Lifecycle`] counts them in flight.

use crate::gateway::Gateway;
use crate::request::limiter::Limiter;
use crate::telemetry::log::AccessLog;
use crate::telemetry::metrics::Metrics;
use crate::util::clock::Clock;
use arc_swap::ArcSwap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

pub mod ctx;
pub mod decide;
pub(crate) mod downstream;
pub(crate) mod failure;
pub mod headers;
pub mod limiter;
pub mod precheck;
pub mod proxy;
pub(crate) mod respond;

/// State shared by every request.
pub struct Shared {
    /// The live gateway, swapped whole on reload.
    pub state: Arc<ArcSwap<Gateway>>,
    /// Per-key buckets (outlive reloads).
    pub limiter: Arc<Limiter>,
    /// Metric families.
    pub metrics: Arc<Metrics>,
    /// Time source.
    pub clock: Arc<dyn Clock>,
    /// Readiness and in-flight accounting.
    pub lifecycle: Arc<Lifecycle>,
    /// Batched access-log lines.
    pub access_log: Arc<AccessLog>,
    /// Per-process secret of the readiness probe.
    pub probe: String,
}

/// Header carrying the readiness probe's secret. A request with the right
/// value is answered `204` by keygate itself, unlogged and uncounted: it is
/// how start-up tells its own listener from another process on the port.
pub const PROBE_HEADER: &str = "x-keygate-probe";

/// Readiness and in-flight accounting, shared by the proxy, admin and signals.
#[derive(Debug, Default)]
pub struct Lifecycle {
    ready: AtomicBool,
    reload_signal: AtomicBool,
    draining: AtomicBool,
    handing_over: AtomicBool,
    inflight: AtomicUsize,
}

/// Counts one request in flight until dropped.
#[derive(Debug)]
pub struct InflightGuard(Arc<Lifecycle>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Lifecycle {
    /// Marks a request in flight.
    pub fn enter(self: &Arc<Self>) -> InflightGuard {
        self.inflight.fetch_add(1, Ordering::AcqRel);
        InflightGuard(Arc::clone(self))
    }

    /// Requests in flight.
    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Acquire)
    }

    /// Listeners accept and state is loaded.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// SIGTERM arrived.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Whether SIGHUP has its handler (or cannot have one: POST /reload
    /// is then the way, as logged).
    pub fn reload_signal_handled(&self) -> bool {
        self.reload_signal.load(Ordering::Acquire)
    }

    /// Marks SIGHUP as handled.
    pub fn set_reload_signal_handled(&self) {
        self.reload_signal.store(true, Ordering::Release);
    }

    /// Marks the gateway ready.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Whether the listeners are being handed to a new process.
    pub fn is_handing_over(&self) -> bool {
        self.handing_over.load(Ordering::Acquire)
    }

    /// Marks the listeners as being handed over.
    pub fn set_handing_over(&self) {
        self.handing_over.store(true, Ordering::Release);
    }

    /// Marks the gateway draining.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }
}
