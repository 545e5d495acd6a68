//! CONTRACT §7: cluster mode. Several real `keygate run` processes share
//! every key's bucket through a real `redis-server` of the test's own; Redis
//! is stopped (SIGSTOP), killed and restarted under them.

use crate::support::*;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A keyed route (`auth = "company"`, GET needs `read:all`).
const PATH: &str = "/api/v1/company/x";

/// How much longer than `timeout_ms` a request may take, whatever Redis does.
const LATENCY_MARGIN: Duration = Duration::from_millis(500);

fn limit(requests: u32, per_secs: u32) -> String {
    format!("rate_limit = {{ requests = {requests}, per_secs = {per_secs}, burst = {requests} }}")
}

/// A company key with `read:all` and this `rate_limit` line ("" for the default).
fn company_key(snap: &mut Snapshot, id: &str, rate_limit: &str) -> String {
    snap.company_key(id, "acme")
        .scopes(&["read:all"])
        .extra(rate_limit)
        .add()
}

/// The standard config with `[cluster]` on `redis`, namespace `ns`. Unless the test sets its own,
/// `timeout_ms` is 1000: at the default 100 ms a debug build on a loaded
/// machine can miss a round trip now and then, and a test about something
/// else would see the instance degraded. Tests about timeouts set it.
fn config(up: &Upstream, redis_url: &str, ns: &str, cluster_extra: &str) -> String {
    let extra = if cluster_extra.contains("timeout_ms") {
        cluster_extra.to_string()
    } else {
        format!("{cluster_extra}\ntimeout_ms = 1000")
    };
    standard_config(up.addr, &cluster_table(redis_url, ns, &extra), "")
}

fn status(g: &Gateway, key: &str) -> u16 {
    g.get(PATH, Some(key)).status().as_u16()
}

fn header(r: &reqwest::blocking::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

fn remaining(r: &reqwest::blocking::Response) -> u64 {
    header(r, "x-ratelimit-remaining").unwrap().parse().unwrap()
}

/// A 429 of a `requests`/60s limit: `Retry-After` at least 1 and the message
/// naming the same number of seconds.
#[track_caller]
fn assert_429(r: reqwest::blocking::Response, requests: u32) {
    assert_eq!(r.status(), 429);
    let retry: u64 = header(&r, "retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    let unit = if retry == 1 { "second" } else { "seconds" };
    assert_json_error(
        r,
        429,
        "TOO_MANY_REQUESTS",
        &format!(
            "Rate limit of {requests} requests per 60s exceeded. Quota resets in {retry} {unit}"
        ),
    );
}

/// Every gateway of `fleet` reports the cluster up with `n` instances.
fn wait_fleet(fleet: &[Gateway], n: u64) {
    for g in fleet {
        g.wait_cluster(true, n);
    }
}

/// Requests round robin over `fleet` until a whole round is refused, and
/// still is after every gateway has synced. Returns how many were admitted.
fn exhaust(fleet: &[Gateway], key: &str) -> usize {
    let mut admitted = 0;
    wait_for(
        "the key to be refused everywhere",
        Duration::from_secs(20),
        || {
            let round = |admitted: &mut usize| {
                let mut refused = 0;
                for g in fleet {
                    match status(g, key) {
                        200 => *admitted += 1,
                        429 => refused += 1,
                        s => panic!("status {s}"),
                    }
                }
                refused == fleet.len()
            };
            if !round(&mut admitted) {
                return None;
            }
            for g in fleet {
                g.wait_synced();
            }
            round(&mut admitted).then_some(())
        },
    );
    admitted
}

/// The fleet bucket's debt in Redis, in whole tokens of `interval_secs`
/// (rounded up): what the fleet admitted, less what refilled since.
fn fleet_tokens_used(redis: &Redis, bucket: &str, interval_secs: f64) -> u64 {
    let t: f64 = redis.hget(bucket, "t").unwrap().parse().unwrap();
    let level = (t - redis.now_micros()).max(0.0);
    (level / (interval_secs * 1e6)).ceil() as u64
}

#[test]
fn three_gateways_share_one_limit_exactly() {
    let redis = Redis::start();
    let up = Upstream::start();
    let mut snap = Snapshot::new();
    let shared: Vec<String> = (0..3)
        .map(|i| company_key(&mut snap, &format!("k_shared_{i}"), &limit(10, 60)))
        .collect();
    let solo = company_key(&mut snap, "k_solo", &limit(10, 60));
    let fleet = start_fleet(3, &config(&up, &redis.url(), "share", ""), &snap.render());
    wait_fleet(&fleet, 3);
    for g in &fleet {
        wait_for(
            "keygate_cluster_instances 3",
            Duration::from_secs(10),
            || (g.metric("keygate_cluster_instances") == Some(3.0)).then_some(()),
        );
        assert_eq!(g.metric("keygate_cluster_up"), Some(1.0));
    }

    // For each of three fresh keys, 30 requests round robin: the fleet
    // admits the limit, plus at most what the other instances' shares hold
    // between syncs: ceil((1 - 1/3) * 10). (The first instance to report a
    // fresh bucket is not told it is alone: it was, before this was fixed,
    // and spent the whole bucket while the others spent theirs: 20.)
    for key in &shared {
        let known = redis.keys("share:b:*");
        let mut admitted = 0u64;
        // One request to instance `n`: counted if admitted, else a 429.
        let ask = |n: usize, admitted: &mut u64, what: &str| {
            let r = fleet[n].get(PATH, Some(key));
            match r.status().as_u16() {
                200 => *admitted += 1,
                429 => assert_429(r, 10),
                s => panic!("{what}: status {s}"),
            }
        };
        for i in 0..30 {
            ask(i % 3, &mut admitted, &format!("request {i}"));
        }
        // An instance that refused may hold the one token the fleet
        // reserved for it, counted in Redis when reserved, or get it at its
        // next sync: its next request spends it. So, until they agree:
        // everyone syncs, then each instance gets one more request. Then the
        // fleet bucket holds every admitted request and nothing else, and
        // the fleet has admitted its limit, plus at most what the other
        // instances' shares held between syncs.
        for g in &fleet {
            g.wait_synced();
        }
        let new: Vec<String> = redis
            .keys("share:b:*")
            .into_iter()
            .filter(|b| !known.contains(b))
            .collect();
        assert_eq!(new.len(), 1, "{new:?}");
        let mut round = 0;
        loop {
            let used = fleet_tokens_used(&redis, &new[0], 6.0);
            if used == admitted {
                break;
            }
            round += 1;
            assert!(
                round <= 5,
                "{used} tokens counted by the fleet, {admitted} admitted"
            );
            for n in 0..fleet.len() {
                ask(n, &mut admitted, &format!("instance {n}, round {round}"));
            }
            for g in &fleet {
                g.wait_synced();
            }
        }
        assert!(
            (10..=17).contains(&admitted),
            "{admitted} admitted for a fleet limit of 10"
        );
    }
    assert_eq!(redis.keys("share:b:*").len(), 3);

    // One instance alone on a key gets the whole bucket, once the fleet has
    // seen it alone (its second sync of the key: the first one is of a
    // bucket new to the fleet).
    let g = &fleet[0];
    let first = g.get(PATH, Some(&solo));
    assert_eq!(first.status(), 200);
    g.wait_synced();
    g.wait_synced();
    for i in 2..=10u64 {
        let r = g.get(PATH, Some(&solo));
        assert_eq!(r.status(), 200, "request {i}");
        assert_eq!(header(&r, "x-ratelimit-limit").as_deref(), Some("10"));
        assert_eq!(remaining(&r), 10 - i, "request {i}");
    }
    assert_429(g.get(PATH, Some(&solo)), 10);
    assert_429(g.get(PATH, Some(&solo)), 10);
}

#[test]
fn a_key_used_on_one_gateway_then_on_all_stays_within_the_bound() {
    // A client on one keep-alive connection (one gateway) opens more, and
    // the load balancer spreads them: the gateway that had the key alone may
    // spend what is left until its next sync, and the others keep to their
    // shares until it has synced.
    let redis = Redis::start();
    let up = Upstream::start();
    let mut snap = Snapshot::new();
    let keys: Vec<String> = (0..3)
        .map(|i| company_key(&mut snap, &format!("k_spread_{i}"), &limit(10, 60)))
        .collect();
    let fleet = start_fleet(3, &config(&up, &redis.url(), "spread", ""), &snap.render());
    wait_fleet(&fleet, 3);
    for key in &keys {
        assert_eq!(status(&fleet[0], key), 200);
        fleet[0].wait_synced();
        fleet[0].wait_synced();
        let mut admitted = 1u64;
        for i in 0..30 {
            if status(&fleet[i % 3], key) == 200 {
                admitted += 1;
            }
        }
        assert!(
            (10..=17).contains(&admitted),
            "{admitted} of 31 admitted for a fleet limit of 10"
        );
    }
}

/// One call of the sync script as instance `me` makes it: `used` requests
/// admitted on one 10/min bucket, and whether it asks for a last token; the
/// bucket's `(level µs, shared, reserved)`.
fn sync_call(
    redis: &Redis,
    me: &str,
    sync_ms: u64,
    bucket: &str,
    used: u64,
    wants: bool,
) -> (f64, u8, u8) {
    let out = redis.cli(&[
        "EVAL",
        include_str!("../src/cluster/sync.lua"),
        "2",
        "script:members",
        bucket,
        me,
        &sync_ms.to_string(),
        "1",
        "0",
        "6000000.000",
        "60000000.000",
        &used.to_string(),
        "0.000",
        "0",
        if wants { "1" } else { "0" },
    ]);
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    assert_eq!(lines.len(), 5, "{out}");
    (
        lines[2].parse().unwrap(),
        lines[3].parse().unwrap(),
        lines[4].parse().unwrap(),
    )
}

/// Asserts that a bucket's `level` (µs from full) is `spent` tokens of a
/// 10/min bucket, less at most the refill since `since` (the first report on
/// it): the test's own pace, however slow the machine, is allowed for.
fn assert_level(level: f64, spent: f64, since: Instant) {
    let full = spent * 6e6;
    let refilled = since.elapsed().as_micros() as f64 + 1000.0;
    assert!(
        (full - refilled..=full).contains(&level),
        "level {level} µs for {spent} tokens spent, {refilled} µs of refill allowed"
    );
}

#[test]
fn the_sync_script_tells_a_sole_user_so_and_holds_the_others_until_it_has_heard() {
    let redis = Redis::start();
    let call = |me, sync_ms, b, used| sync_call(&redis, me, sync_ms, b, used, false);
    let b = "script:b:one";
    let since = Instant::now();
    // New to the fleet: shared, whoever reports it first.
    let (level, shared, _) = call("a", 2000, b, 1);
    assert_eq!(shared, 1);
    assert_level(level, 1.0, since);
    // Seen alone: the whole remainder, for 3 periods.
    assert_eq!(call("a", 2000, b, 0).1, 0);
    assert_eq!(redis.hget(b, "o").as_deref(), Some("a"));
    // Another instance starts on it: held (what a may be spending is not
    // counted yet), however often it asks, until a has synced.
    let (level, shared, _) = call("b", 2000, b, 2);
    assert_eq!(shared, 2);
    assert_level(level, 3.0, since);
    assert_eq!(call("b", 2000, b, 0).1, 2);
    // a hears it is not alone; from then on both spend shares.
    let (level, shared, _) = call("a", 2000, b, 3);
    assert_eq!(shared, 1);
    assert_level(level, 6.0, since);
    assert_eq!(redis.hget(b, "o"), None);
    assert_eq!(call("b", 2000, b, 0).1, 1);
    assert_eq!(call("a", 2000, b, 0).1, 1, "shared for 10 s");

    // A sole user that never syncs again holds the others 3 of its periods.
    let b = "script:b:two";
    // (A 1 s period: 3 s of hold, long beside the calls of a loaded machine.)
    call("a", 1000, b, 1);
    let held_from = Instant::now();
    assert_eq!(call("a", 1000, b, 0).1, 0);
    assert_eq!(call("b", 50, b, 1).1, 2);
    wait_for("the hold to lapse", Duration::from_secs(15), || {
        (call("b", 50, b, 0).1 == 1).then_some(())
    });
    assert!(held_from.elapsed() >= Duration::from_millis(3000));
}

#[test]
fn the_sync_script_reserves_the_last_tokens_one_each_for_refusing_instances() {
    let redis = Redis::start();
    let b = "script:b:last";
    // Three instances (on a long period, so none drops out), 8 of 10 spent.
    for me in ["b", "c"] {
        sync_call(&redis, me, 1000, "script:b:other", 0, false);
    }
    let since = Instant::now();
    sync_call(&redis, "a", 1000, b, 8, false);
    // 2 left: a share would be less than one token everywhere. Each one
    // that refuses and asks gets one, counted at once, while any is left.
    let (level, shared, reserved) = sync_call(&redis, "b", 1000, b, 0, true);
    assert_eq!((shared, reserved), (1, 1));
    assert_level(level, 9.0, since);
    assert_eq!(sync_call(&redis, "c", 1000, b, 0, true).2, 1);
    let (level, _, reserved) = sync_call(&redis, "a", 1000, b, 0, true);
    assert_eq!(reserved, 0, "none left");
    assert_level(level, 10.0, since);
    // Not while whole shares are left, nor while a sole user may be
    // spending, nor for an instance that does not ask.
    let b = "script:b:plenty";
    sync_call(&redis, "a", 1000, b, 5, false);
    assert_eq!(sync_call(&redis, "b", 1000, b, 0, true).2, 0, "5 left");
    assert_eq!(sync_call(&redis, "b", 1000, b, 3, false).2, 0);
    assert_eq!(sync_call(&redis, "c", 1000, b, 0, false).2, 0, "not asked");
    let b = "script:b:held";
    sync_call(&redis, "a", 1000, b, 1, false);
    sync_call(&redis, "a", 1000, b, 7, false);
    assert_eq!(sync_call(&redis, "a", 1000, b, 0, false).1, 0, "a alone");
    let (_, shared, reserved) = sync_call(&redis, "b", 1000, b, 0, true);
    assert_eq!((shared, reserved), (2, 0), "2 left, but held");
}

#[test]
fn a_slow_client_going_round_the_fleet_gets_every_token_and_no_more() {
    // One request at a time, each gateway in turn, every gateway synced in
    // between: no share is ever stale, so the fleet admits exactly the
    // limit. The last 2 of 4 are fewer than the 3 instances: each goes to a
    // gateway that refused, to be spent when the client comes back.
    let redis = Redis::start();
    let up = Upstream::start();
    let mut snap = Snapshot::new();
    let key = company_key(&mut snap, "k_slow", &limit(4, 600));
    let fleet = start_fleet(3, &config(&up, &redis.url(), "slow", ""), &snap.render());
    wait_fleet(&fleet, 3);
    let mut admitted = Vec::new();
    for i in 0..12 {
        if status(&fleet[i % 3], &key) == 200 {
            admitted.push(i);
        }
        for g in &fleet {
            g.wait_synced();
        }
    }
    assert_eq!(admitted.len(), 4, "admitted: requests {admitted:?}");
}

#[test]
fn rate_limit_headers_show_the_fleet_remaining_across_gateways() {
    let redis = Redis::start();
    let up = Upstream::start();
    let mut snap = Snapshot::new();
    let key = company_key(&mut snap, "k_headers", &limit(10, 60));
    let fleet = start_fleet(2, &config(&up, &redis.url(), "hdr", ""), &snap.render());
    wait_fleet(&fleet, 2);
    let (a, b) = (&fleet[0], &fleet[1]);

    // B knows the key (one request, synced), then A spends 4.
    let r = b.get(PATH, Some(&key));
    assert_eq!(r.status(), 200);
    assert_eq!(remaining(&r), 9);
    b.wait_synced();
    for _ in 0..4 {
        assert_eq!(status(a, &key), 200);
    }
    a.wait_synced();
    b.wait_synced();

    // B's next answer counts A's 4: 10 - 1 - 4 - 1 = 4 (±1 for timing).
    let r = b.get(PATH, Some(&key));
    assert_eq!(r.status(), 200);
    let left = remaining(&r);
    assert!(
        (3..=5).contains(&left),
        "remaining {left} on B after A spent 4"
    );
    assert_eq!(header(&r, "x-ratelimit-limit").as_deref(), Some("10"));
    assert_eq!(
        header(&r, "ratelimit-policy").as_deref(),
        Some("\"default\";q=10;w=60")
    );
    let draft = header(&r, "ratelimit").unwrap();
    assert!(
        draft.starts_with(&format!("\"default\";r={left};t=")),
        "{draft}"
    );

    // And A's next answer counts B's 2: 10 - 6 - 1 = 3 (±1).
    b.wait_synced();
    a.wait_synced();
    let r = a.get(PATH, Some(&key));
    assert_eq!(r.status(), 200);
    let left = remaining(&r);
    assert!(
        (2..=4).contains(&left),
        "remaining {left} on A after 6 spent"
    );
}

/// Requests on `g` in a loop until `stop`: each one's status (or error) and
/// latency.
type Traffic = std::thread::JoinHandle<Vec<(Result<u16, String>, Duration)>>;

fn traffic(g: &Gateway, key: &str, stop: &Arc<AtomicBool>, count: &Arc<AtomicUsize>) -> Traffic {
    let client = g.client.clone();
    let url = g.url(PATH);
    let auth = format!("Bearer {key}");
    let (stop, count) = (Arc::clone(stop), Arc::clone(count));
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            let started = Instant::now();
            let result = client
                .get(&url)
                .header("Authorization", &auth)
                .send()
                .map(|r| r.status().as_u16())
                .map_err(|e| e.to_string());
            seen.push((result, started.elapsed()));
            count.fetch_add(1, Ordering::SeqCst);
        }
        seen
    })
}

#[test]
fn sigstop_mid_traffic_never_fails_or_stalls_requests() {
    let redis = Redis::start();
    let up = Upstream::start();
    let mut snap = Snapshot::new();
    let key = company_key(&mut snap, "k_stop", &limit(1_000_000, 60));
    let fleet = start_fleet(
        2,
        &config(&up, &redis.url(), "stop", "sync_ms = 50\ntimeout_ms = 100"),
        &snap.render(),
    );
    wait_fleet(&fleet, 2);

    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicUsize::new(0));
    let loops: Vec<Traffic> = fleet
        .iter()
        .map(|g| traffic(g, &key, &stop, &count))
        .collect();
    let served = || count.load(Ordering::SeqCst);
    wait_for("traffic to flow", Duration::from_secs(10), || {
        (served() >= 20).then_some(())
    });

    redis.stop();
    let stopped = Instant::now();
    let before = served();
    for g in &fleet {
        g.wait_logged("cluster degraded");
        wait_for("keygate_cluster_up 0", Duration::from_secs(10), || {
            (g.metric("keygate_cluster_up") == Some(0.0)).then_some(())
        });
        g.wait_cluster(false, 2);
    }
    // Redis stays stopped for 2 s of traffic.
    wait_for(
        "2 s of traffic on a stopped Redis",
        Duration::from_secs(20),
        || (stopped.elapsed() >= Duration::from_secs(2) && served() >= before + 50).then_some(()),
    );
    redis.cont();
    for g in &fleet {
        g.wait_logged("cluster recovered");
        wait_for("keygate_cluster_up 1", Duration::from_secs(10), || {
            (g.metric("keygate_cluster_up") == Some(1.0)).then_some(())
        });
        g.wait_cluster(true, 2);
    }
    let after = served();
    wait_for("traffic after recovery", Duration::from_secs(10), || {
        (served() >= after + 20).then_some(())
    });
    stop.store(true, Ordering::SeqCst);
    let seen: Vec<_> = loops.into_iter().flat_map(|t| t.join().unwrap()).collect();

    let failed: Vec<_> = seen.iter().filter(|(r, _)| *r != Ok(200)).collect();
    assert!(
        failed.is_empty(),
        "{} of {} failed: {failed:?}",
        failed.len(),
        seen.len()
    );
    let slowest = seen.iter().map(|(_, d)| *d).max().unwrap();
    assert!(
        slowest < Duration::from_millis(100) + LATENCY_MARGIN,
        "a request took {slowest:?} while Redis was stopped"
    );
    for g in &fleet {
        assert_eq!(g.count_logged("cluster degraded"), 1, "{}", g.log());
        assert_eq!(g.count_logged("cluster recovered"), 1, "{}", g.log());
        let degraded = g
            .log()
            .lines()
            .find(|l| l.contains("\"message\":\"cluster degraded\""))
            .unwrap()
            .to_string();
        assert!(degraded.contains("\"reason\":"), "{degraded}");
        let timeouts = g
            .metric("keygate_cluster_sync_failures_total{kind=\"timeout\"}")
            .unwrap_or(0.0);
        assert!(timeouts > 0.0, "no timeout counted");
        g.assert_no_error_logged();
    }
}

/// Admitted requests in what a traffic loop saw.
fn admitted(seen: &[(Result<u16, String>, Duration)]) -> u64 {
    seen.iter().filter(|(r, _)| *r == Ok(200)).count() as u64
}

#[test]
fn a_stopped_redis_running_its_queue_on_resume_counts_nothing_twice() {
    let redis = Redis::start();
    let up = Upstream::start();
    let mut snap = Snapshot::new();
    // One token per 1000 s: nothing refills during the test, so Redis's
    // count must equal the admissions exactly.
    let key = company_key(&mut snap, "k_queue", &limit(1_000_000, 1_000_000_000));
    let g = Gateway::start(
        &config(&up, &redis.url(), "queue", "sync_ms = 50\ntimeout_ms = 100"),
        &snap.render(),
    );
    g.wait_cluster(true, 1);
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicUsize::new(0));
    let lane = traffic(&g, &key, &stop, &count);
    let served = || count.load(Ordering::SeqCst);
    wait_for("traffic to flow", Duration::from_secs(10), || {
        (served() >= 20).then_some(())
    });
    // The sync calls sent while Redis is stopped time out here, and Redis
    // runs them when it resumes: they must not count a second time what
    // the instance sends again.
    redis.stop();
    g.wait_logged("cluster degraded");
    let before = served();
    wait_for(
        "traffic on a stopped Redis",
        Duration::from_secs(20),
        || (served() >= before + 30).then_some(()),
    );
    redis.cont();
    g.wait_logged("cluster recovered");
    stop.store(true, Ordering::SeqCst);
    let seen = lane.join().unwrap();
    g.wait_synced();
    let buckets = redis.keys("queue:b:*");
    assert_eq!(buckets.len(), 1, "{buckets:?}");
    assert_eq!(
        fleet_tokens_used(&redis, &buckets[0], 1000.0),
        admitted(&seen),
        "Redis's count against the admissions"
    );
}

#[test]
fn a_restarted_redis_gets_back_the_buckets_the_instances_saw() {
    let mut redis = Redis::start();
    let up = Upstream::start();
    let mut snap = Snapshot::new();
    let key = company_key(&mut snap, "k_lost", &limit(10, 60));
    let g = Gateway::start(&config(&up, &redis.url(), "lost", ""), &snap.render());
    g.wait_cluster(true, 1);
    for i in 1..=10 {
        assert_eq!(status(&g, &key), 200, "request {i}");
    }
    assert_429(g.get(PATH, Some(&key)), 10);
    g.wait_synced();
    // Redis loses everything (no persistence): the instance still knows
    // the bucket is spent and tells the new Redis so.
    redis.kill();
    g.wait_cluster_up(false);
    redis.restart();
    g.wait_cluster_up(true);
    g.wait_synced();
    let buckets = redis.keys("lost:b:*");
    assert_eq!(buckets.len(), 1, "{buckets:?}");
    assert_eq!(fleet_tokens_used(&redis, &buckets[0], 6.0), 10);
    assert_429(g.get(PATH, Some(&key)), 10);
}

#[test]
fn redis_killed_then_restarted_on_its_port_degrades_then_recovers_by_itself() {
    let mut redis = Redis::start();
    let up = Upstream::start();
    let mut snap = Snapshot::new();
    let key = company_key(&mut snap, "k_kill", &limit(100, 60));
    let g = Gateway::start(&config(&up, &redis.url(), "kill", ""), &snap.render());
    g.wait_cluster(true, 1);
    assert_eq!(status(&g, &key), 200);

    redis.kill();
    g.wait_logged("cluster degraded");
    g.wait_cluster(false, 1);
    wait_for("a connect failure counted", Duration::from_secs(10), || {
        let n = g
            .metric("keygate_cluster_sync_failures_total{kind=\"connect\"}")
            .unwrap_or(0.0);
        (n > 0.0).then_some(())
    });
    assert_eq!(g.metric("keygate_cluster_up"), Some(0.0));
    // Degraded, it still serves (and /readyz stays 200).
    for _ in 0..3 {
        assert_eq!(status(&g, &key), 200);
    }
    assert_eq!(
        g.client
            .get(g.admin_url("/readyz"))
            .send()
            .unwrap()
            .status(),
        200
    );
    // Another setting of the same fleet, by reload, while Redis is down:
    // the outage goes on, told once.
    g.write_config(&config(
        &up,
        &redis.url(),
        "kill",
        "on_unavailable = \"local_full\"",
    ));
    assert_eq!(g.reload_by_signal(), "success");
    let failures = || {
        g.metric("keygate_cluster_sync_failures_total{kind=\"connect\"}")
            .unwrap_or(0.0)
    };
    let before = failures();
    wait_for("more failed syncs", Duration::from_secs(10), || {
        (failures() >= before + 2.0).then_some(())
    });
    assert_eq!(g.count_logged("cluster on"), 2);
    assert_eq!(g.count_logged("cluster degraded"), 1);

    redis.restart();
    g.wait_logged("cluster recovered");
    g.wait_cluster(true, 1);
    assert_eq!(g.metric("keygate_cluster_up"), Some(1.0));
    assert_eq!(redis.zrange("kill:members").len(), 1);
    assert_eq!(status(&g, &key), 200);
    assert_eq!(g.count_logged("cluster degraded"), 1);
    assert_eq!(g.count_logged("cluster recovered"), 1);
}

/// `n` gateways with `on_unavailable = mode`, synced, then Redis killed and
/// every gateway degraded (still ready, `up: false`, `n` instances).
fn degraded_fleet(n: usize, mode: &str, snap: &Snapshot) -> (Redis, Upstream, Vec<Gateway>) {
    let mut redis = Redis::start();
    let up = Upstream::start();
    // A slow sync keeps the instance count steady on a loaded machine.
    let extra = format!("sync_ms = 200\non_unavailable = \"{mode}\"");
    let fleet = start_fleet(n, &config(&up, &redis.url(), mode, &extra), &snap.render());
    wait_fleet(&fleet, n as u64);
    redis.kill();
    for g in &fleet {
        g.wait_logged("cluster degraded");
        g.wait_cluster(false, n as u64);
        let r = g.client.get(g.admin_url("/readyz")).send().unwrap();
        assert_eq!(r.status(), 200, "/readyz while degraded");
    }
    (redis, up, fleet)
}

#[test]
fn on_unavailable_deny_answers_503_on_keyed_routes_only() {
    let mut snap = Snapshot::new();
    let key = company_key(&mut snap, "k_deny", &limit(5, 60));
    let (_redis, _up, fleet) = degraded_fleet(1, "deny", &snap);
    let g = &fleet[0];
    for _ in 0..3 {
        let r = g.get(PATH, Some(&key));
        assert_eq!(r.status(), 503);
        assert_eq!(header(&r, "retry-after").as_deref(), Some("1"));
        assert_json_error(r, 503, "SERVICE_UNAVAILABLE", "Rate limiter unavailable");
    }
    // Keyless routes are not limited; the key checks still come first.
    assert_eq!(g.get("/healthz", None).status(), 200);
    assert_json_error(
        g.get(PATH, None),
        401,
        "UNAUTHORIZED",
        "Missing bearer token",
    );
}

#[test]
fn on_unavailable_allow_admits_past_the_limit() {
    let mut snap = Snapshot::new();
    let key = company_key(&mut snap, "k_allow", &limit(3, 60));
    let (_redis, _up, fleet) = degraded_fleet(1, "allow", &snap);
    for i in 0..8 {
        assert_eq!(status(&fleet[0], &key), 200, "request {i}");
    }
}

#[test]
fn on_unavailable_local_full_enforces_the_whole_limit_on_each_instance() {
    let mut snap = Snapshot::new();
    let key = company_key(&mut snap, "k_full", &limit(6, 60));
    let (_redis, _up, fleet) = degraded_fleet(2, "local_full", &snap);
    for g in &fleet {
        for i in 0..6 {
            assert_eq!(status(g, &key), 200, "request {i}");
        }
        assert_429(g.get(PATH, Some(&key)), 6);
    }
}

#[test]
fn on_unavailable_local_share_enforces_a_third_with_three_instances_seen() {
    let mut snap = Snapshot::new();
    let key = company_key(&mut snap, "k_share", &limit(9, 60));
    let (_redis, _up, fleet) = degraded_fleet(3, "local_share", &snap);
    let g = &fleet[0];
    let mut admitted = 0;
    loop {
        let r = g.get(PATH, Some(&key));
        if r.status() == 429 {
            assert_429(r, 9);
            break;
        }
        assert_eq!(r.status(), 200);
        admitted += 1;
        assert!(admitted <= 9, "no limit enforced while degraded");
    }
    assert!(
        (2..=4).contains(&admitted),
        "{admitted} admitted: a third of 9 expected"
    );
}

#[test]
fn a_limit_change_and_reload_resets_the_bucket_fleet_wide() {
    let redis = Redis::start();
    let up = Upstream::start();
    let mut snap = Snapshot::new();
    let own = company_key(&mut snap, "k_own", &limit(3, 60));
    let default = company_key(&mut snap, "k_default", "");
    let same = company_key(&mut snap, "k_same", &limit(3, 60));
    let cfg = config(&up, &redis.url(), "change", "");
    let three = cfg.replacen(
        "requests = 100\nper_secs = 60",
        "requests = 3\nper_secs = 60",
        1,
    );
    assert_ne!(three, cfg);
    let fleet = start_fleet(3, &three, &snap.render());
    wait_fleet(&fleet, 3);
    for key in [&own, &default, &same] {
        let admitted = exhaust(&fleet, key);
        assert!((3..=5).contains(&admitted), "{admitted} admitted of 3");
    }

    // 3/60s becomes 4/60s, for the key's own limit and for the default.
    let k = snap.keys.iter_mut().find(|k| k.id == "k_own").unwrap();
    k.toml = k.toml.replace(&limit(3, 60), &limit(4, 60));
    let four = cfg.replacen(
        "requests = 100\nper_secs = 60",
        "requests = 4\nper_secs = 60",
        1,
    );
    for (i, g) in fleet.iter().enumerate() {
        g.write_keys(&snap.render());
        g.write_config(&four);
        if i == 0 {
            assert_eq!(g.reload_by_post(), 200);
        } else {
            assert_eq!(g.reload_by_signal(), "success");
        }
    }
    // Each changed key is a fresh, full bucket for the whole fleet (the old
    // one was empty): all 4 tokens, plus at most what shares read before
    // the others' reports hold, (1 - 1/3) * 4. The last tokens, fewer than
    // instances, are reserved for the instances that refuse, so none is
    // left out of reach.
    for key in [&own, &default] {
        let admitted = exhaust(&fleet, key);
        assert!(
            (4..=6).contains(&admitted),
            "{admitted} admitted after the change to 4/60s"
        );
    }
    // An unchanged limit keeps its bucket across the reload.
    for g in &fleet {
        assert_429(g.get(PATH, Some(&same)), 3);
    }
}

fn last_used(g: &Gateway, id: &str) -> serde_json::Value {
    let keys: serde_json::Value = g
        .client
        .get(g.admin_url("/keys"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    keys.as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id)
        .unwrap()["last_used_at"]
        .clone()
}

#[test]
fn last_used_at_is_the_latest_use_on_any_instance() {
    let redis = Redis::start();
    let up = Upstream::start();
    let mut snap = Snapshot::new();
    let key = company_key(&mut snap, "k_used", &limit(100, 60));
    let fleet = start_fleet(2, &config(&up, &redis.url(), "used", ""), &snap.render());
    wait_fleet(&fleet, 2);
    let (a, b) = (&fleet[0], &fleet[1]);
    assert_eq!(last_used(a, "k_used"), serde_json::Value::Null);

    assert_eq!(status(b, &key), 200);
    let on_b = wait_for("B's own last_used_at", Duration::from_secs(10), || {
        Some(last_used(b, "k_used")).filter(|v| v.is_string())
    });
    let on_a = wait_for("A to see B's use", Duration::from_secs(15), || {
        Some(last_used(a, "k_used")).filter(|v| v.is_string())
    });
    assert_eq!(on_a, on_b);
    assert!(
        !a.log().contains("\"key_id\":\"k_used\""),
        "A served the key itself"
    );
}

/// Redis restarted empty: an instance tells it again the last uses it knew,
/// so one started since still sees them.
#[test]
fn last_used_at_is_told_again_to_a_redis_that_lost_it() {
    let mut redis = Redis::start();
    let up = Upstream::start();
    let mut snap = Snapshot::new();
    let key = company_key(&mut snap, "k_told", &limit(100, 60));
    let conf = config(&up, &redis.url(), "told", "");
    let b = Gateway::start(&conf, &snap.render());
    b.wait_cluster(true, 1);
    assert_eq!(status(&b, &key), 200);
    wait_for("B's use pushed", Duration::from_secs(10), || {
        (!redis.keys("told:u:*").is_empty()).then_some(())
    });
    let on_b = last_used(&b, "k_told");
    assert!(on_b.is_string(), "{on_b}");
    redis.restart();
    b.wait_logged("cluster recovered");
    let c = Gateway::start(&conf, &snap.render());
    let on_c = wait_for(
        "a new instance to see B's use",
        Duration::from_secs(15),
        || Some(last_used(&c, "k_told")).filter(|v| v.is_string()),
    );
    assert_eq!(on_c, on_b);
}

#[test]
fn cluster_table_added_and_removed_by_reload() {
    let redis = Redis::start();
    let up = Upstream::start();
    let mut snap = Snapshot::new();
    let key = company_key(&mut snap, "k_reload", &limit(4, 60));
    let fresh = company_key(&mut snap, "k_local", &limit(2, 60));
    let alone = standard_config(up.addr, "", "");
    let fleet = start_fleet(2, &alone, &snap.render());
    for g in &fleet {
        assert!(g.readyz().get("cluster").is_none(), "{}", g.readyz());
    }

    let clustered = config(&up, &redis.url(), "rl", "");
    fleet[0].write_config(&clustered);
    assert_eq!(fleet[0].reload_by_post(), 200);
    fleet[1].write_config(&clustered);
    assert_eq!(fleet[1].reload_by_signal(), "success");
    wait_fleet(&fleet, 2);
    assert_eq!(redis.zrange("rl:members").len(), 2);
    for g in &fleet {
        assert_eq!(status(g, &key), 200);
        g.wait_synced();
        assert_eq!(g.count_logged("cluster on"), 1);
    }
    assert_eq!(redis.keys("rl:b:*").len(), 1, "one fleet bucket");

    for g in &fleet {
        g.write_config(&alone);
        assert_eq!(g.reload_by_signal(), "success");
        assert!(g.readyz().get("cluster").is_none(), "{}", g.readyz());
        wait_for("keygate_cluster_up 0", Duration::from_secs(10), || {
            (g.metric("keygate_cluster_up") == Some(0.0)).then_some(())
        });
    }
    wait_for("both instances to leave", Duration::from_secs(10), || {
        redis.zrange("rl:members").is_empty().then_some(())
    });
    // Limits are local again: each instance admits the whole 2, and Redis
    // learns nothing of the key.
    for g in &fleet {
        assert_eq!(status(g, &fresh), 200);
        assert_eq!(status(g, &fresh), 200);
        assert_429(g.get(PATH, Some(&fresh)), 2);
    }
    assert_eq!(redis.keys("rl:b:*").len(), 1);
}

/// A password of letters and digits, not a key.
fn password() -> String {
    format!("pw{:032x}", rand::random::<u128>())
}

#[test]
fn redis_password_reaches_no_log_line_right_or_wrong() {
    let pw = password();
    let wrong = password();
    let redis = Redis::start_with_password(&pw);
    let up = Upstream::start();
    let mut snap = Snapshot::new();
    let key = company_key(&mut snap, "k_auth", &limit(100, 60));
    let urls = [
        redis.url_with_password(&pw),
        format!("redis://default:{pw}@127.0.0.1:{}/0", redis.port),
        redis.url_with_password(&wrong),
    ];
    let fleet: Vec<Gateway> = urls
        .iter()
        .map(|u| Gateway::start(&config(&up, u, "auth", ""), &snap.render()))
        .collect();
    let (good, bad) = fleet.split_at(2);
    wait_fleet(good, 2);
    for g in good {
        assert_eq!(status(g, &key), 200);
        g.wait_synced();
    }
    let g = &bad[0];
    g.wait_logged("cluster degraded");
    g.wait_cluster(false, 1);
    assert_eq!(g.metric("keygate_cluster_up"), Some(0.0));
    assert_eq!(status(g, &key), 200, "degraded, local_share still serves");

    let out = std::process::Command::new(BIN)
        .args(["check", "--config"])
        .arg(fleet[0].config_path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let check = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!check.contains(&pw), "keygate check printed the password");

    let port = format!("127.0.0.1:{}", redis.port);
    for g in &fleet {
        let log = g.log();
        assert!(!log.contains(&pw), "the password is in a log");
        assert!(!log.contains(&wrong), "the wrong password is in a log");
        let on = log
            .lines()
            .find(|l| l.contains("\"message\":\"cluster on\""))
            .unwrap_or_else(|| panic!("no cluster on line: {log}"));
        assert!(on.contains(&port), "{on}");
    }
}

#[test]
fn redis_holds_no_key_id_or_hash_and_every_entry_expires() {
    let redis = Redis::start();
    let up = Upstream::start();
    let mut snap = Snapshot::new().workspace("ws_ttl", "acme");
    let company = company_key(&mut snap, "k_ttl_company", &limit(50, 60));
    let ws = snap
        .workspace_key("k_ttl_ws", "acme", "ws_ttl")
        .scopes(&["read:all"])
        .add();
    let fleet = start_fleet(2, &config(&up, &redis.url(), "ttl", ""), &snap.render());
    wait_fleet(&fleet, 2);
    for g in &fleet {
        for _ in 0..3 {
            assert_eq!(status(g, &company), 200);
            assert_eq!(g.get("/api/v1/profiles/me", Some(&ws)).status(), 200);
        }
    }
    for g in &fleet {
        g.wait_synced();
    }
    wait_for("both last uses pushed", Duration::from_secs(15), || {
        (redis.keys("ttl:u:*").len() == 2).then_some(())
    });

    let all = redis.keys("*");
    assert_eq!(redis.keys("ttl:b:*").len(), 2, "{all:?}");
    assert!(all.contains(&"ttl:members".to_string()), "{all:?}");
    let hex32 = |s: &str| s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit());
    let mut dump = String::new();
    for name in &all {
        let ok = name == "ttl:members"
            || ["ttl:b:", "ttl:u:"]
                .iter()
                .any(|p| name.strip_prefix(p).is_some_and(hex32));
        assert!(ok, "unexpected Redis key {name:?}");
        let ttl = redis.pttl(name);
        assert!(ttl > 0, "{name} has PTTL {ttl}");
        dump.push_str(&format!("{name}\n{}\n", redis.dump(name)));
    }
    for k in &snap.keys {
        let h = hash(&k.key);
        for secret in [k.key.as_str(), h.as_str(), &h[7..], k.id.as_str()] {
            assert!(!dump.contains(secret), "{secret:?} is in Redis:\n{dump}");
        }
    }
    assert_no_secret_in(&dump, "Redis");
}

#[test]
fn check_refuses_bad_cluster_tables_naming_file_and_line() {
    let up = Upstream::start();
    let pw = password();
    let good = format!("redis = \"redis://:{pw}@127.0.0.1:1/0\"");
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "http scheme",
            format!("redis = \"http://user:{pw}@127.0.0.1:6379/0\""),
            "cluster.redis must start with redis:// or rediss://",
        ),
        (
            "bad port",
            format!("redis = \"redis://:{pw}@127.0.0.1:99999/0\""),
            "cluster.redis is not a valid URL",
        ),
        (
            "not a URL",
            "redis = \"not a url\"".into(),
            "cluster.redis is not a valid URL",
        ),
        (
            "sync too short",
            format!("{good}\nsync_ms = 5"),
            "cluster.sync_ms must be from 10 to 1000 (got 5)",
        ),
        (
            "sync too long",
            format!("{good}\nsync_ms = 2000"),
            "cluster.sync_ms must be from 10 to 1000 (got 2000)",
        ),
        (
            "zero timeout",
            format!("{good}\ntimeout_ms = 0"),
            "cluster.timeout_ms must be from 1 to 5000 (got 0)",
        ),
        (
            "timeout too long",
            format!("{good}\ntimeout_ms = 6000"),
            "cluster.timeout_ms must be from 1 to 5000 (got 6000)",
        ),
        (
            "unknown mode",
            format!("{good}\non_unavailable = \"maybe\""),
            "cluster.on_unavailable must be",
        ),
        (
            "unknown field",
            format!("{good}\nbogus = 1"),
            "unknown field `bogus`",
        ),
        (
            "bad namespace",
            format!("{good}\nnamespace = \"has space\""),
            "cluster.namespace",
        ),
        (
            "long namespace",
            format!("{good}\nnamespace = \"{}\"", "n".repeat(65)),
            "cluster.namespace",
        ),
        (
            "missing redis",
            "sync_ms = 50".into(),
            "cluster.redis is required",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keygate.toml");
    std::fs::write(dir.path().join("keys.toml"), "").unwrap();
    for (what, lines, reason) in &cases {
        let text = standard_config(up.addr, &format!("[cluster]\n{lines}\n"), "")
            .replace("{http}", "18080")
            .replace("{admin}", "19091");
        std::fs::write(&path, &text).unwrap();
        // The line of the wrong setting: the last one written, or the table
        // itself when a setting is missing.
        let wrong = if *what == "missing redis" {
            "[cluster]"
        } else {
            lines.lines().last().unwrap()
        };
        let line = text.lines().position(|l| l == wrong).unwrap() + 1;
        let out = std::process::Command::new(BIN)
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(1), "{what}: {printed}");
        let at = format!("error: {}:{line}: {reason}", path.display());
        assert!(
            printed.lines().any(|l| l.starts_with(&at)),
            "{what}: no line starting {at:?} in\n{printed}"
        );
        assert!(!printed.contains(&pw), "{what}: the password is echoed");
    }

    // Valid without connecting: nothing listens on port 1.
    for lines in [
        good.clone(),
        format!(
            "redis = \"rediss://user:{pw}@127.0.0.1:1/3\"\nnamespace = \"a-b.c:d_e\"\nsync_ms = 10\ntimeout_ms = 5000\non_unavailable = \"deny\""
        ),
    ] {
        let text = standard_config(up.addr, &format!("[cluster]\n{lines}\n"), "")
            .replace("{http}", "18080")
            .replace("{admin}", "19091");
        std::fs::write(&path, &text).unwrap();
        let out = std::process::Command::new(BIN)
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.lines().last().unwrap().starts_with("ok: "),
            "{stdout}"
        );
        assert!(!stdout.contains(&pw), "the password is echoed");
    }
}

#[test]
fn sigterm_removes_the_instance_from_the_members() {
    let redis = Redis::start();
    let up = Upstream::start();
    // Members go stale after 3 periods (3 s here): only the instance's own
    // leave can remove it at once.
    let mut fleet = start_fleet(2, &config(&up, &redis.url(), "term", "sync_ms = 1000"), "");
    wait_fleet(&fleet, 2);
    let before = redis.zrange("term:members");
    assert_eq!(before.len(), 2, "{before:?}");

    fleet[0].signal("TERM");
    let exit = fleet[0].wait_exit(Duration::from_secs(15));
    assert_eq!(exit.code(), Some(0));
    let after = redis.zrange("term:members");
    assert_eq!(after.len(), 1, "{after:?}");
    assert!(before.contains(&after[0]));
    fleet[1].wait_cluster(true, 1);
}

/// A `rediss://` gateway on `redis`'s TLS port, trusting the CA file `ca`
/// through `SSL_CERT_FILE`, as an operator with a private CA would. Its
/// `timeout_ms` leaves a debug build on a loaded machine time for the TLS
/// handshake: a connect that times out would be logged as the reason, in
/// place of the certificate this test is about.
fn tls_gateway(up: &Upstream, url: &str, ns: &str, snap: &Snapshot, ca: &Path) -> Gateway {
    let ca = ca.to_str().unwrap();
    let g = Gateway::spawn_env(
        &config(up, url, ns, "timeout_ms = 3000"),
        &snap.render(),
        |_| {},
        "info",
        &[("SSL_CERT_FILE", ca)],
    );
    g.wait_ready();
    g
}

#[test]
fn rediss_checks_the_server_certificate_unless_insecure() {
    let redis = Redis::start_tls(&Pki::new());
    let up = Upstream::start();
    let mut snap = Snapshot::new();
    let key = company_key(&mut snap, "k_tls", &limit(5, 60));
    let other_ca = tempfile::tempdir().unwrap();
    Pki::new().write(other_ca.path());
    let untrusted = other_ca.path().join("ca.pem");

    // Trusted through SSL_CERT_FILE: the fleet bucket lives on the TLS server.
    let trusted = tls_gateway(&up, &redis.tls_url(), "tls", &snap, &redis.ca_path());
    trusted.wait_cluster(true, 1);
    for i in 1..=5 {
        assert_eq!(status(&trusted, &key), 200, "request {i}");
    }
    assert_429(trusted.get(PATH, Some(&key)), 5);
    trusted.wait_synced();
    let buckets = redis.keys("tls:b:*");
    assert_eq!(buckets.len(), 1, "{buckets:?}");
    assert_eq!(fleet_tokens_used(&redis, &buckets[0], 12.0), 5);
    trusted.assert_no_error_logged();

    // A certificate from a CA the gateway does not trust: degraded, with the
    // reason, and still serving by `on_unavailable`.
    let refused = tls_gateway(&up, &redis.tls_url(), "tls", &snap, &untrusted);
    refused.wait_logged("cluster degraded");
    refused.wait_cluster(false, 1);
    let line = refused
        .log()
        .lines()
        .find(|l| l.contains("\"message\":\"cluster degraded\""))
        .unwrap()
        .to_string();
    assert!(
        line.to_ascii_lowercase().contains("certificate"),
        "the reason names the certificate: {line}"
    );
    assert_eq!(status(&refused, &key), 200, "local_share still serves");

    // `#insecure` skips the check: the same untrusted CA, and the gateway
    // joins the fleet, which then has two members.
    let insecure_url = format!("{}#insecure", redis.tls_url());
    let insecure = tls_gateway(&up, &insecure_url, "tls", &snap, &untrusted);
    insecure.wait_cluster(true, 2);
    // Its first request may be answered from its first share; once synced it
    // sees the fleet's bucket, spent by the first gateway.
    let first = status(&insecure, &key);
    assert!(matches!(first, 200 | 429), "{first}");
    insecure.wait_synced();
    assert_429(insecure.get(PATH, Some(&key)), 5);
}

/// A Redis that takes connections and never answers: until a sync succeeds,
/// `/readyz` says the fleet is not up, as `keygate_cluster_up` does.
#[test]
fn readyz_says_up_only_once_a_sync_succeeded() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://{}/0", silent.local_addr().unwrap());
    let up = Upstream::start();
    let mut snap = Snapshot::new();
    company_key(&mut snap, "k_silent", &limit(4, 60));
    let g = Gateway::start(
        &config(&up, &url, "silent", "timeout_ms = 5000"),
        &snap.render(),
    );
    let ready = g.readyz();
    assert_eq!(ready["cluster"]["up"], false, "{ready}");
    assert_eq!(g.metric("keygate_cluster_up"), Some(0.0));
    drop(silent);
}

/// A reload that turns `[cluster]` on, or points it at another Redis, keeps
/// what a key has spent (§6: a bucket is reset only when its limit changes):
/// the first report tells Redis where the bucket stands.
#[test]
fn a_spent_bucket_stays_spent_when_cluster_is_added_or_moved_by_reload() {
    let first = Redis::start();
    let second = Redis::start();
    let up = Upstream::start();
    let mut snap = Snapshot::new();
    let key = company_key(&mut snap, "k_moved", &limit(4, 60));
    let g = Gateway::start(&standard_config(up.addr, "", ""), &snap.render());
    for _ in 0..4 {
        assert_eq!(status(&g, &key), 200);
    }
    assert_429(g.get(PATH, Some(&key)), 4);
    for redis in [&first, &second] {
        g.write_config(&config(&up, &redis.url(), "moved", ""));
        assert_eq!(g.reload_by_signal(), "success");
        g.wait_synced();
        for _ in 0..3 {
            assert_429(g.get(PATH, Some(&key)), 4);
        }
        assert_eq!(redis.keys("moved:b:*").len(), 1, "the fleet holds it");
    }
}

/// Degraded on a dead Redis, then pointed at a live one by reload: the
/// outage ends with `cluster recovered`, at once (the dead one's goodbye
/// does not hold the new link up for its timeout).
#[test]
fn a_reload_to_a_live_redis_ends_an_outage_with_cluster_recovered() {
    let mut dead = Redis::start();
    let live = Redis::start();
    let up = Upstream::start();
    let mut snap = Snapshot::new();
    let key = company_key(&mut snap, "k_failover", &limit(50, 60));
    let g = Gateway::start(
        &config(&up, &dead.url(), "fo", "timeout_ms = 3000"),
        &snap.render(),
    );
    g.wait_cluster(true, 1);
    dead.kill();
    g.wait_logged("cluster degraded");
    g.write_config(&config(&up, &live.url(), "fo", "timeout_ms = 3000"));
    assert_eq!(g.reload_by_signal(), "success");
    g.wait_logged("cluster recovered");
    g.wait_cluster(true, 1);
    assert_eq!(g.count_logged("cluster degraded"), 1);
    assert_eq!(g.count_logged("cluster recovered"), 1);
    assert_eq!(status(&g, &key), 200);
    assert_eq!(live.zrange("fo:members").len(), 1);
}
