//! Periodic work off the request path: upstream health checks and the sweep
//! of idle rate-limit buckets (the log's thread writes its own batches).

use crate::request::Shared;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Periodic work off the request path: upstream health checks and the sweep
/// of idle rate-limit buckets.
pub struct Housekeeping {
    pub(crate) shared: Arc<Shared>,
}

#[async_trait]
impl BackgroundService for Housekeeping {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        const SWEEP_EVERY: Duration = Duration::from_secs(30);
        let mut last_sweep = Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
            let gw = self.shared.state.load_full();
            let now = self.shared.clock.unix_secs().max(0) as u64;
            for upstream in &gw.upstreams {
                if upstream.config.health_check.is_some() {
                    let upstream = Arc::clone(upstream);
                    tokio::spawn(async move { upstream.health_check_if_due(now).await });
                }
            }
            if last_sweep.elapsed() >= SWEEP_EVERY {
                last_sweep = Instant::now();
                let limiter = Arc::clone(&self.shared.limiter);
                let left = tokio::task::spawn_blocking(move || limiter.sweep())
                    .await
                    .unwrap_or(0);
                self.shared.metrics.buckets.set(left as i64);
            }
        }
    }
}
