#!/usr/bin/env python3
"""Load test on loopback: keygate against a bare Pingora proxy and its peers.

Every target forwards to the same upstream (nginx, one worker, `return 200
"ok"`, keep-alive) and is driven by wrk with the same key, path, connection
count and duration, round by round, the order reversed every other round
(bare, keygate, nginx, then nginx, keygate, bare, ...), so drift on a shared
machine and the place in a round hit every target alike.

Targets
  bare           examples/bare_proxy.rs: Pingora forwarding only, 1 thread.
  keygate        keygate, threads = 1, a 10,000-key snapshot, one route with
                 auth = "any", a rate limit never reached, and its JSON access
                 log (stdout) written to a file, as an operator would.
  keygate-nolog  the same with RUST_LOG=warn: the access log's cost.
  keygate-shadow the keygate target with its route in `enforce = "shadow"`: the
                 same checks, a failure told to the upstream instead of answered.
  keygate-cluster the keygate target plus a `[cluster]` table (CONTRACT 7:
                 sync_ms = 50, timeout_ms = 100) on a redis-server this script
                 starts (free port, 127.0.0.1, no persistence, pinned with the
                 upstream); the cost of sharing every bucket through Redis.
                 Skipped with a message when redis-server is not installed.
  keygate-before with --before BIN: another keygate binary (an older build) on
                 the keygate target's config, to compare two builds in one run.
  bare-before    with --bare-before BIN: another bare_proxy binary (e.g. built
                 with another profile), so a build change is measured on the
                 bare proxy too and keygate/bare compared within one run.
  haproxy        HAProxy (Debian's), one thread, key auth the HAProxy way: a
                 10,000-entry map file of key -> key id, 401 on a
                 miss, a stick table per key id with a rate limit never
                 reached, the key id sent upstream, upstream keep-alive, a log
                 line per request to a file. Installed with apt-get when
                 missing (never by CI); skipped with a message if it cannot be.
  nginx          nginx, one worker, key auth the nginx way: a 10,000-entry
                 `map $http_authorization`, 401 without a key, a per-key
                 limit_req never reached, key id sent upstream, upstream
                 keep-alive, an access log to a file.
  pingap         Pingap (a Pingora-based proxy), one thread, key auth the Pingap
                 way (benches/pingap/pingap.toml.in): one upstream, one
                 location, a `limit` plugin keyed by the Authorization header
                 with a limit never reached, the `key_auth` plugin holding the
                 10,000 keys (it compares the whole header value, so each entry
                 is "Bearer <key>"; 401 on a miss; the header is not forwarded),
                 request id and X-Forwarded-* headers sent upstream, upstream
                 keep-alive, a JSON access-log line per request to a file.
                 Pingap has no key ids, so none is sent upstream. Built with
                 `cargo install pingap --version 0.13.1 --locked` into
                 ~/.cache/keygate-bench/pingap when missing (never by CI; the
                 first run takes tens of minutes on 2 cores, bounded; later
                 runs reuse it); skipped with a one-line reason if it cannot
                 be built. 0.13.1 is the newest release whose rust-version
                 (1.88) this toolchain (1.95) meets: 0.15.0 and later ask 1.96.

Before the load every target is checked: the key gets 200, no key and an
unknown key get 401 (bare and keygate-shadow: 200, as they pass everything).

Prints, per target, the median over rounds of req/s, p50, p99 and the CPU the
target used per request (the least noisy figure on a shared machine), then the
ratios keygate/bare, keygate/nginx, keygate/haproxy, keygate/pingap,
keygate-cluster/keygate, ... of those medians, each CPU/req ratio followed by
the lowest and highest of the same ratio taken within each round: a difference
inside that range is not one the run can tell from the machine's noise. Two copies of one binary (`--before`
pointing at the keygate being measured) show how far apart identical builds
land on the machine at hand.

Pinning (the same for every target): by default the target runs on CPU 0 and
wrk, the upstream and redis-server on CPU 1, so on a 2-core machine the load
generator does not compete with the proxy under test; `--pin none` lets the OS
schedule all.

Threads: `--threads N` (default 1) runs every target with N worker threads:
keygate `threads = N`, the bare proxy `--threads N`, nginx `worker_processes
N`, HAProxy `nbthread N`, Pingap `threads = N` (the upstream keeps one
worker). Split pinning then needs N + 1 CPUs (target on CPUs 0..N-1, the rest
on CPU N), so on a 2-core machine `--threads 2` runs unpinned: wrk shares the
cores with the target, req/s is bounded by the whole machine, and CPU per
request is the figure that holds.

Usage:  benches/load.py [--duration 10] [--rounds 3] [--connections 32]
                        [--keys 10000] [--pin split|none] [--threads 1]
                        [--targets ...] [--before BIN] [--bare-before BIN]
        Default run (all 8 targets): about 4.5 minutes after the build.
        Loopback only; every process started is stopped by its pid; the temp
        dir is removed.

Installs nginx and wrk with apt-get when missing and run as root; otherwise
says what to install. Builds `keygate` and `examples/bare_proxy` (release).
Every cargo run it makes (that build, the Pingap install) holds the cargo lock
($KEYGATE_CARGO_LOCK, default /tmp/kg-cargo.lock; flock(1) compatible) unless
a parent process already holds it, e.g. `flock /tmp/kg-cargo.lock
benches/load.py`, which also keeps other builds off the machine while it
measures.
"""

import argparse
import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import string
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from hashlib import sha256
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NGINX_DIR = Path(__file__).resolve().parent / "nginx"
ALNUM = string.ascii_letters + string.digits
WORKSPACES = 100
ALL_TARGETS = ["bare", "keygate", "keygate-nolog", "keygate-shadow", "keygate-cluster",
               "haproxy", "nginx", "pingap"]
HAPROXY_DIR = Path(__file__).resolve().parent / "haproxy"
PINGAP_DIR = Path(__file__).resolve().parent / "pingap"
# The newest Pingap whose rust-version this toolchain (1.95) meets; 0.15.0 and
# later declare 1.96. Installed once into the cache below, outside the repo.
PINGAP_VERSION = "0.13.1"
PINGAP_ROOT = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") \
    / "keygate-bench" / "pingap"
PINGAP_INSTALL_SECS = 3600   # the whole `cargo install`, once the lock is held
CARGO_LOCK = Path(os.environ.get("KEYGATE_CARGO_LOCK", "/tmp/kg-cargo.lock"))
CARGO_LOCK_WAIT_SECS = 1800  # waiting for someone else's build to finish


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Processes: every one started is recorded and stopped by its own pid.


class Procs:
    def __init__(self):
        self.procs = []  # (name, Popen)

    def start(self, name, argv, cpus=None, **kw):
        def pin():
            if cpus is not None:
                os.sched_setaffinity(0, cpus)

        p = subprocess.Popen(argv, preexec_fn=pin, **kw)
        self.procs.append((name, p))
        return p

    def stop_all(self):
        for name, p in reversed(self.procs):
            kids = children_of(p.pid)
            if p.poll() is None:
                try:
                    p.send_signal(signal.SIGTERM)
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    log(f"{name} (pid {p.pid}) ignored SIGTERM; killing it")
                    p.kill()
                    p.wait()
                except ProcessLookupError:
                    pass
            # nginx workers die with their master; make sure of it, by pid.
            for kid in kids:
                try:
                    os.kill(kid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.procs.clear()


def children_of(pid):
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # Field 4 (ppid) comes after the parenthesised command name.
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            kids.append(int(entry))
    return kids


def cpu_seconds(pids):
    """utime + stime of the given processes (all their threads), seconds."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / ticks


# --------------------------------------------------------------------------
# Set-up


def ensure_tools():
    missing = [t for t in ("nginx", "wrk") if not find_tool(t)]
    if not missing:
        return
    if os.geteuid() != 0:
        sys.exit(f"missing: {' '.join(missing)}; install them, e.g. "
                 f"`sudo apt-get install -y {' '.join(missing)}`")
    log(f"installing {' '.join(missing)} with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-qq", *missing]
    if subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=True)
        subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, check=True)
    still = [t for t in missing if not find_tool(t)]
    if still:
        sys.exit(f"still missing after apt-get: {' '.join(still)}")


def ensure_haproxy():
    """The haproxy binary, installing Debian's package when root; None with a
    message when it cannot be had."""
    if found := find_tool("haproxy"):
        return found
    if os.geteuid() != 0:
        log("haproxy: not installed and not root; skipping the haproxy target")
        return None
    log("installing haproxy with apt-get")
    apt_install("haproxy")
    found = find_tool("haproxy")
    if not found:
        log("haproxy: apt-get could not install it; skipping the haproxy target")
    return found


def apt_install(package):
    """apt-get install, with an apt-get update first if that fails; the caller
    checks for the tool afterwards."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-qq", package]
    if subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, stdout=subprocess.DEVNULL)
        subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL)


def find_tool(name):
    return shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/sbin") / name) if p.exists()),
        None,
    )


def lock_holder_is_ancestor(path):
    """Whether a flock(2) lock on `path` is held by this process or one of its
    ancestors (e.g. `flock LOCK benches/load.py`), read from /proc/locks."""
    try:
        st = os.stat(path)
        locks = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return False
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    holders = set()
    for line in locks:
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF"; waiters have "->".
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == dev:
            holders.add(int(fields[4]))
    pid = os.getpid()
    while pid > 1:
        if pid in holders:
            return True
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return False
    return False


@contextlib.contextmanager
def cargo_lock():
    """Hold the machine's cargo lock (the one `flock CARGO_LOCK cargo ...`
    takes) for a cargo run, unless a parent already holds it for us."""
    if lock_holder_is_ancestor(CARGO_LOCK):
        yield
        return
    with open(CARGO_LOCK, "a") as f:
        deadline = time.monotonic() + CARGO_LOCK_WAIT_SECS
        waiting = False
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{CARGO_LOCK} still held after "
                                       f"{CARGO_LOCK_WAIT_SECS} s")
                if not waiting:
                    log(f"waiting for the cargo lock {CARGO_LOCK} (another build)")
                    waiting = True
                time.sleep(1)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure_pingap():
    """The pingap binary, built once with `cargo install` into PINGAP_ROOT
    (under the cargo lock, at nice 10, bounded by PINGAP_INSTALL_SECS); None
    with a one-line reason when it cannot be had."""
    binary = PINGAP_ROOT / "bin" / "pingap"
    if binary.exists():
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True)
        if PINGAP_VERSION in out.stdout:
            return str(binary)
    if not shutil.which("cargo"):
        log("pingap: no cargo to build it with; skipping the pingap target")
        return None
    # etcd-client's build script (a Pingap dependency) compiles .proto files.
    if not find_tool("protoc"):
        if os.geteuid() != 0:
            log("pingap: building it needs protoc (apt-get install protobuf-compiler) and "
                "this is not root; skipping the pingap target")
            return None
        log("pingap: installing protobuf-compiler (protoc, to build it) with apt-get")
        apt_install("protobuf-compiler")
        if not find_tool("protoc"):
            log("pingap: apt-get could not install protobuf-compiler; skipping the "
                "pingap target")
            return None
    PINGAP_ROOT.mkdir(parents=True, exist_ok=True)
    build_dir = PINGAP_ROOT / "build"  # kept on a timeout: the next run resumes
    install_log = PINGAP_ROOT / "install.log"
    argv = ["cargo", "install", "pingap", "--version", PINGAP_VERSION, "--locked",
            "--root", str(PINGAP_ROOT), "--target-dir", str(build_dir)]
    log(f"pingap: building {PINGAP_VERSION} ({' '.join(argv)}, nice 10, at most "
        f"{PINGAP_INSTALL_SECS} s; output in {install_log}); once per machine")
    started = time.monotonic()
    try:
        with cargo_lock(), open(install_log, "wb") as out:
            locked = time.monotonic()
            p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                 start_new_session=True, preexec_fn=lambda: os.nice(10))
            try:
                rc = p.wait(timeout=PINGAP_INSTALL_SECS)
            except subprocess.TimeoutExpired:
                # cargo and its rustc children: the process group started here.
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
                log(f"pingap: cargo install did not finish within {PINGAP_INSTALL_SECS} s; "
                    f"skipping the pingap target (the next run resumes the build)")
                return None
            except BaseException:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
                p.wait()
                raise
    except TimeoutError as e:
        log(f"pingap: {e}; skipping the pingap target")
        return None
    if rc != 0 or not binary.exists():
        text = install_log.read_text(errors="replace")
        errors = [ln for ln in text.splitlines() if ln.startswith("error")]
        reason = errors[0] if errors else f"cargo install exited with {rc}"
        # The build dir is kept: a retry redoes only what failed.
        log(f"pingap: cargo install failed ({reason}); see {install_log}; "
            f"skipping the pingap target")
        return None
    shutil.rmtree(build_dir, ignore_errors=True)
    log(f"pingap: {PINGAP_VERSION} built in {time.monotonic() - locked:.0f} s "
        f"({locked - started:.0f} s waiting for the cargo lock)")
    return str(binary)


def build():
    log("building release binaries (cargo build --release --locked)")
    with cargo_lock():
        subprocess.run(
            ["cargo", "build", "--release", "--locked", "--bin", "keygate",
             "--example", "bare_proxy"],
            cwd=ROOT, check=True,
        )
        meta = subprocess.run(
            ["cargo", "metadata", "--format-version", "1", "--no-deps"],
            cwd=ROOT, check=True, capture_output=True, text=True,
        )
    release = Path(json.loads(meta.stdout)["target_directory"]) / "release"
    return release / "keygate", release / "examples" / "bare_proxy"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def random_key():
    return "ord_" + "".join(secrets.choice(ALNUM) for _ in range(40))


def write_snapshot(path, n):
    """n workspace keys of the production form; returns [(id, key, workspace)]."""
    keys = []
    for i in range(n):
        keys.append((f"key_{i:05d}", random_key(), f"ws_{i % WORKSPACES}"))
    doc = {
        "workspaces": [{"id": f"ws_{w}", "company": f"c{w % 10}"} for w in range(WORKSPACES)],
        "keys": [
            {
                "id": kid,
                "name": f"service {kid}",
                "type": "workspace",
                "company": f"c{int(ws[3:]) % 10}",
                "workspace": ws,
                "scopes": ["read:all", "write:all"],
                "hash": "sha256:" + sha256(key.encode()).hexdigest(),
                "created_at": "2026-01-01T00:00:00Z",
            }
            for kid, key, ws in keys
        ],
    }
    path.write_text(json.dumps(doc))
    return keys


def write_keygate_config(path, port, admin, upstream_port, enforce="on", threads=1,
                         cluster=None):
    """cluster: None, or (redis port, namespace) for a `[cluster]` table."""
    table = "" if cluster is None else f"""
[cluster]                     # CONTRACT 7
redis = "redis://127.0.0.1:{cluster[0]}/0"
namespace = "{cluster[1]}"
sync_ms = 50
timeout_ms = 100
"""
    path.write_text(f"""\
[server]
listen = ["127.0.0.1:{port}"]
threads = {threads}
grace_period_secs = 1

[admin]
listen = "127.0.0.1:{admin}"

[keys]
snapshot = "keys.json"
company_prefix = "ord_c_"
workspace_prefix = "ord_"

[rate_limit]                  # never reached
requests = 1000000000
per_secs = 1
burst = 1000000000

[[upstreams]]
name = "api"
servers = ["127.0.0.1:{upstream_port}"]
connect_timeout_ms = 2000
read_timeout_ms = 30000

[[routes]]
name = "posts"
path = "/api/v1/workspaces/{{workspace}}/posts/**"
upstream = "api"
auth = "any"
scope = "auto"
enforce = "{enforce}"
{table}""")


def nginx_conf(template, out_dir, workers=1, **values):
    text = (NGINX_DIR / template).read_text()
    text, n = re.subn(r"^worker_processes 1;$", f"worker_processes {workers};", text,
                      flags=re.M)
    if n != 1:
        raise SystemExit(f"{template}: no `worker_processes 1;` line to set")
    values = {
        "DIR": str(out_dir),
        "USER": "user root root;" if os.geteuid() == 0 else "",
        **{k: str(v) for k, v in values.items()},
    }
    for k, v in values.items():
        text = text.replace(f"@{k}@", v)
    if "@" in re.sub(r"#.*", "", text):
        raise SystemExit(f"{template}: unfilled placeholder")
    out_dir.mkdir(parents=True, exist_ok=True)
    conf = out_dir / "nginx.conf"
    conf.write_text(text)
    return conf


def start_nginx(procs, name, nginx, conf, cpus):
    d = conf.parent
    return procs.start(
        name, [nginx, "-p", str(d), "-e", str(d / "error.log"), "-c", str(conf)],
        cpus=cpus, stdout=subprocess.DEVNULL, stderr=open(d / "stderr.log", "wb"),
    )


def pingap_conf(out_dir, keys, **values):
    """benches/pingap/pingap.toml.in filled in; keys as key_auth compares them."""
    text = (PINGAP_DIR / "pingap.toml.in").read_text()
    values = {
        "DIR": str(out_dir),
        "KEYS": "\n".join(f'    "Bearer {k}",' for _, k, _ in keys),
        **{k: str(v) for k, v in values.items()},
    }
    for k, v in values.items():
        text = text.replace(f"@{k}@", v)
    if "@" in re.sub(r"#.*", "", text):
        raise SystemExit("pingap.toml.in: unfilled placeholder")
    out_dir.mkdir(parents=True, exist_ok=True)
    conf = out_dir / "pingap.toml"
    conf.write_text(text)
    return conf


def start_redis(procs, redis_server, tmp, cpus):
    """A redis-server of our own: free port, loopback, no persistence."""
    d = tmp / "redis"
    d.mkdir()
    port = free_port()
    p = procs.start("redis", [redis_server, "--port", str(port), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no", "--dir", str(d)],
                    cpus=cpus, stdout=open(d / "redis.log", "wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if p.poll() is not None:
            raise SystemExit(f"redis-server exited with {p.returncode}; see {d / 'redis.log'}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return p, port
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit("redis-server: no PONG within 30 s")


def http_get(port, path, headers=None, timeout=2.0):
    """(status, body) of a GET on loopback; (None, b"") when it fails."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return None, b""


def http_status(port, path, headers=None, timeout=2.0):
    return http_get(port, path, headers, timeout)[0]


def wait_status(proc, port, path, want, headers=None, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"pid {proc.pid} exited with {proc.returncode} while starting")
        if http_status(port, path, headers) == want:
            return
        time.sleep(0.05)
    raise SystemExit(f"port {port}{path}: no {want} within {timeout:.0f} s")


# --------------------------------------------------------------------------
# wrk


def parse_duration_ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        return float("nan")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[m.group(2)]
    return float(m.group(1)) * scale


def parse_wrk(out):
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    total = re.search(r"(\d+) requests in", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    if not (rps and p50 and p99 and total):
        raise SystemExit(f"cannot parse wrk output:\n{out}")
    return {
        "rps": float(rps.group(1)),
        "p50": parse_duration_ms(p50.group(1)),
        "p99": parse_duration_ms(p99.group(1)),
        "requests": int(total.group(1)),
        "bad": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(1).strip() if errors else "",
    }


def run_wrk(procs, args, port, path, key, duration, cpus):
    argv = ["wrk", "-t1", f"-c{args.connections}", f"-d{duration}s", "--latency",
            "-H", f"Authorization: Bearer {key}", f"http://127.0.0.1:{port}{path}"]
    p = procs.start("wrk", argv, cpus=cpus, stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = p.communicate(timeout=duration + 30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        procs.procs = [(n, q) for n, q in procs.procs if q is not p]
    return parse_wrk(out)


# --------------------------------------------------------------------------
# Report


def fmt_ms(v):
    return f"{v * 1000:.0f} us" if v < 1 else f"{v:.2f} ms"


def report(args, results, notes):
    rows = {}
    for name, runs in results.items():
        rows[name] = {
            "busy": statistics.median(r["cpu_us"] * r["rps"] / 1e6 for r in runs),
            "rps": statistics.median(r["rps"] for r in runs),
            "p50": statistics.median(r["p50"] for r in runs),
            "p99": statistics.median(r["p99"] for r in runs),
            "cpu_us": statistics.median(r["cpu_us"] for r in runs),
            "spread": (min(r["rps"] for r in runs), max(r["rps"] for r in runs)),
            "bad": sum(r["bad"] for r in runs),
        }
    print()
    print(f"== {args.rounds} rounds x {args.duration} s, wrk -t1 -c{args.connections}, "
          f"{args.keys} keys, {args.threads} thread(s) per target, pinning: {notes['pin']}")
    print(f"{'target':<15} {'req/s':>9} {'(min..max)':>17} {'p50':>9} {'p99':>9} "
          f"{'CPU/req':>9} {'CPU s/s':>8} {'non-2xx':>8}")
    for name in results:
        r = rows[name]
        lo, hi = r["spread"]
        print(f"{name:<15} {r['rps']:>9.0f} {f'({lo:.0f}..{hi:.0f})':>17} "
              f"{fmt_ms(r['p50']):>9} {fmt_ms(r['p99']):>9} {r['cpu_us']:>6.1f} us "
              f"{r['busy']:>8.2f} {r['bad']:>8}")
    print()

    def ratio(a, b, field):
        if a in rows and b in rows and rows[b][field] > 0:
            return f"{rows[a][field] / rows[b][field]:.2f}x"
        return "-"

    def rounds(a, b, field):
        """The lowest and highest ratio a/b of `field` within one round."""
        each = [x[field] / y[field] for x, y in zip(results[a], results[b]) if y[field] > 0]
        return f"(rounds {min(each):.2f}..{max(each):.2f})" if len(each) > 1 else ""

    def pair(a, b):
        if a in rows and b in rows:
            print(f"{a + '/' + b + ':':<26} req/s {ratio(a, b, 'rps'):>6}  "
                  f"p99 {ratio(a, b, 'p99'):>6}  CPU/req {ratio(a, b, 'cpu_us'):>6} "
                  f"{rounds(a, b, 'cpu_us')}")

    for kg in ("keygate", "keygate-nolog", "keygate-shadow", "keygate-cluster",
               "keygate-before"):
        for peer in ("bare", "nginx", "haproxy", "pingap"):
            pair(kg, peer)
    pair("keygate-cluster", "keygate")
    pair("keygate", "keygate-before")
    pair("keygate-before", "bare-before")
    pair("bare", "bare-before")
    pair("bare", "nginx")
    pair("pingap", "bare")
    print()
    for line in notes["lines"]:
        print(f"note: {line}")


# --------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=10, help="seconds per wrk run (10)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds over all targets (3)")
    ap.add_argument("--connections", type=int, default=32, help="wrk connections (32)")
    ap.add_argument("--keys", type=int, default=10000, help="keys in the snapshot and map")
    ap.add_argument("--warmup", type=int, default=2, help="seconds of warm-up per target")
    ap.add_argument("--threads", type=int, default=1,
                    help="worker threads (processes for nginx) of every target (1); the "
                         "upstream keeps one worker")
    ap.add_argument("--pin", choices=["split", "none"], default=None,
                    help="split (default with THREADS + 1 CPUs or more): the target on CPUs "
                         "0..THREADS-1, wrk, the upstream and redis on CPU THREADS, so the "
                         "target is CPU-bound on its own cores and req/s tracks its cost per "
                         "request; none (default otherwise, e.g. --threads 2 on 2 CPUs): the "
                         "OS schedules everything")
    ap.add_argument("--targets", default=",".join(ALL_TARGETS),
                    help=f"comma-separated subset of {','.join(ALL_TARGETS)}")
    ap.add_argument("--no-build", action="store_true", help="use the binaries already built")
    ap.add_argument("--before", type=Path, default=None,
                    help="another keygate binary, run as target keygate-before")
    ap.add_argument("--bare-before", type=Path, default=None,
                    help="another bare_proxy binary, run as target bare-before")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs)")
    ap.add_argument("--perf", type=Path, default=None, metavar="DIR",
                    help="record a CPU profile of each target's first round into "
                         "DIR/TARGET.data (perf record -e cpu-clock on its pids); read "
                         "with `perf report -i DIR/TARGET.data --no-children --sort symbol`; "
                         "perf's own cost lands in that round's figures")
    args = ap.parse_args()
    if args.perf and not shutil.which("perf"):
        sys.exit("--perf needs perf: apt-get install linux-perf")
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if unknown := set(targets) - set(ALL_TARGETS):
        ap.error(f"unknown targets: {', '.join(sorted(unknown))}")
    if args.threads < 1:
        ap.error("--threads must be at least 1")
    for flag, binary, name, after in (("--before", args.before, "keygate-before", "keygate"),
                                      ("--bare-before", args.bare_before, "bare-before", "bare")):
        if binary is None:
            continue
        if not binary.is_file():
            ap.error(f"{flag} {binary}: no such binary")
        targets.insert(targets.index(after) + 1 if after in targets else 0, name)
    expected = len(targets) * (args.rounds * args.duration + args.warmup)
    if expected > 300:
        log(f"warning: the load alone takes about {expected} s")

    ncpu = os.cpu_count() or 1
    if args.pin is None:
        args.pin = "split" if ncpu >= args.threads + 1 else "none"
    if args.pin == "split" and ncpu < args.threads + 1:
        ap.error(f"--pin split with --threads {args.threads} needs {args.threads + 1} CPUs "
                 f"(this machine has {ncpu}); use --pin none")
    target_cpus = set(range(args.threads)) if args.pin == "split" else None
    load_cpus = {args.threads} if args.pin == "split" else None

    # SIGTERM to this script still runs the finally blocks below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    ensure_tools()
    nginx = find_tool("nginx")
    haproxy = ensure_haproxy() if "haproxy" in targets else None
    if "haproxy" in targets and haproxy is None:
        targets.remove("haproxy")
    redis_server = find_tool("redis-server") if "keygate-cluster" in targets else None
    if "keygate-cluster" in targets and redis_server is None:
        log("keygate-cluster: redis-server is not installed (e.g. `apt-get install "
            "redis-server`); skipping the keygate-cluster target")
        targets.remove("keygate-cluster")
    pingap = ensure_pingap() if "pingap" in targets else None
    if "pingap" in targets and pingap is None:
        targets.remove("pingap")
    if not targets:
        sys.exit("no target left to run")
    if args.no_build:
        release = ROOT / "target" / "release"
        keygate_bin, bare_bin = release / "keygate", release / "examples" / "bare_proxy"
    else:
        keygate_bin, bare_bin = build()

    procs = Procs()
    tmp = Path(tempfile.mkdtemp(prefix="keygate-load-"))
    if os.geteuid() == 0:
        tmp.chmod(0o755)
    try:
        keys = write_snapshot(tmp / "keys.json", args.keys)
        key_id, key, workspace = keys[len(keys) // 2]
        path = f"/api/v1/workspaces/{workspace}/posts/42"
        auth = {"Authorization": f"Bearer {key}"}
        threads = args.threads

        up_port = free_port()
        up = start_nginx(procs, "upstream", nginx,
                         nginx_conf("upstream.conf.in", tmp / "upstream", PORT=up_port),
                         load_cpus)
        wait_status(up, up_port, "/", 200)
        redis = None
        if "keygate-cluster" in targets:
            redis, redis_port = start_redis(procs, redis_server, tmp, load_cpus)

        ports, pids, logs = {}, {}, {}
        for name, binary in (("bare", bare_bin), ("bare-before", args.bare_before)):
            if name not in targets:
                continue
            ports[name] = free_port()
            p = procs.start(name, [str(binary), "--listen", f"127.0.0.1:{ports[name]}",
                                   "--upstream", f"127.0.0.1:{up_port}",
                                   "--threads", str(threads)],
                            cpus=target_cpus, stdout=subprocess.DEVNULL,
                            stderr=open(tmp / f"{name}.err", "wb"))
            wait_status(p, ports[name], path, 200, auth)
            pids[name] = p
        for name, level, enforce, binary in (
            ("keygate", "info", "on", keygate_bin),
            ("keygate-nolog", "warn", "on", keygate_bin),
            ("keygate-shadow", "info", "shadow", keygate_bin),
            ("keygate-cluster", "info", "on", keygate_bin),
            ("keygate-before", "info", None, args.before),
        ):
            if name not in targets:
                continue
            d = tmp / name
            d.mkdir()
            shutil.copy(tmp / "keys.json", d / "keys.json")
            ports[name], admin = free_port(), free_port()
            cluster = None
            if name == "keygate-cluster":
                cluster = (redis_port, f"keygate-load-{secrets.token_hex(4)}")
            write_keygate_config(d / "keygate.toml", ports[name], admin, up_port,
                                 enforce=enforce or "on", threads=threads, cluster=cluster)
            if enforce is None:
                # An older build may not know `enforce`: leave it out.
                text = (d / "keygate.toml").read_text().replace('enforce = "on"\n', "")
                (d / "keygate.toml").write_text(text)
            env = {k: v for k, v in os.environ.items() if not k.startswith("RUST_")}
            env["RUST_LOG"] = level
            logs[name] = d / "stdout.log"
            p = procs.start(name, [str(binary), "run", "--config", str(d / "keygate.toml")],
                            cpus=target_cpus, env=env, stdout=open(logs[name], "wb"),
                            stderr=open(d / "stderr.log", "wb"))
            wait_status(p, admin, "/readyz", 200)
            if cluster is not None:
                wait_cluster_up(p, admin)
            pids[name] = p
        if "haproxy" in targets:
            d = tmp / "haproxy"
            d.mkdir()
            with open(d / "keys.map", "w") as f:
                for kid, k, _ in keys:
                    f.write(f"{k} {kid}\n")
            ports["haproxy"] = free_port()
            text = (HAPROXY_DIR / "keyauth.cfg.in").read_text()
            text, n = re.subn(r"^(\s*)nbthread 1$", rf"\g<1>nbthread {threads}", text,
                              flags=re.M)
            if n != 1:
                raise SystemExit("keyauth.cfg.in: no `nbthread 1` line to set")
            for k, v in {"DIR": str(d), "PORT": ports["haproxy"], "UPSTREAM_PORT": up_port,
                         "RATE": 1000000}.items():
                text = text.replace(f"@{k}@", str(v))
            (d / "haproxy.cfg").write_text(text)
            logs["haproxy"] = d / "access.log"
            p = procs.start("haproxy", [haproxy, "-db", "-f", str(d / "haproxy.cfg")],
                            cpus=target_cpus, stdout=open(logs["haproxy"], "wb"),
                            stderr=open(d / "stderr.log", "wb"))
            wait_status(p, ports["haproxy"], path, 200, auth)
            pids["haproxy"] = p
        if "nginx" in targets:
            d = tmp / "nginx"
            d.mkdir()
            with open(d / "keys.map", "w") as f:
                for kid, k, _ in keys:
                    f.write(f'"Bearer {k}" {kid};\n')
            ports["nginx"] = free_port()
            conf = nginx_conf("keyauth.conf.in", d, workers=threads, PORT=ports["nginx"],
                              UPSTREAM_PORT=up_port, RATE=1000000)
            p = start_nginx(procs, "nginx", nginx, conf, target_cpus)
            wait_status(p, ports["nginx"], path, 200, auth)
            pids["nginx"] = p
            logs["nginx"] = d / "access.log"
        if "pingap" in targets:
            d = tmp / "pingap"
            ports["pingap"] = free_port()
            conf = pingap_conf(d, keys, PORT=ports["pingap"], UPSTREAM_PORT=up_port,
                               THREADS=threads, RATE=1000000)
            logs["pingap"] = d / "access.log"
            p = procs.start("pingap", [pingap, "-c", str(conf)],
                            cpus=target_cpus, stdout=open(d / "stdout.log", "wb"),
                            stderr=open(d / "stderr.log", "wb"))
            wait_status(p, ports["pingap"], path, 200, auth)
            pids["pingap"] = p

        # Each target: the valid key is 200 (checked above); no key and an
        # unknown key are 401 (bare and a shadow route: 200 anyway).
        unknown = {"Authorization": f"Bearer {random_key()}"}
        for name in targets:
            want = 200 if name in ("bare", "bare-before", "keygate-shadow") else 401
            for what, headers in (("no key", None), ("an unknown key", unknown)):
                got = http_status(ports[name], path, headers)
                if got != want:
                    raise SystemExit(f"{name}: {what} gave {got}, expected {want}")
            got = http_status(ports[name], path, auth)
            if got != 200:
                raise SystemExit(f"{name}: the key gave {got}, expected 200")

        for name in targets:
            if args.warmup > 0:
                run_wrk(procs, args, ports[name], path, key, args.warmup, load_cpus)
        lines_before = {n: count_lines(f) for n, f in logs.items()}

        results = {name: [] for name in targets}
        redis_cpu = 0.0
        for rnd in range(args.rounds):
            for name in (targets if rnd % 2 == 0 else targets[::-1]):
                proc = pids[name]
                group = [proc.pid, *children_of(proc.pid)]
                cpu0 = cpu_seconds(group)
                redis0 = cpu_seconds([redis.pid]) if name == "keygate-cluster" else 0.0
                recorder = None
                if args.perf and rnd == 0:
                    args.perf.mkdir(parents=True, exist_ok=True)
                    recorder = procs.start("perf", [
                        "perf", "record", "-q", "-e", "cpu-clock", "-F", "2999",
                        "-p", ",".join(str(p) for p in group),
                        "-o", str(args.perf / f"{name}.data")],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                r = run_wrk(procs, args, ports[name], path, key, args.duration, load_cpus)
                if recorder:
                    recorder.send_signal(signal.SIGINT)
                    recorder.wait(timeout=60)
                used = cpu_seconds(group) - cpu0
                if name == "keygate-cluster":
                    redis_cpu += cpu_seconds([redis.pid]) - redis0
                r["cpu_us"] = used / max(r["requests"], 1) * 1e6
                results[name].append(r)
                log(f"round {rnd + 1}/{args.rounds} {name:<15} {r['rps']:>9.0f} req/s  "
                    f"p50 {fmt_ms(r['p50'])}  p99 {fmt_ms(r['p99'])}  "
                    f"CPU {r['cpu_us']:.1f} us/req"
                    + (f"  non-2xx {r['bad']}" if r["bad"] else "")
                    + (f"  socket errors: {r['socket_errors']}" if r["socket_errors"] else ""))

        notes = {"pin": "", "lines": []}
        if args.pin == "none":
            notes["pin"] = "none"
            if threads > 1:
                notes["lines"].append(
                    f"--threads {threads} on {ncpu} CPUs, nothing pinned: wrk (and the upstream) "
                    f"share the cores with the target's {threads} threads, so req/s is what "
                    f"the whole machine does and compresses differences between targets; "
                    f"CPU per request is the figure that holds")
            else:
                notes["lines"].append(
                    f"nothing pinned: wrk, the upstream nginx and the target share the machine's "
                    f"{ncpu} CPUs; wrk and the upstream take a fixed share per request, which "
                    f"compresses differences between targets (CPU/req does not)")
        else:
            cpus = "CPU 0" if threads == 1 else f"CPUs 0-{threads - 1}"
            notes["pin"] = f"split (target: {cpus}; wrk + upstream + redis: CPU {threads})"
            notes["lines"].append(
                f"the target has {cpus} to itself (all its threads); wrk and the upstream "
                f"share CPU {threads}. A target using ~{threads} CPU s/s is bound by its own "
                f"cost: req/s ~ {threads}/(CPU/req). Far below that, CPU {threads} (wrk + "
                f"upstream) or other load on the machine was the limit")
        notes["lines"].append("CPU/req = user+sys CPU of the target's processes (all threads, "
                              "nginx master+workers) over the requests wrk completed; CPU s/s = "
                              "CPU seconds the target used per second of load")
        if "keygate-cluster" in results:
            total = sum(r["requests"] for r in results["keygate-cluster"])
            notes["lines"].append(
                f"keygate-cluster: redis-server used {redis_cpu / max(total, 1) * 1e6:.2f} us "
                f"CPU per request on top (not in CPU/req), {redis_cpu:.2f} s over the "
                f"measured runs")
        if "pingap" in results:
            notes["lines"].append(
                "pingap: key_auth checks a key by comparing it with every configured key in "
                "turn, so its cost grows with the number of keys; the key used is in the "
                "middle of the list (a uniformly drawn key's average position)")
        for name, f in logs.items():
            n = count_lines(f) - lines_before.get(name, 0)
            size = f.stat().st_size if f.exists() else 0
            total = sum(r["requests"] for r in results.get(name, []))
            if total:
                what = "stdout (RUST_LOG=warn)" if name == "keygate-nolog" else "access log"
                notes["lines"].append(
                    f"{name} {what}: {n} lines during {total} measured requests, "
                    f"{size / max(count_lines(f), 1):.0f} bytes/line")
        notes["lines"].append(f"load average at the end: {os.getloadavg()[0]:.2f} (others' work "
                              f"on this machine shows here and in the min..max spread)")
        report(args, results, notes)
    finally:
        procs.stop_all()
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def wait_cluster_up(proc, admin, timeout=30.0):
    """/readyz says `"cluster":{"up":true}` once the instance has synced with
    Redis: measure from there, not while it is still connecting."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"pid {proc.pid} exited with {proc.returncode} while starting")
        status, body = http_get(admin, "/readyz")
        try:
            if status == 200 and json.loads(body).get("cluster", {}).get("up") is True:
                return
        except ValueError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"keygate-cluster: cluster not up within {timeout:.0f} s")


def count_lines(path):
    try:
        with open(path, "rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    except OSError:
        return 0


if __name__ == "__main__":
    main()
