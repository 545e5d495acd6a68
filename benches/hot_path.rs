//! The request hot path piece by piece: bearer parsing + SHA-256, route
//! matching over 100 routes, the whole `decide` on a 10,000-key snapshot, and
//! the limiter (uncontended, in a fleet, and two threads on one key), and
//! what adding the contract's headers costs: through Pingora's header API,
//! the way keygate adds them (`headers::for_upstream` and `for_client` on
//! the heads' own maps), and into a plain `http::HeaderMap` as the floor;
//! and one access-log line into the log's buffer.

use criterion::{Criterion, criterion_group, criterion_main};
use keygate::gateway::Gateway;
use keygate::model::key::{KeyDigest, Prefixes, bearer_token};
use keygate::model::limit::Limit;
use keygate::request::decide::{Authorization, Request, decide};
use keygate::request::limiter::{Fleet, Limiter};
use keygate::telemetry::metrics::Metrics;
use keygate::util::clock::SystemClock;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Writes a config with `routes` routes (the matching one last) and a snapshot
/// of `keys` keys; returns the loaded gateway and one valid key.
fn gateway(routes: usize, keys: usize) -> (tempfile::TempDir, Gateway, String) {
    use sha2::{Digest, Sha256};
    use std::fmt::Write;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cfg = String::from(
        "[server]\nlisten = [\"127.0.0.1:1\"]\n[keys]\nsnapshot = \"keys.toml\"\n\
         [[upstreams]]\nname = \"api\"\nservers = [\"127.0.0.1:9\"]\n",
    );
    for i in 0..routes - 1 {
        writeln!(
            cfg,
            "[[routes]]\nname = \"r{i}\"\npath = \"/api/v1/other{i}/{{workspace}}/**\"\nupstream = \"api\"\nauth = \"workspace\"\n"
        )
        .expect("write");
    }
    cfg.push_str(
        "[[routes]]\nname = \"posts\"\npath = \"/api/v1/workspaces/{workspace}/posts/**\"\nupstream = \"api\"\nauth = \"any\"\n",
    );
    let mut snap = String::from("[[workspaces]]\nid = \"ws_a\"\ncompany = \"acme\"\n");
    let mut valid = String::new();
    for i in 0..keys {
        let key = format!("ord_{:040}", i);
        let hash = hex::encode(Sha256::digest(key.as_bytes()));
        writeln!(
            snap,
            "[[keys]]\nid = \"k{i}\"\nname = \"n\"\ntype = \"workspace\"\ncompany = \"acme\"\nworkspace = \"ws_a\"\nscopes = [\"read:all\"]\nhash = \"sha256:{hash}\"\ncreated_at = \"2026-11-01T10:00:00Z\"\n"
        )
        .expect("write");
        if i == keys / 2 {
            valid = key;
        }
    }
    std::fs::write(dir.path().join("keygate.toml"), cfg).expect("config");
    std::fs::write(dir.path().join("keys.toml"), snap).expect("snapshot");
    let gw = Gateway::load(&dir.path().join("keygate.toml"), &Metrics::new(), None)
        .expect("bench config loads");
    (dir, gw, valid)
}

fn token_and_hash(c: &mut Criterion) {
    let header = format!("Bearer ord_c_{}", "A".repeat(40));
    let prefixes = Prefixes::default();
    c.bench_function("token: parse bearer + prefix + sha256", |b| {
        b.iter(|| {
            let t = bearer_token(std::iter::once(black_box(header.as_bytes()))).expect("token");
            let kind = prefixes.classify(t);
            (kind, KeyDigest::of(t))
        })
    });
}

fn route_match(c: &mut Criterion) {
    let (_dir, gw, _) = gateway(100, 1);
    let path = "/api/v1/workspaces/ws_a/posts/123";
    c.bench_function("routes: first match over 100 routes (last wins)", |b| {
        b.iter(|| {
            let split = keygate::model::pattern::SplitPath::new(black_box(path)).expect("absolute");
            gw.policy
                .routes
                .iter()
                .position(|r| r.pattern.matches_split(&split).is_some())
        })
    });
}

fn decide_bench(c: &mut Criterion) {
    let (_dir, gw, key) = gateway(10, 10_000);
    let header = format!("Bearer {key}");
    let method = http::Method::GET;
    let req = Request {
        method: &method,
        path: "/api/v1/workspaces/ws_a/posts/123",
        authorization: Authorization::One(header.as_bytes()),
        tls: false,
    };
    assert!(matches!(
        decide(&req, &gw.policy, 1_800_000_000),
        keygate::request::decide::Decision::Allow(_)
    ));
    c.bench_function("decide: valid key, 10k-key snapshot", |b| {
        b.iter(|| decide(black_box(&req), &gw.policy, 1_800_000_000))
    });
    let bad = format!("Bearer ord_{}", "Z".repeat(40));
    let bad_req = Request {
        authorization: Authorization::One(bad.as_bytes()),
        ..req
    };
    c.bench_function("decide: unknown key, 10k-key snapshot", |b| {
        b.iter(|| decide(black_box(&bad_req), &gw.policy, 1_800_000_000))
    });
}

fn limiter(c: &mut Criterion) {
    let limit = Limit::from_raw(1_000_000_000, 1, None).expect("limit");
    let limiter = Arc::new(Limiter::new(Arc::new(SystemClock::new()), 1_000_000));
    let id: Arc<str> = Arc::from("key_bench");
    c.bench_function("limiter: one allowed check, uncontended", |b| {
        b.iter(|| limiter.check(black_box(&id), limit))
    });
    // The same check as one instance of a fleet of 3 (CONTRACT §7): the
    // share's cost, the pending count and the fleet view for the headers.
    let fleet = Limiter::new(Arc::new(SystemClock::new()), 1_000_000);
    fleet.set_fleet(Fleet::Synced { instances: 3 });
    c.bench_function("limiter: one allowed check, uncontended, in a fleet", |b| {
        b.iter(|| fleet.check(black_box(&id), limit))
    });
    c.bench_function("limiter: one allowed check, 2 threads on one key", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            std::thread::scope(|s| {
                for _ in 0..2 {
                    s.spawn(|| {
                        for _ in 0..iters {
                            black_box(limiter.check(&id, limit));
                        }
                    });
                }
            });
            // Per check, as seen by one of the two threads.
            start.elapsed()
        })
    });
}

/// The custom headers keygate adds to a proxied request and its answer
/// (CONTRACT §3, §4): nine to the upstream, six to the client.
const ADDED: [(&str, &str); 15] = [
    ("x-request-id", "4f1c2a9e0b7d4c3e8a6f5b2d1c0e9f8a"),
    ("x-forwarded-for", "127.0.0.1"),
    ("forwarded", "for=127.0.0.1;proto=http"),
    ("x-forwarded-proto", "http"),
    ("x-keygate-key-id", "k5000"),
    ("x-keygate-key-type", "workspace"),
    ("x-keygate-company", "acme"),
    ("x-keygate-workspace", "ws_a"),
    ("x-keygate-scopes", "read:all"),
    ("x-request-id", "4f1c2a9e0b7d4c3e8a6f5b2d1c0e9f8a"),
    ("x-ratelimit-limit", "1000"),
    ("x-ratelimit-remaining", "999"),
    ("x-ratelimit-reset", "1"),
    ("ratelimit-policy", "\"default\";q=1000;w=60"),
    ("ratelimit", "\"default\";r=999;t=1"),
];

/// A request and an answer head as Pingora parses them: names' case kept,
/// the headers wrk and a small upstream send.
fn parsed_heads() -> (pingora::http::RequestHeader, pingora::http::ResponseHeader) {
    let mut req =
        pingora::http::RequestHeader::build("GET", b"/api/v1/workspaces/ws_a/posts/1", None)
            .expect("head");
    for (n, v) in [("Host", "127.0.0.1:8080"), ("Authorization", "Bearer x")] {
        req.insert_header(n, v).expect("valid");
    }
    let mut resp = pingora::http::ResponseHeader::build(200, None).expect("head");
    for (n, v) in [
        ("Server", "nginx"),
        ("Date", "Thu, 03 Dec 2026 09:00:00 GMT"),
        ("Content-Type", "text/plain"),
        ("Content-Length", "3"),
        ("Connection", "keep-alive"),
    ] {
        resp.insert_header(n, v).expect("valid");
    }
    (req, resp)
}

fn headers(c: &mut Criterion) {
    use http::{HeaderMap, HeaderName, HeaderValue};
    // What Pingora's API does for each: parse the name into a new
    // `HeaderName`, copy the value, insert into the value map and the case map.
    c.bench_function("headers: 15 added through Pingora's insert_header", |b| {
        b.iter_batched(
            parsed_heads,
            |(mut req, mut resp)| {
                for (name, value) in &ADDED[..9] {
                    req.insert_header(*name, *value).expect("valid");
                }
                for (name, value) in &ADDED[9..] {
                    resp.insert_header(*name, *value).expect("valid");
                }
                (req, resp)
            },
            criterion::BatchSize::SmallInput,
        )
    });
    // keygate's way: the heads taken apart into their `http` maps, names
    // static, values built into one buffer, Authorization removed.
    let (_dir, gw, key) = gateway(10, 100);
    let header = format!("Bearer {key}");
    let method = http::Method::GET;
    let req = Request {
        method: &method,
        path: "/api/v1/workspaces/ws_a/posts/1",
        authorization: Authorization::One(header.as_bytes()),
        tls: false,
    };
    let keygate::request::decide::Decision::Allow(allow) = decide(&req, &gw.policy, 1_800_000_000)
    else {
        panic!("the bench key is allowed");
    };
    let lifecycle = Arc::new(keygate::request::Lifecycle::default());
    let mut ctx = keygate::request::ctx::Ctx::new(lifecycle.enter());
    ctx.request_id = keygate::request::headers::new_request_id();
    ctx.client = Some(keygate::request::ctx::IpText::of([127, 0, 0, 1].into()));
    ctx.route = Some(allow.route);
    ctx.key_slot = allow.key.map(|(slot, _)| slot);
    ctx.workspace = Some("ws_a".into());
    ctx.rate = Some(Limiter::new(Arc::new(SystemClock::new()), 100).check("k50", Limit::DEFAULT));
    c.bench_function("headers: 15 added the way keygate adds them", |b| {
        b.iter_batched(
            parsed_heads,
            |(mut req, mut resp)| {
                keygate::request::headers::for_upstream(&mut req, &ctx, &gw).expect("added");
                keygate::request::headers::for_client(&mut resp, &ctx).expect("added");
                (req, resp)
            },
            criterion::BatchSize::SmallInput,
        )
    });
    // The floor: names parsed once, values shared, one map, no case map.
    let names: Vec<HeaderName> = ADDED
        .iter()
        .map(|(n, _)| HeaderName::from_static(n))
        .collect();
    let values: Vec<HeaderValue> = ADDED
        .iter()
        .map(|(_, v)| HeaderValue::from_static(v))
        .collect();
    c.bench_function(
        "headers: 15 added to an http::HeaderMap, static names",
        |b| {
            b.iter_batched(
                || (HeaderMap::with_capacity(16), HeaderMap::with_capacity(16)),
                |(mut req, mut resp)| {
                    for i in 0..9 {
                        req.insert(names[i].clone(), values[i].clone());
                    }
                    for i in 9..15 {
                        resp.insert(names[i].clone(), values[i].clone());
                    }
                    (req, resp)
                },
                criterion::BatchSize::SmallInput,
            )
        },
    );
}

/// One proxied request's access line, formatted into the buffer that the
/// log's own thread writes out (here to nowhere).
fn access_log(c: &mut Criterion) {
    use keygate::telemetry::log::{AccessLog, AccessRecord, LogFormat};
    use keygate::telemetry::sink::{CAP, Sink};
    use tracing_subscriber::layer::SubscriberExt;
    // `record` writes only what `RUST_LOG` lets through: let it through.
    let _quiet = tracing::subscriber::set_default(
        tracing_subscriber::registry().with(tracing_subscriber::EnvFilter::new("info")),
    );
    let log = AccessLog::to(
        LogFormat::Json,
        Arc::new(SystemClock::new()),
        Sink::new(Box::new(std::io::sink()), CAP),
    );
    let record = AccessRecord {
        request_id: "ee6558b60253e5c5dbde6c914b6c62d0",
        client: "203.0.113.7",
        method: "GET",
        path: "/api/v1/workspaces/ws_a/posts/42",
        route: "posts",
        status: 200,
        outcome: "proxied",
        key_id: Some("key_00042"),
        company: Some("acme"),
        workspace: Some("ws_a"),
        upstream: Some("api"),
        shadow: None,
        duration_ms: 0.412,
    };
    c.bench_function("access log: one JSON line into the log's buffer", |b| {
        b.iter(|| log.record(black_box(&record)))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = token_and_hash, route_match, decide_bench, limiter, headers, access_log
}
criterion_main!(benches);
