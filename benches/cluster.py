#!/usr/bin/env python3
"""Cluster accuracy and latency on loopback (CONTRACT §7).

Starts its own redis-server (free port, no persistence), one upstream and
three `keygate run` instances sharing one key's bucket through Redis, then
drives them with an open-loop client: requests at a fixed arrival rate,
round robin over the instances, each on its own keep-alive connection from a
small pool (wrk would hide the accuracy: it only counts completions). The key
has a limit of 100/s with a burst of 100; the offered load is 3x that.

Runs (each --duration seconds unless said otherwise):
  off          [cluster] removed: every instance limits alone (the problem).
  on           [cluster] on: admitted against the ideal, the largest excess
               over any 1, 5 and 10 s window against the bound
               (1 - 1/N)·(burst + rate·(sync + RTT)), client p50/p99.
  sigstop      Redis SIGSTOPped for 5 s mid-run: failed requests, p99, and how
               long after SIGCONT every instance is synced again.
  kill         Redis killed (-9) mid-run and restarted on its port 2 s later.
  skewed       90% of the traffic on one instance.
  burst        1 s of round-robin traffic, 3 s idle (buckets full again), then
               3x the burst at once, round robin: admitted against the burst,
               excess against the bound.
  latency      --latency-rounds rounds of off, on and SIGSTOP (10 s runs),
               interleaved: the median client p99 of each (one run's p99 moves
               by 1.5x from run to run on a shared machine).

Prints every figure and the goals next to them; exits 0 whatever they are
(it measures, it does not gate). Stops everything it starts, by pid.

  benches/cluster.py [--duration 30] [--rate 300] [--sync-ms 50] [--runs ...]
                     [--latency-rounds 5]
"""

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RATE, BURST = 100, 100
N = 3


def log(msg):
    print(f"[cluster] {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Procs:
    """Every process started here, stopped by pid at exit."""

    def __init__(self):
        self.procs = []

    def start(self, args, **kw):
        p = subprocess.Popen(args, **kw)
        self.procs.append(p)
        return p

    def stop(self, p, sig=signal.SIGTERM):
        if p.poll() is None:
            try:
                os.kill(p.pid, signal.SIGCONT)
                os.kill(p.pid, sig)
                p.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                p.kill()
                p.wait()

    def stop_all(self):
        for p in reversed(self.procs):
            self.stop(p)


class Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Head and body are two writes: without this, Nagle and delayed ACKs add
    # 40 ms to every response.
    disable_nagle_algorithm = True

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *a):
        pass


def build():
    log("building the release binary (cargo build --release --locked)")
    subprocess.run(["cargo", "build", "--release", "--locked", "--bin", "keygate"],
                   cwd=ROOT, check=True)
    meta = subprocess.run(["cargo", "metadata", "--format-version", "1", "--no-deps"],
                          cwd=ROOT, check=True, capture_output=True, text=True)
    return Path(json.loads(meta.stdout)["target_directory"]) / "release" / "keygate"


def wait(what, pred, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if pred():
                return
        except OSError:
            pass
        time.sleep(0.02)
    raise SystemExit(f"{what}: not within {timeout} s")


def get_json(port, path):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    c.request("GET", path)
    r = c.getresponse()
    body = r.read()
    c.close()
    return json.loads(body)


class Redis:
    def __init__(self, procs, tmp):
        self.procs, self.tmp = procs, tmp
        self.port = free_port()
        self.proc = None
        self.start()

    def start(self):
        self.proc = self.procs.start(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.tmp)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def ping():
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        wait("redis", ping)

    def signal(self, sig):
        os.kill(self.proc.pid, sig)


class Fleet:
    def __init__(self, procs, binary, tmp, redis, sync_ms, upstream_port):
        self.procs, self.binary, self.tmp = procs, binary, tmp
        self.redis, self.sync_ms, self.upstream = redis, sync_ms, upstream_port
        self.ports = [(free_port(), free_port()) for _ in range(N)]
        snapshot = tmp / "keys.toml"
        self.key = subprocess.run(
            [str(binary), "keys", "new", "--snapshot", str(snapshot), "--type", "company",
             "--company", "acme", "--name", "bench", "--scope", "read:all",
             "--rate-limit", f"{RATE}/1s:{BURST}"],
            check=True, capture_output=True, text=True).stdout.strip()
        self.gws = []

    def config(self, i, cluster, namespace):
        http_port, admin = self.ports[i]
        text = f"""
[server]
listen = ["127.0.0.1:{http_port}"]
threads = 1
grace_period_secs = 1

[admin]
listen = "127.0.0.1:{admin}"

[keys]
snapshot = "keys.toml"

[[upstreams]]
name = "api"
servers = ["127.0.0.1:{self.upstream}"]

[[routes]]
name = "company"
path = "/api/v1/company/**"
upstream = "api"
auth = "company"
scope = "auto"
"""
        if cluster:
            text += f"""
[cluster]
redis = "redis://127.0.0.1:{self.redis.port}/0"
namespace = "{namespace}"
sync_ms = {self.sync_ms}
timeout_ms = 100
"""
        path = self.tmp / f"gw{i}.toml"
        path.write_text(text)
        return path

    def start(self, cluster):
        self.stop()
        namespace = f"bench{int(time.time() * 1000)}"   # a fresh fleet per run
        for i in range(N):
            cfg = self.config(i, cluster, namespace)
            out = open(self.tmp / f"gw{i}.log", "ab")
            self.gws.append(self.procs.start([str(self.binary), "run", "--config", str(cfg)],
                                             stdout=out, stderr=subprocess.STDOUT))
        for _, admin in self.ports:
            wait("gateway ready", lambda a=admin: get_json(a, "/readyz")["status"] == "ready")
        if cluster:
            wait("fleet of 3", lambda: self.all_synced(N))

    def all_synced(self, n=None):
        for _, admin in self.ports:
            c = get_json(admin, "/readyz").get("cluster", {})
            if not c.get("up") or (n is not None and c.get("instances") != n):
                return False
        return True

    def stop(self):
        for p in self.gws:
            self.procs.stop(p)
        self.gws = []


def drive(fleet, duration, rate, weights=(1, 1, 1), during=None, burst_after=None):
    """Open loop: request i is due at t0 + i/rate, sent to an instance drawn
    by `weights` in a fixed pattern. Returns [(due, sent, latency, status,
    instance)] with status 0 for a failed request."""
    pattern = [i for i, w in enumerate(weights) for _ in range(w)]
    total = int(duration * rate) if burst_after is None else 3 * BURST
    lanes = 8 * N
    results = [None] * total
    t0 = time.monotonic() + 0.2 + (burst_after or 0)
    headers = {"Authorization": f"Bearer {fleet.key}"}

    def lane(k):
        conns = {}
        if burst_after is not None:
            # Connected before t0: the burst is requests, not handshakes.
            for gw in {pattern[i % len(pattern)] for i in range(k, total, lanes)}:
                c = conns[gw] = http.client.HTTPConnection(
                    "127.0.0.1", fleet.ports[gw][0], timeout=5)
                c.connect()
        for i in range(k, total, lanes):
            gw = pattern[i % len(pattern)]
            due = t0 + (0 if burst_after is not None else i / rate)
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            sent = time.monotonic()
            status = 0
            try:
                c = conns.get(gw)
                if c is None:
                    c = conns[gw] = http.client.HTTPConnection(
                        "127.0.0.1", fleet.ports[gw][0], timeout=5)
                c.request("GET", "/api/v1/company/bench", headers=headers)
                r = c.getresponse()
                r.read()
                status = r.status
            except (OSError, http.client.HTTPException):
                conns.pop(gw, None)
            results[i] = (due - t0, sent - t0, time.monotonic() - sent, status, gw)
        for c in conns.values():
            c.close()

    threads = [threading.Thread(target=lane, args=(k,)) for k in range(lanes)]
    for t in threads:
        t.start()
    if during:
        during(t0)
    for t in threads:
        t.join()
    return [r for r in results if r is not None]


def excess(results, window, rtt_s):
    """Largest admitted-in-window over what a bucket allows in it."""
    times = sorted(r[1] for r in results if r[3] == 200)
    worst, j = 0.0, 0
    for i, t in enumerate(times):
        while times[j] < t - window:
            j += 1
        worst = max(worst, (i - j + 1) - (BURST + RATE * window))
    return worst


def p99_of(results):
    """Client p99 (ms) of the answered requests."""
    return pct([r[2] * 1000 for r in results if r[3] in (200, 429)], 0.99)


def pct(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def summary(name, results, duration, sync_s, rtt_s):
    ok = [r for r in results if r[3] == 200]
    limited = [r for r in results if r[3] == 429]
    failed = [r for r in results if r[3] not in (200, 429)]
    lat = [r[2] * 1000 for r in results if r[3] in (200, 429)]
    ideal = BURST + RATE * duration
    bound = (1 - 1 / N) * (BURST + RATE * (sync_s + rtt_s))
    print(f"\n## {name}")
    print(f"requests {len(results)}: admitted {len(ok)}, 429 {len(limited)}, failed {len(failed)}")
    print(f"admitted / ideal ({ideal:.0f}) = {len(ok) / ideal:.3f}")
    for w in (1, 5, 10):
        if w <= duration:
            print(f"largest excess over a {w:>2} s window: {excess(results, w, rtt_s):7.1f}"
                  f"  (bound {bound:.1f})")
    print(f"client p50 {pct(lat, 0.5):.2f} ms, p99 {pct(lat, 0.99):.2f} ms, "
          f"max {max(lat) if lat else float('nan'):.2f} ms")
    per_second = [0] * max(1, int(duration + 0.999))
    for r in ok:
        per_second[min(len(per_second) - 1, max(0, int(r[1])))] += 1
    print(f"admitted per second: {' '.join(str(n) for n in per_second)}")
    return {"admitted": len(ok), "ideal": ideal, "failed": len(failed),
            "p50": pct(lat, 0.5), "p99": pct(lat, 0.99), "bound": bound}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--rate", type=float, default=3.0 * RATE, help="arrivals per second")
    ap.add_argument("--sync-ms", type=int, default=50)
    ap.add_argument("--binary", help="keygate binary (default: build the release one)")
    ap.add_argument("--runs", default="off,on,sigstop,kill,skewed,burst,latency",
                    help="which runs, comma-separated (all by default)")
    ap.add_argument("--latency-rounds", type=int, default=5,
                    help="rounds of the latency run: off, on and SIGSTOP, 10 s each, "
                         "interleaved so that the machine's drift hits all three (5)")
    args = ap.parse_args()
    if not shutil.which("redis-server"):
        raise SystemExit("redis-server is missing: apt-get install redis-server (./dev setup)")
    binary = Path(args.binary) if args.binary else build()
    procs = Procs()
    tmp = Path(tempfile.mkdtemp(prefix="keygate-cluster-"))
    # socketserver's default listen backlog is 5: a burst that opens more
    # upstream connections at once would wait 1 s for a SYN-ACK retransmit.
    ThreadingHTTPServer.request_queue_size = 1024
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    try:
        redis = Redis(procs, tmp)
        fleet = Fleet(procs, binary, tmp, redis, args.sync_ms, upstream.server_address[1])
        sync_s, rtt_s, d = args.sync_ms / 1000, 0.001, args.duration
        print(f"# keygate cluster bench: {N} instances, one key at {RATE}/s burst {BURST}, "
              f"{args.rate:.0f} arrivals/s round robin, sync {args.sync_ms} ms, {d:.0f} s runs")

        runs = set(args.runs.split(","))
        unknown = runs - {"off", "on", "sigstop", "kill", "skewed", "burst", "latency"}
        if unknown:
            sys.exit(f"unknown runs: {', '.join(sorted(unknown))}")
        off = on = stop = kill = skew = None
        if "off" in runs:
            fleet.start(cluster=False)
            off = summary("off: each instance alone", drive(fleet, d, args.rate), d,
                          sync_s, rtt_s)
        if "on" in runs:
            fleet.start(cluster=True)
            on = summary("on: one fleet bucket", drive(fleet, d, args.rate), d, sync_s, rtt_s)

        resync = {}

        def outage(name, outage_s, begin, end, length=None):
            """A run (of `length` s, --duration by default) with Redis out for
            `outage_s` mid-run: `begin` takes it out, `end` brings it back;
            then the time until every instance is synced again."""
            d = length or args.duration
            fleet.start(cluster=True)

            def during(t0):
                time.sleep(max(0, t0 + d / 2 - outage_s / 2 - time.monotonic()))
                begin()
                time.sleep(outage_s)
                end()
                t = time.monotonic()
                wait("resync", fleet.all_synced, timeout=10)
                resync[name] = time.monotonic() - t
            return drive(fleet, d, args.rate, during=during)

        if "sigstop" in runs:
            stop = summary("sigstop: Redis stopped 5 s mid-run",
                           outage("s", 5, lambda: redis.signal(signal.SIGSTOP),
                                  lambda: redis.signal(signal.SIGCONT)), d, sync_s, rtt_s)
            print(f"every instance synced again {resync.get('s', float('nan')):.3f} s "
                  "after SIGCONT")
        if "kill" in runs:
            kill = summary("kill: Redis killed -9, restarted 2 s later",
                           outage("k", 2, lambda: procs.stop(redis.proc, signal.SIGKILL),
                                  redis.start), d, sync_s, rtt_s)
            print(f"every instance synced again {resync.get('k', float('nan')):.3f} s "
                  "after the restart")
        if "skewed" in runs:
            fleet.start(cluster=True)
            skew = summary("skewed: 90% of the traffic on one instance",
                           drive(fleet, d, args.rate, weights=(18, 1, 1)), d, sync_s, rtt_s)
        burst = None
        if "burst" in runs:
            # The key is known to every instance (round-robin traffic), then
            # idle until the bucket is full again; then 3x the burst at once,
            # on connections opened during the idle spell.
            fleet.start(cluster=True)
            drive(fleet, 1.0, args.rate)
            results = drive(fleet, 0, args.rate, burst_after=3.0)
            admitted = [r for r in results if r[3] == 200]
            bound = (1 - 1 / N) * (BURST + RATE * (sync_s + rtt_s))
            span = max((r[1] for r in results), default=0.0)
            print(f"\n## burst: idle 3 s, then {len(results)} requests at once "
                  f"(all sent within {span * 1000:.0f} ms)")
            print(f"admitted {len(admitted)}; the bucket allows {BURST} plus what refills "
                  f"meanwhile, failed {sum(1 for r in results if r[3] not in (200, 429))}")
            burst = max(excess(results, w, rtt_s) for w in (0.05, 0.1, 0.5, 1.0))
            print(f"largest excess over any 50 ms to 1 s window: {burst:.1f} (bound {bound:.1f})")

        latency = None
        if "latency" in runs and args.latency_rounds > 0:
            # p99 moves by 1.5x between identical runs on a shared machine:
            # short runs, interleaved, and the median of each kind.
            p99s = {"off": [], "on": [], "sigstop": [], "stopped": [], "running": []}
            for _ in range(args.latency_rounds):
                fleet.start(cluster=False)
                p99s["off"].append(p99_of(drive(fleet, 10, args.rate)))
                fleet.start(cluster=True)
                p99s["on"].append(p99_of(drive(fleet, 10, args.rate)))
                stopped = outage("l", 5, lambda: redis.signal(signal.SIGSTOP),
                                 lambda: redis.signal(signal.SIGCONT), 10)
                p99s["sigstop"].append(p99_of(stopped))
                # The same run split: sent while Redis was stopped, or not.
                during = [r for r in stopped if 2.5 <= r[1] < 7.5]
                p99s["stopped"].append(p99_of(during))
                p99s["running"].append(p99_of([r for r in stopped if r not in during]))
            latency = {k: statistics.median(v) for k, v in p99s.items()}
            print(f"\n## latency: {args.latency_rounds} interleaved rounds of off, on and "
                  "SIGSTOP (5 s of 10 s), client p99 in ms")
            for k, v in p99s.items():
                print(f"{k:<8} median {latency[k]:.2f}  runs {' '.join(f'{x:.2f}' for x in v)}")

        print("\n## goals")
        if on:
            print(f"on: within 3% of ideal: {abs(on['admitted'] / on['ideal'] - 1) * 100:.1f}% off")
        if on and off:
            print(f"on: p99 / off p99 = {on['p99'] / off['p99']:.2f} (goal <= 1.05)")
        if stop:
            vs_on = f"{stop['p99'] / on['p99']:.2f}" if on else "n/a (no on run)"
            print(f"sigstop: failed {stop['failed']} (goal 0), p99 / on p99 = {vs_on} "
                  f"(goal <= 1.05), resync {resync.get('s', float('nan')):.3f} s (goal <= 1)")
        if kill:
            print(f"kill: failed {kill['failed']}, {kill['admitted'] / kill['ideal']:.3f} of ideal")
        if skew:
            print(f"skewed: {skew['admitted'] / skew['ideal']:.3f} of ideal")
        if burst is not None:
            print(f"burst: excess {burst:.1f} (goal <= bound {bound:.1f})")
        if latency:
            print(f"latency medians: on / off p99 = {latency['on'] / latency['off']:.2f}, "
                  f"sigstop / on p99 = {latency['sigstop'] / latency['on']:.2f}, "
                  f"within the SIGSTOP runs, stopped / running = "
                  f"{latency['stopped'] / latency['running']:.2f} (goals <= 1.05)")
    finally:
        procs.stop_all()
        upstream.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
