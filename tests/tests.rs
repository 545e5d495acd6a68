//! Black-box tests: the real `keygate` binary against a real upstream on
//! 127.0.0.1, driven by real HTTP clients. One binary; each file is a topic.

// The harness, by role: upstream, snapshot, gateway, PKI, raw HTTP, secret checks.
mod support;

#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;

// Admin listener: /metrics, /healthz, /readyz, /keys, /reload and its token.
mod admin;
// Library: a counting allocator around the hot path (drives the library API).
mod alloc;
// CONTRACT §7: gateway fleets sharing limits on a real Redis, stopped, killed and restarted.
mod cluster;
// CONTRACT §3-5 by section: status rows, precedence, bearer, request id, upstream, routes.
mod contract;
// `keygate demo` and its curl lines.
mod demo;
// Attacks, a file each: smuggling, hop-by-hop, forged, paths, heads, bodies, slow peers, secrets.
mod hostile;
// `keygate keys new|revoke|list|hash` on real files, locks and owners.
mod keys_cli;
// Start-up errors, check and its warnings, SIGTERM drain, SIGINT.
mod lifecycle;
// Library: property tests of the parsers and matching (drives the library API).
mod props;
// CONTRACT §9: keys rotate, replaces, one bucket per chain.
mod rotate;
// Hot reload: SIGHUP, POST /reload, the file watch, state held by slow clients.
mod reload;
// CONTRACT §8: shadow routes.
mod shadow;
// The binary starts and answers.
mod smoke;
// TLS listeners, HTTP/2, upstream TLS and pools.
mod tls;
// CONTRACT §10: run --upgrade and the SIGQUIT hand-over.
mod upgrade;
// Wire-level client faults: parser refusals, head/body timeouts, TLS and HTTP/2 deadlines.
mod wire;
