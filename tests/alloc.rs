//! The hot path allocates nothing for an allowed decision: a counting global
//! allocator (installed in tests.rs) counts this thread's allocations around
//! `decide` and the limiter.

use crate::support::*;
use keygate::request::decide::{Authorization, Decision, Request, decide};
use std::cell::Cell;
use std::sync::Arc;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

/// Counts allocations per thread so tests running in parallel do not disturb it.
pub struct Counting;

// SAFETY: forwards every call to the system allocator unchanged.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new: usize) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        unsafe { std::alloc::System.realloc(ptr, layout, new) }
    }
}

fn allocations_during(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

#[test]
fn allowed_decision_and_limiter_check_allocate_nothing() {
    let mut snap = Snapshot::new().workspace("ws_a", "acme");
    for i in 0..1000 {
        snap.workspace_key(&format!("k{i}"), "acme", "ws_a")
            .scopes(&["read:all"])
            .add();
    }
    let company = snap
        .company_key("k_company", "acme")
        .scopes(&["read:all"])
        .add();
    let ws = snap.keys[10].key.clone();
    let dir = tempfile::tempdir().unwrap();
    let config = standard_config("127.0.0.1:9".parse().unwrap(), "", "")
        .replace("{http}", "1")
        .replace("{admin}", "2");
    std::fs::write(dir.path().join("keygate.toml"), config).unwrap();
    std::fs::write(dir.path().join("keys.toml"), snap.render()).unwrap();
    let metrics = keygate::telemetry::metrics::Metrics::new();
    let gw =
        keygate::gateway::Gateway::load(&dir.path().join("keygate.toml"), &metrics, None).unwrap();
    let limiter = keygate::request::limiter::Limiter::new(
        Arc::new(keygate::util::clock::SystemClock::new()),
        1000,
    );
    let get = http::Method::GET;
    let cases = [
        (format!("Bearer {ws}"), "/api/v1/workspaces/ws_a/posts/1"),
        (
            format!("bearer   {company}"),
            "/api/v1/company/workspaces/ws_a/x",
        ),
        (format!("Bearer {company}"), "/api/v1/company/things"),
        (String::new(), "/healthz"),
    ];
    for (header, path) in &cases {
        let req = Request {
            method: &get,
            path,
            authorization: if header.is_empty() {
                Authorization::Absent
            } else {
                Authorization::One(header.as_bytes())
            },
            tls: false,
        };
        // Warm the limiter's bucket for this key first: creating it allocates once.
        if let Decision::Allow(a) = decide(&req, &gw.policy, 1_800_000_000)
            && let Some((_, key)) = a.key
        {
            limiter.check(key.id(), keygate::model::limit::Limit::DEFAULT);
        }
        let n = allocations_during(|| {
            let d = decide(&req, &gw.policy, 1_800_000_000);
            let Decision::Allow(a) = d else {
                panic!("{path} should be allowed");
            };
            if let Some((slot, key)) = a.key {
                gw.policy.keys.touch(slot, 1_800_000_000);
                std::hint::black_box(
                    limiter.check(key.id(), keygate::model::limit::Limit::DEFAULT),
                );
            }
        });
        assert_eq!(n, 0, "{path}: {n} allocations on the allowed path");
    }
    // The counter does count: a denial with a formatted message allocates.
    let req = Request {
        method: &get,
        path: "/nowhere",
        authorization: Authorization::Absent,
        tls: false,
    };
    assert!(
        allocations_during(|| {
            std::hint::black_box(decide(&req, &gw.policy, 1_800_000_000));
        }) > 0
    );
}

/// The rest of an allowed request's work outside Pingora: the precheck, the
/// client's request id, the client address, what a request keeps once the
/// upstream answers (`Ctx::settle`) allocate nothing; a request id keygate
/// makes is one allocation, shared by both heads; the header values keygate
/// builds for a head share one buffer (two allocations for all of them),
/// and adding its headers grows a head's map at most once; names are
/// statics. What else allocates per request: the `Box` of the context (one
/// allocation, so that Pingora's futures move 8 bytes of it instead of
/// 450), and Pingora's own: the heads it parses and their case maps, and
/// the upstream connection's buffers.
#[test]
fn allowed_request_glue_allocates_only_the_header_values_it_hands_over() {
    use keygate::request::ctx::{Ctx, IpText, KeyId};
    use keygate::request::headers;
    use keygate::request::precheck::{HeadFacts, HeadLimits, precheck};
    let mut snap = Snapshot::new();
    let company = snap
        .company_key("k_company", "acme")
        .scopes(&["read:all"])
        .add();
    let dir = tempfile::tempdir().unwrap();
    let config = standard_config("127.0.0.1:9".parse().unwrap(), "", "")
        .replace("{http}", "1")
        .replace("{admin}", "2");
    std::fs::write(dir.path().join("keygate.toml"), config).unwrap();
    std::fs::write(dir.path().join("keys.toml"), snap.render()).unwrap();
    let metrics = keygate::telemetry::metrics::Metrics::new();
    let gw = Arc::new(
        keygate::gateway::Gateway::load(&dir.path().join("keygate.toml"), &metrics, None).unwrap(),
    );
    let lifecycle = Arc::new(keygate::request::Lifecycle::default());
    let header = format!("Bearer {company}");
    let get = http::Method::GET;
    let req = Request {
        method: &get,
        path: "/api/v1/company/things",
        authorization: Authorization::One(header.as_bytes()),
        tls: false,
    };
    let Decision::Allow(allow) = decide(&req, &gw.policy, 1_800_000_000) else {
        panic!("allowed");
    };
    let (slot, _) = allow.key.unwrap();
    let client_id = http::HeaderValue::from_static("client-chosen-id");
    let ip: std::net::IpAddr = "2001:db8::7".parse().unwrap();
    let mut ctx = Ctx::new(lifecycle.enter());
    let n = allocations_during(|| {
        let facts = HeadFacts {
            fields: 6,
            bytes: 400,
            transfer_encoding: false,
            content_length: false,
        };
        let limits = HeadLimits {
            max_bytes: 65536,
            max_fields: 100,
        };
        assert_eq!(precheck(&facts, limits), None);
        std::hint::black_box(headers::request_id(Some(&client_id), &gw.policy.prefixes));
        std::hint::black_box(IpText::of(ip));
        std::hint::black_box(KeyId::new("k_company"));
        ctx.gateway = Some(Arc::clone(&gw));
        ctx.route = Some(allow.route);
        ctx.key_slot = Some(slot);
        ctx.settle();
    });
    assert_eq!(n, 0, "{n} allocations in the request glue");
    // A request id keygate makes: one allocation, shared by the upstream's
    // head and the client's (the thread's random source is made first).
    std::hint::black_box(headers::new_request_id());
    let n = allocations_during(|| {
        let id = headers::new_request_id();
        std::hint::black_box((id.clone(), id.clone(), id));
    });
    assert_eq!(n, 1, "{n} allocations for a new request id and two copies");
    assert!(
        ctx.gateway.is_none(),
        "settled requests let go of the gateway"
    );
    let ip = IpText::of(ip);
    let n = allocations_during(|| {
        let mut values = headers::Values::with_capacity(64);
        std::hint::black_box(headers::forwarded(&mut values, Some(ip.as_str()), true).unwrap());
        std::hint::black_box(values.of("k_company").unwrap());
    });
    assert_eq!(n, 2, "two values: one buffer and its shared owner");

    // Both heads as Pingora hands them over, parsed with their names' case.
    let mut upstream_req = pingora::http::RequestHeader::build("GET", b"/api/v1/x", None).unwrap();
    for (n, v) in [
        ("Host", "example.com"),
        ("User-Agent", "t"),
        ("Authorization", "x"),
    ] {
        upstream_req.insert_header(n, v).unwrap();
    }
    let response = || {
        let mut resp = pingora::http::ResponseHeader::build(200, None).unwrap();
        for (n, v) in [("Content-Type", "text/plain"), ("Content-Length", "2")] {
            resp.insert_header(n, v).unwrap();
        }
        resp
    };
    ctx.client = Some(ip);
    ctx.key_slot = Some(slot);
    ctx.request_id = http::HeaderValue::from_static("client-chosen-id");
    ctx.rate = Some(keygate::request::limiter::Outcome {
        allowed: true,
        limit: keygate::model::limit::Limit::DEFAULT,
        remaining: 5,
        reset_secs: 7,
        retry_after_secs: 1,
        unavailable: false,
    });
    let n = allocations_during(|| {
        headers::for_upstream(&mut upstream_req, &ctx, &gw).unwrap();
    });
    // X-Forwarded-For, Forwarded, the key id and the company are values
    // made for this request, all in one buffer (2); the map grows once (its
    // index and its entries, 2) to make room for all that is added. Names
    // are statics: no allocation.
    assert_eq!(n, 2 + 2, "{n} allocations adding the upstream's headers");
    assert_eq!(upstream_req.headers["x-keygate-key-id"], "k_company");
    assert!(!upstream_req.headers.contains_key("authorization"));
    // The first answer under a limit on a thread makes the two values that
    // depend on the limit alone, in one buffer (2) kept for the next.
    let mut first = response();
    let n = allocations_during(|| {
        headers::for_client(&mut first, &ctx).unwrap();
    });
    assert_eq!(
        n,
        2 + 2,
        "{n} allocations adding the first client's headers"
    );
    let mut resp = response();
    let n = allocations_during(|| {
        headers::for_client(&mut resp, &ctx).unwrap();
    });
    // Three rate-limit values in one buffer (2); the request id and the two
    // values of the limit are shared, and the response's map had room.
    assert_eq!(n, 2, "{n} allocations adding the client's headers");
    assert_eq!(resp.headers["x-ratelimit-remaining"], "5");
    assert_eq!(
        resp.headers["x-ratelimit-limit"],
        first.headers["x-ratelimit-limit"]
    );
}
