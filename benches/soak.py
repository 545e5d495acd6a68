#!/usr/bin/env python3
"""Soak test: keygate under mixed traffic while its snapshot is reloaded every second.

Builds the release binary, starts a keep-alive upstream (Python's
ThreadingHTTPServer speaking HTTP/1.1, in its own process), writes a snapshot
with valid, invalid, expired, revoked and tightly rate-limited keys, starts
`keygate run`, then for --minutes drives mixed traffic from a few client threads
(http.client, keep-alive) while another thread rewrites the snapshot (adding or
removing an unused key, temp file + rename) and sends SIGHUP every second.

Every response status is checked against what its key must get (200, 401, 403
or 429 exactly; the rate-limited key may get 200 or 429). The gateway's RSS is
read from /proc/<pid>/statm every few seconds. The warm-up ends once RSS has
settled (grown less than 1% over the last 20 s, and at least 15 s in) or at half
the run, whichever comes first; its sample is the baseline, compared with the
last one. A run too short for RSS to settle says so.

Goals (exit 1 if one is missed):
  - zero unexpected statuses and zero transport errors,
  - every reload succeeded (no failure counted) and the gateway never died,
  - RSS at the end within 10% of RSS after the warm-up.

Usage:  benches/soak.py [--minutes 10] [--clients 4] [--warmup-secs N]
                        [--access-log] [--no-build]
Every process started is stopped by its pid (try/finally); the temp dir is
removed. Loopback only. Python 3 standard library only.
"""

import argparse
import hashlib
import http.client
import json
import os
import random
import secrets
import signal
import socket
import string
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ALNUM = string.ascii_letters + string.digits
PAGE = os.sysconf("SC_PAGE_SIZE")

UPSTREAM_CODE = r"""
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # One write per response, sent at once: no Nagle / delayed-ACK stalls.
    wbufsize = 65536
    disable_nagle_algorithm = True

    def handle_any(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        body = ('{"key":"%s"}' % self.headers.get("x-keygate-key-id", "")).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = handle_any

    def log_message(self, *args):
        pass

class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

srv = Server(("127.0.0.1", 0), Echo)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mint(prefix):
    return prefix + "".join(secrets.choice(ALNUM) for _ in range(40))


def digest(key):
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


class Keys:
    """The snapshot's keys and what each must get on each kind of request."""

    def __init__(self):
        self.admin = mint("ord_c_")  # company, admin
        self.reader = mint("ord_c_")  # company, read:all
        self.ws = mint("ord_")  # workspace ws_a, read+write
        self.revoked = mint("ord_c_")
        self.expired = mint("ord_")
        self.limited = mint("ord_c_")  # 2 per second, burst 2
        self.churn = mint("ord_c_")  # added and removed, never used
        self.unknown = mint("ord_c_")  # in no snapshot
        self.foreign = "sk_" + mint("")  # no configured prefix

    def snapshot(self, with_churn):
        def key(id_, kind, secret, scopes, extra="", workspace=None):
            lines = [
                "[[keys]]",
                f'id = "{id_}"',
                f'name = "{id_}"',
                f'type = "{kind}"',
                'company = "acme"',
            ]
            if workspace:
                lines.append(f'workspace = "{workspace}"')
            lines += [
                "scopes = [" + ", ".join(f'"{s}"' for s in scopes) + "]",
                f'hash = "{digest(secret)}"',
                'created_at = "2026-01-01T00:00:00Z"',
            ]
            if extra:
                lines.append(extra)
            return "\n".join(lines) + "\n\n"

        text = (
            '[[workspaces]]\nid = "ws_a"\ncompany = "acme"\n\n'
            '[[workspaces]]\nid = "ws_b"\ncompany = "acme"\n\n'
        )
        text += key("k_admin", "company", self.admin, ["admin"])
        text += key("k_reader", "company", self.reader, ["read:all"])
        text += key("k_ws", "workspace", self.ws, ["read:all", "write:all"], workspace="ws_a")
        text += key(
            "k_revoked", "company", self.revoked, ["admin"], 'revoked_at = "2026-01-02T00:00:00Z"'
        )
        text += key(
            "k_expired",
            "workspace",
            self.expired,
            ["read:all"],
            'expires_at = "2026-01-02T00:00:00Z"',
            workspace="ws_a",
        )
        text += key(
            "k_limited",
            "company",
            self.limited,
            ["admin"],
            "rate_limit = { requests = 2, per_secs = 1, burst = 2 }",
        )
        if with_churn:
            text += key("k_churn", "company", self.churn, ["admin"])
        return text

    def cases(self):
        """(name, method, path, key or None, allowed statuses)."""
        return [
            ("admin company route", "GET", "/api/v1/company/things", self.admin, {200}),
            ("admin write", "POST", "/api/v1/company/things", self.admin, {200}),
            ("admin reaches a workspace", "GET", "/api/v1/company/workspaces/ws_b/x", self.admin, {200}),
            ("reader read", "GET", "/api/v1/company/things", self.reader, {200}),
            ("reader write: scope", "POST", "/api/v1/company/things", self.reader, {403}),
            ("workspace key, own workspace", "GET", "/api/v1/workspaces/ws_a/posts/1", self.ws, {200}),
            ("workspace key, other workspace", "GET", "/api/v1/workspaces/ws_b/posts/1", self.ws, {403}),
            ("workspace key on a company route", "GET", "/api/v1/company/things", self.ws, {403}),
            ("no key", "GET", "/api/v1/company/things", None, {401}),
            ("unknown key", "GET", "/api/v1/company/things", self.unknown, {401}),
            ("foreign prefix", "GET", "/api/v1/company/things", self.foreign, {401}),
            ("revoked key", "GET", "/api/v1/company/things", self.revoked, {403}),
            ("expired key", "GET", "/api/v1/workspaces/ws_a/posts/1", self.expired, {401}),
            ("rate-limited key", "GET", "/api/v1/company/things", self.limited, {200, 429}),
            ("public route", "GET", "/healthz", None, {200}),
        ]

    def all_keys(self):
        return [
            self.admin, self.reader, self.ws, self.revoked, self.expired,
            self.limited, self.churn, self.unknown, self.foreign,
        ]


CONFIG = """
[server]
listen = ["127.0.0.1:{http}"]
threads = 2
grace_period_secs = 5

[admin]
listen = "127.0.0.1:{admin}"

[keys]
snapshot = "keys.toml"

[rate_limit]
requests = 1000000
per_secs = 1

[[upstreams]]
name = "api"
servers = ["127.0.0.1:{upstream}"]
connect_timeout_ms = 1000
read_timeout_ms = 5000

[[routes]]
name = "health"
path = "/healthz"
upstream = "api"
auth = "none"
scope = "none"

[[routes]]
name = "company_workspace"
path = "/api/v1/company/workspaces/{{workspace}}/**"
upstream = "api"
auth = "company"

[[routes]]
name = "company"
path = "/api/v1/company/**"
upstream = "api"
auth = "company"

[[routes]]
name = "posts"
path = "/api/v1/workspaces/{{workspace}}/posts/**"
upstream = "api"
auth = "any"
"""


def write_atomic(path, text):
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def rss_bytes(pid):
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE


def metric(admin_port, series):
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(series + " "):
                return float(line.split()[-1])
    return 0.0


def wait_ready(admin_port, proc, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"keygate exited with {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/readyz", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError("keygate not ready in time")


def stop(proc, name, grace=10):
    """Stops one process we started, by its pid: SIGTERM, then SIGKILL."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        print(f"{name} (pid {proc.pid}) ignored SIGTERM; killing it", file=sys.stderr)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.total = 0
        self.by_case = {}
        self.unexpected = 0
        self.transport_errors = 0
        self.examples = []
        self.latencies = []

    def record(self, case, status, elapsed, allowed):
        with self.lock:
            self.total += 1
            per = self.by_case.setdefault(case, {})
            per[status] = per.get(status, 0) + 1
            if len(self.latencies) < 2_000_000:
                self.latencies.append(elapsed)
            if status not in allowed:
                self.unexpected += 1
                if len(self.examples) < 10:
                    self.examples.append(f"{case}: got {status}, expected {sorted(allowed)}")

    def error(self, case, e):
        with self.lock:
            self.transport_errors += 1
            if len(self.examples) < 10:
                self.examples.append(f"{case}: {type(e).__name__}: {e}")


def client(port, cases, stats, stop_at, seed):
    rng = random.Random(seed)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    while time.monotonic() < stop_at:
        name, method, path, key, allowed = rng.choice(cases)
        headers = {"Connection": "keep-alive"}
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        body = b'{"x":1}' if method == "POST" else None
        if body:
            headers["Content-Type"] = "application/json"
        started = time.perf_counter()
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            stats.record(name, resp.status, time.perf_counter() - started, allowed)
            if resp.will_close:
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        except (OSError, http.client.HTTPException) as e:
            stats.error(name, e)
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.close()


def reloader(gw_pid, keys_path, keys, stop_at, counters, proc, every):
    with_churn = False
    next_at = time.monotonic() + every
    while time.monotonic() < stop_at:
        time.sleep(max(0.0, next_at - time.monotonic()))
        next_at += every
        if proc.poll() is not None:
            return
        with_churn = not with_churn
        write_atomic(keys_path, keys.snapshot(with_churn))
        os.kill(gw_pid, signal.SIGHUP)
        counters["sent"] += 1


def percentile(sorted_values, p):
    if not sorted_values:
        return 0.0
    i = min(len(sorted_values) - 1, int(round(p / 100 * (len(sorted_values) - 1))))
    return sorted_values[i]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--clients", type=int, default=4, help="client threads (0: reloads only)")
    ap.add_argument("--reload-secs", type=float, default=1.0,
                    help="rewrite the snapshot and SIGHUP this often (0: never)")
    ap.add_argument("--warmup-secs", type=float, default=None,
                    help="fixed warm-up before the baseline RSS sample "
                         "(default: until RSS settles, at most half the run)")
    ap.add_argument("--access-log", action="store_true",
                    help="keep keygate's access log (one line per request) in the log file")
    ap.add_argument("--no-build", action="store_true", help="use the existing release binary")
    args = ap.parse_args()

    duration = args.minutes * 60
    if args.warmup_secs is not None and args.warmup_secs >= duration:
        sys.exit("--warmup-secs must be shorter than the run")

    if not args.no_build:
        print("building keygate (release)...", flush=True)
        subprocess.run(["cargo", "build", "--release", "--bin", "keygate"], cwd=ROOT, check=True)
    binary = ROOT / "target" / "release" / "keygate"

    tmp = tempfile.TemporaryDirectory(prefix="keygate-soak-")
    work = Path(tmp.name)
    upstream = gateway = None
    log_file = None
    try:
        upstream = subprocess.Popen(
            [sys.executable, "-c", UPSTREAM_CODE], stdout=subprocess.PIPE, text=True
        )
        upstream_port = int(upstream.stdout.readline())

        keys = Keys()
        http_port, admin_port = free_port(), free_port()
        (work / "keygate.toml").write_text(
            CONFIG.format(http=http_port, admin=admin_port, upstream=upstream_port)
        )
        keys_path = work / "keys.toml"
        write_atomic(keys_path, keys.snapshot(False))
        log_path = work / "gateway.log"
        log_file = open(log_path, "wb")
        env = dict(os.environ)
        env["RUST_LOG"] = "info" if args.access_log else "info,keygate::access=off"
        gateway = subprocess.Popen(
            [str(binary), "run", "--config", str(work / "keygate.toml")],
            stdout=log_file, stderr=subprocess.STDOUT, env=env,
        )
        wait_ready(admin_port, gateway)
        print(
            f"keygate pid {gateway.pid} on :{http_port} (admin :{admin_port}), "
            f"upstream pid {upstream.pid} on :{upstream_port}; "
            f"{args.minutes:g} min, {args.clients} clients, SIGHUP every {args.reload_secs:g} s",
            flush=True,
        )

        stats = Stats()
        counters = {"sent": 0}
        start = time.monotonic()
        stop_at = start + duration
        cases = keys.cases()
        threads = [
            threading.Thread(target=client, args=(http_port, cases, stats, stop_at, i), daemon=True)
            for i in range(args.clients)
        ]
        if args.reload_secs > 0:
            threads.append(
                threading.Thread(
                    target=reloader,
                    args=(gateway.pid, keys_path, keys, stop_at, counters, gateway, args.reload_secs),
                    daemon=True,
                )
            )
        reloads_before = metric(admin_port, 'keygate_reloads_total{result="success"}')
        for t in threads:
            t.start()

        # Sample RSS every 5 s; the baseline is the sample that ends the warm-up.
        samples = []
        baseline = None
        settled = False
        cap = duration / 2
        while time.monotonic() < stop_at - 0.5:
            time.sleep(min(5.0, max(0.0, stop_at - 0.5 - time.monotonic())))
            if gateway.poll() is not None:
                break
            t = time.monotonic() - start
            samples.append((t, rss_bytes(gateway.pid)))
            if baseline is not None:
                continue
            if args.warmup_secs is not None:
                if t >= args.warmup_secs:
                    baseline = len(samples) - 1
                continue
            back = [r for (u, r) in samples if t - u <= 20.0]
            if t >= 15 and t - samples[0][0] >= 20 and samples[-1][1] <= min(back) * 1.01:
                baseline, settled = len(samples) - 1, True
            elif t >= cap:
                baseline = len(samples) - 1
        if baseline is None:
            baseline = 0
        warmup, rss_start = samples[baseline] if samples else (0.0, 0)
        samples = samples[baseline:]
        rss_max = max((r for _, r in samples), default=0)
        for t in threads:
            t.join(timeout=30)
        alive = gateway.poll() is None
        rss_end = rss_bytes(gateway.pid) if alive else 0
        elapsed = time.monotonic() - start

        ok_reloads = fail_reloads = 0.0
        if alive:
            # The last SIGHUP may still be in progress: wait until it is counted.
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                ok_reloads = metric(admin_port, 'keygate_reloads_total{result="success"}') - reloads_before
                fail_reloads = metric(admin_port, 'keygate_reloads_total{result="failure"}')
                if ok_reloads + fail_reloads >= counters["sent"]:
                    break
                time.sleep(0.2)

        log_file.flush()
        log_text = log_path.read_text(errors="replace")
        leaked = [k for k in keys.all_keys() if k in log_text or digest(k)[7:] in log_text]
        panics = log_text.count("panicked")

        lat = sorted(stats.latencies)
        growth = (rss_end - rss_start) / rss_start if rss_start and alive else float("inf")
        print()
        print(f"requests          {stats.total} in {elapsed:.0f} s ({stats.total / elapsed:.0f}/s)")
        print(
            f"latency           p50 {percentile(lat, 50) * 1000:.2f} ms, "
            f"p99 {percentile(lat, 99) * 1000:.2f} ms, max {(lat[-1] if lat else 0) * 1000:.1f} ms"
        )
        print(f"unexpected status {stats.unexpected}")
        print(f"transport errors  {stats.transport_errors}")
        for e in stats.examples:
            print(f"  e.g. {e}")
        print(f"SIGHUPs sent      {counters['sent']}")
        print(f"reloads           {ok_reloads:.0f} succeeded, {fail_reloads:.0f} failed")
        print(
            f"RSS               {rss_start / 2**20:.1f} MiB after a {warmup:.0f} s warm-up"
            f"{'' if settled or args.warmup_secs is not None else ' (not settled: run too short?)'}, "
            f"{rss_end / 2**20:.1f} MiB at the end ({growth * 100:+.1f}%), max {rss_max / 2**20:.1f} MiB"
        )
        print(
            "RSS trace         "
            + " ".join(f"{t:.0f}s:{r / 2**20:.1f}" for t, r in samples[:: max(1, len(samples) // 24)])
        )
        print(f"gateway alive     {alive}; panics in log {panics}; secrets in log {len(leaked)}")
        print("per case (status: count):")
        for name, *_ in cases:
            per = stats.by_case.get(name, {})
            print(f"  {name:34} " + ", ".join(f"{s}: {n}" for s, n in sorted(per.items())))

        missed = []
        if stats.total == 0 and args.clients:
            missed.append("no request was made")
        if stats.unexpected:
            missed.append(f"{stats.unexpected} unexpected statuses")
        if stats.transport_errors:
            missed.append(f"{stats.transport_errors} transport errors")
        if not alive:
            missed.append(f"keygate died (exit {gateway.returncode})")
        if fail_reloads:
            missed.append(f"{fail_reloads:.0f} reloads failed")
        if alive and counters["sent"] and ok_reloads < 1:
            missed.append("no reload was counted")
        if abs(growth) > 0.10:
            missed.append(f"RSS moved {growth * 100:+.1f}% (goal: within 10%)")
        if panics:
            missed.append(f"{panics} panics in the log")
        if leaked:
            missed.append(f"{len(leaked)} keys or hashes in the log")
        if missed:
            print("\nGOALS MISSED: " + "; ".join(missed))
            kept = Path(tempfile.gettempdir()) / f"keygate-soak-{gateway.pid}.log"
            kept.write_text(log_text)
            print(f"gateway log kept at {kept}")
            return 1
        print("\nall goals met")
        return 0
    finally:
        stop(gateway, "keygate")
        stop(upstream, "upstream")
        if log_file:
            log_file.close()
        tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
