use super::*;
use crate::util::clock::ManualClock;
use std::sync::Barrier;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

fn limit(requests: i64, per_secs: i64, burst: i64) -> Limit {
    Limit::from_raw(requests, per_secs, Some(burst)).unwrap()
}

fn key(id: &str) -> Arc<str> {
    id.into()
}

fn limiter(max_buckets: usize) -> (Arc<ManualClock>, Limiter) {
    let clock = ManualClock::at(1_800_000_000);
    let l = Limiter::new(clock.clone(), max_buckets);
    (clock, l)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Takes tokens until one is refused; returns how many were allowed.
fn drain(l: &Limiter, id: &Arc<str>, lim: Limit) -> u64 {
    let mut n = 0;
    while l.check(id, lim).allowed {
        n += 1;
        assert!(n <= u64::from(lim.burst.get()), "more than burst allowed");
    }
    n
}

#[test]
fn fresh_bucket_allows_burst_then_refuses() {
    let (_, l) = limiter(100);
    let k = key("k");
    assert_eq!(drain(&l, &k, limit(10, 10, 3)), 3);
    assert!(!l.check(&k, limit(10, 10, 3)).allowed);
}

#[test]
fn burst_larger_than_requests_is_the_capacity() {
    let (_, l) = limiter(100);
    let k = key("k");
    let lim = limit(10, 10, 25);
    let first = l.check(&k, lim);
    assert!(first.allowed);
    assert_eq!(first.remaining, 24);
    assert_eq!(drain(&l, &k, lim), 24);
}

#[test]
fn header_figures_while_draining_and_refilling() {
    // One token per second, capacity 3.
    let (clock, l) = limiter(100);
    let k = key("k");
    let lim = limit(10, 10, 3);
    let o = |allowed, remaining, reset_secs, retry_after_secs| Outcome {
        allowed,
        limit: lim,
        remaining,
        reset_secs,
        retry_after_secs,
        unavailable: false,
    };
    assert_eq!(l.check(&k, lim), o(true, 2, 1, 0));
    assert_eq!(l.check(&k, lim), o(true, 1, 2, 0));
    assert_eq!(l.check(&k, lim), o(true, 0, 3, 0));
    // Empty: full again in 3 s, one token back in 1 s.
    assert_eq!(l.check(&k, lim), o(false, 0, 3, 1));
    assert_eq!(
        l.check(&k, lim),
        o(false, 0, 3, 1),
        "a refusal costs nothing"
    );

    clock.advance(ms(1000));
    assert_eq!(l.check(&k, lim), o(true, 0, 3, 0), "one token refilled");
    assert_eq!(l.check(&k, lim), o(false, 0, 3, 1));

    // 2.5 s later the bucket holds 2.5 tokens: taking one leaves 1.5 (one
    // whole), full again in 1.5 s, rounded up to 2.
    clock.advance(ms(2500));
    assert_eq!(l.check(&k, lim), o(true, 1, 2, 0));
    assert_eq!(l.check(&k, lim), o(true, 0, 3, 0), "2.5 s rounds up to 3");
    // Half a token left: full in 2.5 s (3), the next token in 0.5 s (1).
    assert_eq!(l.check(&k, lim), o(false, 0, 3, 1));
}

#[test]
fn remaining_counts_whole_tokens_only() {
    let (clock, l) = limiter(100);
    let k = key("k");
    let lim = limit(10, 10, 3);
    assert_eq!(drain(&l, &k, lim), 3);
    // 1.9 s refills 1.9 tokens: one request passes, 0.9 of a token is left,
    // which is not a whole token.
    clock.advance(ms(1900));
    let out = l.check(&k, lim);
    assert!(out.allowed);
    assert_eq!(out.remaining, 0);
    assert_eq!(out.reset_secs, 3, "2.1 s rounded up");
}

#[test]
fn retry_after_and_reset_round_up_to_whole_seconds() {
    // One token a minute.
    let (clock, l) = limiter(100);
    let k = key("k");
    let lim = limit(1, 60, 1);
    let first = l.check(&k, lim);
    assert!(first.allowed);
    assert_eq!((first.remaining, first.reset_secs), (0, 60));
    let denied = l.check(&k, lim);
    assert!(!denied.allowed);
    assert_eq!((denied.reset_secs, denied.retry_after_secs), (60, 60));

    clock.advance(ms(58_001));
    let denied = l.check(&k, lim);
    assert_eq!(
        (denied.allowed, denied.reset_secs, denied.retry_after_secs),
        (false, 2, 2),
        "1.999 s rounds up to 2"
    );
    clock.advance(ms(1_998));
    let denied = l.check(&k, lim);
    assert_eq!(
        (denied.allowed, denied.reset_secs, denied.retry_after_secs),
        (false, 1, 1),
        "1 ms rounds up to 1 s"
    );
    clock.advance(ms(1));
    assert!(l.check(&k, lim).allowed, "exactly one minute later");
}

#[test]
fn fractional_intervals_round_up_reset() {
    // 3 per second: a token is a third of a second.
    let (_, l) = limiter(100);
    let k = key("k");
    let lim = limit(3, 1, 3);
    let out = l.check(&k, lim);
    assert_eq!((out.allowed, out.remaining, out.reset_secs), (true, 2, 1));
    assert_eq!(drain(&l, &k, lim), 2);
    let denied = l.check(&k, lim);
    assert!(!denied.allowed);
    assert_eq!(denied.retry_after_secs, 1, "a third of a second rounds up");
}

#[test]
fn retry_after_is_at_least_one_second() {
    // A thousand tokens a second: the next one is a millisecond away.
    let (_, l) = limiter(100);
    let k = key("k");
    let lim = limit(1000, 1, 1);
    assert!(l.check(&k, lim).allowed);
    let denied = l.check(&k, lim);
    assert!(!denied.allowed);
    assert_eq!(denied.retry_after_secs, 1);
    assert_eq!(denied.reset_secs, 1);
}

#[test]
fn refill_follows_the_rate() {
    // The default: 100 per 60 s, a token every 0.6 s.
    let (clock, l) = limiter(100);
    let k = key("k");
    let lim = Limit::DEFAULT;
    assert_eq!(drain(&l, &k, lim), 100);
    let denied = l.check(&k, lim);
    assert_eq!(denied.retry_after_secs, 1);
    assert_eq!(denied.reset_secs, 60);
    clock.advance(ms(599));
    assert!(!l.check(&k, lim).allowed, "not quite one token yet");
    clock.advance(ms(1));
    assert_eq!(drain(&l, &k, lim), 1);
    clock.advance(ms(6000));
    assert_eq!(drain(&l, &k, lim), 10);
    clock.advance(Duration::from_secs(60));
    assert_eq!(drain(&l, &k, lim), 100);
}

#[test]
fn refill_never_exceeds_burst() {
    let (clock, l) = limiter(100);
    let k = key("k");
    let lim = limit(10, 1, 4);
    assert_eq!(drain(&l, &k, lim), 4);
    clock.advance(Duration::from_secs(3600));
    let out = l.check(&k, lim);
    assert_eq!((out.remaining, out.reset_secs), (3, 1));
    assert_eq!(drain(&l, &k, lim), 3);
}

#[test]
fn keys_have_their_own_buckets() {
    let (_, l) = limiter(100);
    let lim = limit(10, 10, 2);
    let (a, b) = (key("a"), key("b"));
    assert_eq!(drain(&l, &a, lim), 2);
    let out = l.check(&b, lim);
    assert!(out.allowed);
    assert_eq!(out.remaining, 1);
    assert!(!l.check(&a, lim).allowed);
    assert_eq!(l.len(), 2);
}

#[test]
fn limit_change_resets_the_bucket() {
    let (_, l) = limiter(100);
    let k = key("k");
    let old = limit(10, 10, 2);
    let new = limit(10, 10, 5);
    assert_eq!(drain(&l, &k, old), 2);
    let out = l.check(&k, new);
    assert!(out.allowed, "new limit: new, full bucket");
    assert_eq!(out.limit, new);
    assert_eq!(out.remaining, 4);
    assert_eq!(drain(&l, &k, new), 4);
    // Going back is a change too.
    assert_eq!(drain(&l, &k, old), 2);
    assert_eq!(l.len(), 1);
}

#[test]
fn same_limit_keeps_the_bucket() {
    let (_, l) = limiter(100);
    let k = key("k");
    // An equal value built separately (e.g. by a reload) is the same limit.
    assert_eq!(drain(&l, &k, limit(10, 10, 2)), 2);
    assert!(
        !l.check(&k, Limit::from_raw(10, 10, Some(2)).unwrap())
            .allowed
    );
}

#[test]
fn sweep_drops_only_full_buckets() {
    let (clock, l) = limiter(100);
    let lim = limit(10, 10, 5);
    let (idle, busy) = (key("idle"), key("busy"));
    assert!(l.check(&idle, lim).allowed);
    assert_eq!(drain(&l, &busy, lim), 5);
    assert_eq!(l.sweep(), 2, "neither is full yet");
    clock.advance(ms(1000));
    assert_eq!(l.sweep(), 1, "idle refilled its one token");
    assert_eq!(l.len(), 1);
    // The busy bucket kept its state: only one token back.
    assert_eq!(drain(&l, &busy, lim), 1);
    clock.advance(Duration::from_secs(5));
    assert_eq!(l.sweep(), 0);
    assert!(l.is_empty());
    // A swept key starts again from a full bucket, as if it had been kept.
    assert_eq!(drain(&l, &idle, lim), 5);
}

#[test]
fn retain_keys_drops_buckets_of_removed_keys() {
    let (_, l) = limiter(100);
    let lim = limit(10, 10, 5);
    let (a, b) = (key("a"), key("b"));
    l.check(&a, lim);
    l.check(&b, lim);
    l.retain_keys(|id| id == "b");
    assert_eq!(l.len(), 1);
    assert_eq!(l.check(&b, lim).remaining, 3, "b's bucket kept");
    assert_eq!(l.check(&a, lim).remaining, 4, "a starts anew");
}

#[test]
fn a_carried_bucket_starts_where_the_old_one_was() {
    let (_, l) = limiter(100);
    let lim = limit(10, 60, 3);
    let (old, new, used) = (key("old"), key("new"), key("used"));
    assert_eq!(drain(&l, &old, lim), 3);
    l.carry("old", "new");
    assert!(!l.check(&new, lim).allowed, "spent tokens stay spent");
    // Nothing to carry, or a bucket already in use: left as it is.
    l.carry("never", "fresh");
    assert_eq!(l.check(&key("fresh"), lim).remaining, 2);
    l.check(&used, lim);
    l.carry("old", "used");
    assert_eq!(l.check(&used, lim).remaining, 1);
    l.carry("old", "old");
    assert!(!l.check(&old, lim).allowed);
}

#[test]
fn full_map_serves_new_keys_untracked() {
    let (clock, l) = limiter(2);
    let lim = limit(10, 10, 3);
    let (a, b, c) = (key("a"), key("b"), key("c"));
    assert_eq!(drain(&l, &a, lim), 3);
    assert_eq!(drain(&l, &b, lim), 3);
    assert_eq!(l.untracked(), 0);

    // No room and nothing idle: c is served as if full, and not tracked.
    for _ in 0..5 {
        let out = l.check(&c, lim);
        assert!(out.allowed);
        assert_eq!(out.remaining, 2);
    }
    assert_eq!(l.untracked(), 5);
    assert_eq!(l.len(), 2);
    // Tracked keys are still limited.
    assert!(!l.check(&a, lim).allowed);

    // Once a and b have refilled, the next sweep makes room and c is tracked.
    clock.advance(Duration::from_secs(10));
    assert_eq!(drain(&l, &c, lim), 3);
    assert_eq!(l.untracked(), 5);
    assert!(!l.check(&c, lim).allowed);
    assert_eq!(l.len(), 1);
}

#[test]
fn idle_bucket_is_evicted_to_make_room() {
    let (clock, l) = limiter(1);
    let lim = limit(10, 10, 3);
    let (a, b) = (key("a"), key("b"));
    assert!(l.check(&a, lim).allowed);
    clock.advance(Duration::from_secs(2));
    assert!(l.check(&b, lim).allowed);
    assert_eq!(l.untracked(), 0, "a was full, so swept");
    assert_eq!(l.len(), 1);
    assert_eq!(drain(&l, &b, lim), 2);
}

#[test]
fn existing_bucket_is_used_even_when_the_map_is_full() {
    let (_, l) = limiter(1);
    let k = key("k");
    let lim = limit(10, 10, 3);
    assert_eq!(drain(&l, &k, lim), 3);
    // A limit change on a tracked key resets it in place, full map or not.
    let out = l.check(&k, limit(10, 10, 4));
    assert!(out.allowed);
    assert_eq!(out.remaining, 3);
    assert_eq!(l.untracked(), 0);
}

#[test]
fn raising_max_buckets_tracks_new_keys() {
    let (_, l) = limiter(1);
    let lim = limit(10, 10, 2);
    let (a, b) = (key("a"), key("b"));
    assert_eq!(drain(&l, &a, lim), 2);
    assert!(l.check(&b, lim).allowed);
    assert_eq!(l.untracked(), 1);
    l.set_max_buckets(2);
    assert_eq!(drain(&l, &b, lim), 2);
    assert_eq!(l.untracked(), 1);
    assert_eq!(l.len(), 2);
}

/// Runs `threads` threads that each try `tries` checks on one key at once,
/// and returns how many were allowed in total.
fn hammer(l: &Limiter, id: &Arc<str>, lim: Limit, threads: usize, tries: usize) -> usize {
    let allowed = AtomicUsize::new(0);
    let start = Barrier::new(threads);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                start.wait();
                let mut mine = 0;
                for _ in 0..tries {
                    if l.check(id, lim).allowed {
                        mine += 1;
                    }
                }
                allowed.fetch_add(mine, Ordering::Relaxed);
            });
        }
    });
    allowed.into_inner()
}

#[test]
fn concurrent_checks_never_allow_more_than_the_bucket_holds() {
    const THREADS: usize = 8;
    const TRIES: usize = 2_000;
    let (clock, l) = limiter(100);
    let k = key("shared");
    // 10 tokens a second (one every 100 ms exactly), capacity 50.
    let lim = limit(10, 1, 50);

    // The clock does not move: exactly the burst passes, no token is lost or
    // handed out twice.
    let first = hammer(&l, &k, lim, THREADS, TRIES);
    assert_eq!(first, 50);

    // D = 2.5 s refills floor(2.5 * 10) = 25 tokens.
    clock.advance(ms(2500));
    let second = hammer(&l, &k, lim, THREADS, TRIES);
    assert!(first + second <= 50 + 25, "{first} + {second}");
    assert_eq!(second, 25);

    // Without time passing, nothing more.
    assert_eq!(hammer(&l, &k, lim, THREADS, TRIES), 0);
}

#[test]
fn concurrent_new_keys_each_get_one_bucket() {
    let (_, l) = limiter(1000);
    let lim = limit(10, 10, 3);
    let ids: Vec<Arc<str>> = (0..16).map(|i| key(&format!("k{i}"))).collect();
    let allowed = AtomicUsize::new(0);
    let start = Barrier::new(4);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                start.wait();
                for id in &ids {
                    for _ in 0..5 {
                        if l.check(id, lim).allowed {
                            allowed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
    });
    assert_eq!(allowed.into_inner(), 16 * 3);
    assert_eq!(l.len(), 16);
    assert_eq!(l.untracked(), 0);
}

// ---- In a fleet (CONTRACT §7) ----

use crate::config::OnUnavailable;

fn report_of(l: &Limiter, id: &str) -> Option<Report> {
    l.collect(|id, _| {
        let mut n = [0u8; 16];
        n[..id.len().min(16)].copy_from_slice(&id.as_bytes()[..id.len().min(16)]);
        n
    })
    .into_iter()
    .find(|r| &*r.bucket == id)
}

#[test]
fn a_new_bucket_in_a_fleet_is_this_instances_share_until_synced() {
    let (_, l) = limiter(100);
    l.set_fleet(Fleet::Synced { instances: 3 });
    let k = key("k");
    // 9 of burst 9 across 3 instances: 3 here.
    assert_eq!(drain(&l, &k, limit(9, 60, 9)), 3);
    let r = report_of(&l, "k").unwrap();
    assert_eq!((r.consumed, r.denied), (3, true));
    // Collected: nothing pending until the next request.
    assert_eq!(report_of(&l, "k").unwrap().consumed, 0);
}

#[test]
fn a_share_always_admits_one_request_even_when_burst_is_below_the_fleet_size() {
    let (_, l) = limiter(100);
    l.set_fleet(Fleet::Synced { instances: 5 });
    let k = key("k");
    assert_eq!(drain(&l, &k, limit(2, 60, 2)), 1);
}

#[test]
fn a_sole_user_gets_the_whole_remaining_and_headers_show_the_fleet() {
    let (_, l) = limiter(100);
    l.set_fleet(Fleet::Synced { instances: 3 });
    let k = key("k");
    let lim = limit(10, 60, 10);
    assert!(l.check(&k, lim).allowed);
    let r = report_of(&l, "k").unwrap();
    // The fleet has seen this one request (6 s of debt) and nobody else.
    let at = 0;
    l.apply(
        &r,
        FleetBucket {
            level: 6 * NANOS_PER_SEC,
            share: Share::Alone { until: u64::MAX },
            reserved: false,
        },
        at,
    );
    let o = l.check(&k, lim);
    assert!(o.allowed);
    assert_eq!(
        o.remaining, 8,
        "fleet remaining: 10 - 1 reported - this one"
    );
    assert_eq!(drain(&l, &k, lim), 8);
    let denied = l.check(&k, lim);
    assert!(!denied.allowed);
    assert_eq!(denied.retry_after_secs, 6);
}

#[test]
fn a_shared_bucket_admits_its_share_of_the_fleet_remaining() {
    let (_, l) = limiter(100);
    l.set_fleet(Fleet::Synced { instances: 3 });
    let k = key("k");
    let lim = limit(30, 60, 30);
    assert!(l.check(&k, lim).allowed);
    let r = report_of(&l, "k").unwrap();
    // Others spent: 12 of 30 left (18 tokens of 2 s debt).
    l.apply(
        &r,
        FleetBucket {
            level: 36 * NANOS_PER_SEC,
            share: Share::Shared,
            reserved: false,
        },
        0,
    );
    let first = l.check(&k, lim);
    assert_eq!(first.remaining, 11, "the fleet's figure, not the share's");
    assert_eq!(1 + drain(&l, &k, lim), 4, "a third of 12");
}

#[test]
fn what_is_admitted_while_a_report_is_in_flight_is_taken_off_the_answer() {
    let (_, l) = limiter(100);
    l.set_fleet(Fleet::Synced { instances: 1 });
    let k = key("k");
    let lim = limit(10, 60, 10);
    assert!(l.check(&k, lim).allowed);
    let r = report_of(&l, "k").unwrap();
    // Two more before the answer arrives.
    assert!(l.check(&k, lim).allowed);
    assert!(l.check(&k, lim).allowed);
    l.apply(
        &r,
        FleetBucket {
            level: 6 * NANOS_PER_SEC,
            share: Share::Alone { until: u64::MAX },
            reserved: false,
        },
        0,
    );
    assert_eq!(drain(&l, &k, lim), 7);
    assert_eq!(report_of(&l, "k").unwrap().consumed, 9);
}

#[test]
fn fleet_debt_refuses_until_repaid() {
    let (clock, l) = limiter(100);
    l.set_fleet(Fleet::Synced { instances: 2 });
    let k = key("k");
    let lim = limit(10, 10, 10);
    assert!(l.check(&k, lim).allowed);
    let r = report_of(&l, "k").unwrap();
    // The fleet over-spent by 3 tokens: 13 s from full with a 10 s capacity.
    l.apply(
        &r,
        FleetBucket {
            level: 13 * NANOS_PER_SEC,
            share: Share::Alone { until: u64::MAX },
            reserved: false,
        },
        clock.mono_nanos(),
    );
    assert!(!l.check(&k, lim).allowed);
    clock.advance(Duration::from_millis(3_500));
    assert!(!l.check(&k, lim).allowed, "3 s of debt, then one token");
    clock.advance(Duration::from_millis(600));
    assert!(l.check(&k, lim).allowed);
}

#[test]
fn being_alone_on_a_bucket_lapses_unless_the_fleet_says_so_again() {
    let (clock, l) = limiter(100);
    l.set_fleet(Fleet::Synced { instances: 3 });
    let k = key("k");
    let lim = limit(10, 60, 10);
    assert!(l.check(&k, lim).allowed);
    let r = report_of(&l, "k").unwrap();
    let now = clock.mono_nanos();
    l.apply(
        &r,
        FleetBucket {
            level: 6 * NANOS_PER_SEC,
            share: Share::Alone {
                until: now + 150 * 1_000_000,
            },
            reserved: false,
        },
        now,
    );
    assert!(l.check(&k, lim).allowed);
    assert!(l.check(&k, lim).allowed);
    // 7 tokens left, but the answer is 200 ms old: a request costs a share
    // again (18 s of the 42 s left), as if others had started on the key.
    clock.advance(ms(200));
    assert_eq!(drain(&l, &k, lim), 2);
}

#[test]
fn a_held_instance_keeps_to_what_it_holds() {
    let (_, l) = limiter(100);
    l.set_fleet(Fleet::Synced { instances: 3 });
    let k = key("k");
    let lim = limit(10, 600, 10);
    // Its share of a new bucket, spent; Redis counts 5 spent. Held (a sole
    // user may still be spending what Redis does not count): nothing beyond
    // the share already spent.
    assert_eq!(drain(&l, &k, lim), 3);
    let five = FleetBucket {
        level: 5 * 60 * NANOS_PER_SEC,
        share: Share::Held,
        reserved: false,
    };
    l.apply(&report_of(&l, "k").unwrap(), five, 0);
    assert_eq!(drain(&l, &k, lim), 0);
    // Once the sole user has synced: a third of the 5 left.
    let shared = FleetBucket {
        share: Share::Shared,
        ..five
    };
    l.apply(&report_of(&l, "k").unwrap(), shared, 0);
    assert_eq!(drain(&l, &k, lim), 1);
    // Nor more than the fleet's figure allows.
    let (_, l) = limiter(100);
    l.set_fleet(Fleet::Synced { instances: 3 });
    assert!(l.check(&k, lim).allowed);
    let r = report_of(&l, "k").unwrap();
    l.apply(
        &r,
        FleetBucket {
            level: 9 * 60 * NANOS_PER_SEC,
            share: Share::Held,
            reserved: false,
        },
        0,
    );
    assert_eq!(drain(&l, &k, lim), 0, "1 token left, 2 shares held locally");
}

#[test]
fn a_token_the_fleet_reserved_is_kept_until_spent_and_counted_once() {
    let (_, l) = limiter(100);
    l.set_fleet(Fleet::Synced { instances: 3 });
    let k = key("k");
    let lim = limit(10, 600, 10);
    assert_eq!(drain(&l, &k, lim), 3);
    let r = report_of(&l, "k").unwrap();
    assert!(r.denied && r.wants_token, "{r:?}");
    // 2 were left, a third of that less than one: the fleet reserved one
    // for this instance (counted: 9 spent).
    let nine = |reserved| FleetBucket {
        level: 9 * 60 * NANOS_PER_SEC,
        share: Share::Shared,
        reserved,
    };
    l.apply(&r, nine(true), 0);
    // Quiet syncs keep it, and it asks for no other.
    for _ in 0..3 {
        let r = report_of(&l, "k").unwrap();
        assert!(!r.denied && !r.wants_token && r.consumed == 0, "{r:?}");
        l.apply(&r, nine(false), 0);
    }
    let o = l.check(&k, lim);
    assert!(o.allowed);
    assert_eq!(o.remaining, 1, "the fleet's figure: it was counted");
    assert!(!l.check(&k, lim).allowed);
    let r = report_of(&l, "k").unwrap();
    assert_eq!(r.consumed, 0, "not counted twice");
    assert!(r.wants_token, "spent: it may ask for another");
}

#[test]
fn a_failed_report_is_sent_again() {
    let (_, l) = limiter(100);
    l.set_fleet(Fleet::Synced { instances: 1 });
    let k = key("k");
    let lim = limit(10, 60, 10);
    for _ in 0..4 {
        assert!(l.check(&k, lim).allowed);
    }
    let r = report_of(&l, "k").unwrap();
    assert_eq!(r.consumed, 4);
    assert!(l.check(&k, lim).allowed);
    l.restore(std::slice::from_ref(&r));
    assert_eq!(report_of(&l, "k").unwrap().consumed, 5);
}

#[test]
fn degraded_modes_apply_on_unavailable() {
    let lim = limit(9, 60, 9);
    let degraded = |mode| Fleet::Degraded { instances: 3, mode };
    for (mode, admitted) in [
        (OnUnavailable::LocalShare, 3),
        (OnUnavailable::LocalFull, 9),
    ] {
        let (_, l) = limiter(100);
        l.set_fleet(degraded(mode));
        assert_eq!(drain(&l, &key("k"), lim), admitted, "{mode:?}");
        assert_eq!(
            report_of(&l, "k").unwrap().consumed,
            admitted,
            "kept for the fleet"
        );
    }
    let (_, l) = limiter(100);
    l.set_fleet(degraded(OnUnavailable::Allow));
    for _ in 0..50 {
        assert!(l.check(&key("k"), lim).allowed);
    }
    assert_eq!(report_of(&l, "k").unwrap().consumed, 50);
    let (_, l) = limiter(100);
    l.set_fleet(degraded(OnUnavailable::Deny));
    let o = l.check(&key("k"), lim);
    assert!(!o.allowed && o.unavailable);
    assert_eq!(o.retry_after_secs, 1);
}

#[test]
fn without_a_fleet_nothing_is_kept_for_one() {
    let (_, l) = limiter(100);
    let k = key("k");
    assert!(l.check(&k, limit(10, 60, 10)).allowed);
    let r = report_of(&l, "k").unwrap();
    assert_eq!(r.consumed, 0);
    assert!(!l.check(&k, limit(10, 60, 10)).unavailable);
}

/// The fleet's bucket as `cluster/sync.lua` keeps it, on a virtual clock:
/// the reference the simulations below reconcile three limiters with.
#[derive(Default)]
struct FleetModel {
    tat: u64,
    /// The last instance that spent from it.
    writer: Option<usize>,
    /// Until when it counts as shared.
    multi: u64,
    /// The instance last told it is alone, and until when.
    owner: Option<(usize, u64)>,
}

impl FleetModel {
    /// One instance's report, in a fleet of three.
    fn report(&mut self, who: usize, r: &Report, now: u64, stale: u64) -> FleetBucket {
        let (interval, cap) = (r.limit.interval(), r.limit.capacity());
        let fresh = self.writer.is_none();
        self.tat = self.tat.max(now);
        if r.consumed > 0 {
            self.tat = (self.tat + r.consumed * interval).min(now + 2 * cap);
            if self.writer.is_some_and(|w| w != who) {
                self.multi = now + stale.max(10 * NANOS_PER_SEC);
            }
            self.writer = Some(who);
        }
        let share = if !fresh && self.multi <= now && self.writer == Some(who) {
            self.owner = Some((who, now + stale));
            Share::Alone { until: now + stale }
        } else if self.owner.is_some_and(|(o, _)| o == who) {
            self.owner = None;
            Share::Shared
        } else if self.owner.is_some_and(|(_, until)| until > now) {
            Share::Held
        } else {
            Share::Shared
        };
        let left = (now + cap).saturating_sub(self.tat) / interval;
        let reserved = r.wants_token && share == Share::Shared && (1..3).contains(&left);
        if reserved {
            self.tat += interval;
        }
        FleetBucket {
            level: self.tat - now,
            share,
            reserved,
        }
    }
}

/// Three instances' limiters on one virtual clock, synced.
fn fleet_of_three() -> (Arc<ManualClock>, Vec<Limiter>) {
    let clock = ManualClock::at(1_800_000_000);
    let limiters = (0..3)
        .map(|_| {
            let l = Limiter::new(clock.clone(), 100);
            l.set_fleet(Fleet::Synced { instances: 3 });
            l
        })
        .collect();
    (clock, limiters)
}

#[test]
fn simulated_fleet_of_three_stays_within_the_share_bound() {
    // 100/s burst 100, sync every 50 ms, uneven traffic (70/20/10 %) at
    // 3x the limit, 10 virtual seconds: admitted ≈ burst + rate·t, and the
    // excess over it within (1 - 1/N)·(burst + rate·sync).
    let (clock, limiters) = fleet_of_three();
    let lim = limit(100, 1, 100);
    let k = key("k");
    let mut fleet = FleetModel::default();
    let step = Duration::from_micros(1_000);
    let sync_every = 50;
    let mut admitted = 0u64;
    let mut worst_excess = 0f64;
    let start = clock.mono_nanos();
    for ms in 0..10_000u64 {
        // 300 requests a second: 3 per 10 ms slot... spread by share.
        for (who, per_10ms) in [(0usize, 21u64), (1, 6), (2, 3)] {
            let n = per_10ms / 10 + u64::from(ms % 10 < per_10ms % 10);
            for _ in 0..n {
                if limiters[who].check(&k, lim).allowed {
                    admitted += 1;
                }
            }
        }
        if ms % sync_every == sync_every - 1 {
            for (who, l) in limiters.iter().enumerate() {
                let now = clock.mono_nanos();
                if let Some(r) = report_of(l, "k") {
                    let answer = fleet.report(who, &r, now, 150 * 1_000_000);
                    l.apply(&r, answer, now);
                }
            }
        }
        clock.advance(step);
        let elapsed = (clock.mono_nanos() - start) as f64 / 1e9;
        let ideal = 100.0 + 100.0 * elapsed;
        worst_excess = worst_excess.max(admitted as f64 - ideal);
    }
    let ideal = 100.0 + 100.0 * 10.0;
    let bound = (1.0 - 1.0 / 3.0) * (100.0 + 100.0 * 0.05);
    assert!(
        worst_excess <= bound,
        "excess {worst_excess} over bound {bound}"
    );
    let ratio = admitted as f64 / ideal;
    assert!(
        (0.97..=1.03).contains(&ratio),
        "admitted {admitted} of ideal {ideal}"
    );
}

#[test]
fn a_sole_user_that_syncs_late_and_the_instances_joining_it_stay_within_the_bound() {
    // 10/min burst 10, sync every 50 ms. Instance 0 uses the key alone until
    // the fleet says so; then requests come round robin, one a millisecond,
    // to all three. The others sync every 12 ms (early: new buckets,
    // refusals); instance 0's next sync is 2 periods late. Admitted: at most
    // the limit plus (1 - 1/N)·burst, all of it counted in the fleet once
    // everyone has synced.
    let (clock, limiters) = fleet_of_three();
    let lim = limit(10, 60, 10);
    let stale = 150 * 1_000_000;
    let k = key("k");
    let mut fleet = FleetModel::default();
    let sync = |fleet: &mut FleetModel, who: usize| {
        let now = clock.mono_nanos();
        if let Some(r) = report_of(&limiters[who], "k") {
            let answer = fleet.report(who, &r, now, stale);
            limiters[who].apply(&r, answer, now);
            answer.share
        } else {
            Share::Shared
        }
    };
    assert!(limiters[0].check(&k, lim).allowed);
    assert_eq!(sync(&mut fleet, 0), Share::Shared, "new to the fleet");
    clock.advance(ms(50));
    assert!(matches!(sync(&mut fleet, 0), Share::Alone { .. }));
    let mut admitted = 1u64;
    for t in 0..300u64 {
        if limiters[(t % 3) as usize].check(&k, lim).allowed {
            admitted += 1;
        }
        if t % 12 == 11 {
            sync(&mut fleet, 1);
            sync(&mut fleet, 2);
        }
        if t >= 100 && t % 50 == 0 {
            sync(&mut fleet, 0);
        }
        clock.advance(ms(1));
    }
    let bound = 10.0 + (1.0 - 1.0 / 3.0) * 10.0;
    assert!(
        admitted as f64 <= bound,
        "{admitted} admitted, bound {bound}"
    );
    assert!(admitted >= 10, "{admitted} admitted");
    for who in 0..3 {
        sync(&mut fleet, who);
    }
    let spent = (fleet.tat - clock.mono_nanos()) as f64 / lim.interval() as f64;
    assert!((spent - admitted as f64).abs() < 0.1, "{spent} counted");
}

#[test]
fn headers_count_what_a_report_in_flight_holds_until_its_answer() {
    let (_, l) = limiter(100);
    l.set_fleet(Fleet::Synced { instances: 1 });
    let k = key("k");
    let lim = limit(10, 60, 10);
    let six = 6 * NANOS_PER_SEC;
    assert!(l.check(&k, lim).allowed);
    let first = report_of(&l, "k").unwrap();
    l.apply(
        &first,
        FleetBucket {
            level: six,
            share: Share::Alone { until: u64::MAX },
            reserved: false,
        },
        0,
    );
    for want in [8, 7, 6] {
        assert_eq!(l.check(&k, lim).remaining, want);
    }
    // Three reported, the answer not back yet: the fleet's figure as last
    // read would say 9; the in-flight ones still count.
    let second = report_of(&l, "k").unwrap();
    assert_eq!(second.consumed, 3);
    assert_eq!(l.check(&k, lim).remaining, 5);
    // A failed report gives them back: still counted, now as pending.
    l.restore(std::slice::from_ref(&second));
    assert_eq!(l.check(&k, lim).remaining, 4);
    let third = report_of(&l, "k").unwrap();
    assert_eq!(third.consumed, 5);
    assert_eq!(l.check(&k, lim).remaining, 3);
    // The answer holds all six: nothing is counted twice.
    l.apply(
        &third,
        FleetBucket {
            level: 6 * six,
            share: Share::Alone { until: u64::MAX },
            reserved: false,
        },
        0,
    );
    assert_eq!(l.check(&k, lim).remaining, 2);
}
