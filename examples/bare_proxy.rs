//! The ceiling for keygate's throughput: a plain Pingora reverse proxy built
//! from the same `pingora` crate and features as keygate, that only forwards
//! every request to one upstream over pooled keep-alive connections. No
//! decision, no headers, no log, no metrics.
//!
//! `benches/load.py` runs it beside keygate and nginx; the ratio keygate/bare
//! is what keygate's own per-request work costs.
//!
//! ```text
//! cargo run --release --example bare_proxy -- \
//!     --listen 127.0.0.1:8081 --upstream 127.0.0.1:9000 --threads 1
//! ```
//!
//! SIGINT exits at once; SIGTERM waits `--grace-secs` (default 1) and then
//! gives the runtime one second to finish, as keygate's `ServerConf` does.

/// The same allocator as the keygate binary, so the ceiling differs from it
/// only in what keygate does per request.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use async_trait::async_trait;
use clap::Parser;
use pingora::prelude::*;
use pingora::proxy::{ProxyHttp, Session};
use pingora::server::configuration::ServerConf;
use std::net::SocketAddr;
use std::time::Duration;

/// The timeouts keygate puts on every upstream peer by default
/// (`connect_timeout_ms`, `read_timeout_ms` and the pool idle timeout in
/// `src/upstream.rs`), so both proxies hold pooled connections alike.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(2000);
const READ_TIMEOUT: Duration = Duration::from_millis(30000);
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A bare Pingora reverse proxy to one upstream.
#[derive(Debug, Parser)]
#[command(name = "bare_proxy")]
struct Args {
    /// Address to listen on (plain HTTP).
    #[arg(long)]
    listen: SocketAddr,
    /// The one upstream server, `ip:port`.
    #[arg(long)]
    upstream: SocketAddr,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// SIGTERM: seconds Pingora waits before stopping its runtimes.
    #[arg(long, default_value_t = 1)]
    grace_secs: u64,
}

struct Bare {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    /// Always the one upstream, plain HTTP, with keygate's timeouts; Pingora
    /// reuses a pooled connection to it when one is idle.
    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        let mut peer = HttpPeer::new(self.upstream, false, String::new());
        let o = &mut peer.options;
        o.connection_timeout = Some(CONNECT_TIMEOUT);
        o.read_timeout = Some(READ_TIMEOUT);
        o.write_timeout = Some(READ_TIMEOUT);
        o.idle_timeout = Some(IDLE_TIMEOUT);
        Ok(Box::new(peer))
    }
}

fn main() {
    let args = Args::parse();
    let conf = ServerConf {
        threads: args.threads.max(1),
        grace_period_seconds: Some(args.grace_secs),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        Bare {
            upstream: args.upstream,
        },
        "bare_proxy",
    );
    proxy.add_tcp(&args.listen.to_string());
    server.add_service(proxy);
    server.run_forever()
}
