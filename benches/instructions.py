#!/usr/bin/env python3
"""Instructions per request, counted by callgrind: keygate against the bare
Pingora proxy (and, with --before, against another keygate build).

A load run (benches/load.py) measures time, and on a shared machine one run
cannot tell a change under about 5% from noise. This counts the user-space
instructions each target executes for a fixed number of requests, which does
not depend on what else the machine is doing. Over one connection (the
default) every request takes the same path through the event loop, and two
runs of the same build agree to about 0.05% (±40 instructions a request):
a change of a hundred instructions shows. More connections let the event
loop batch wake-ups, as under load, and the figure then moves by about 1%
from run to run. It is the
instrument for keygate's own cost; load.py stays the one for req/s, latency
and CPU (the kernel's share, which callgrind does not see, included).

Every target runs under `valgrind --tool=callgrind --instr-atstart=no`,
forwards to the same upstream (nginx, `return 200 "ok"`, keep-alive) and gets
the same requests as load.py's keygate target: the key of a 10,000-key
snapshot, one route, its JSON access log written to a file. After a warm-up
(connections to the upstream pooled, caches filled), instrumentation is turned
on (`callgrind_control -i on`), exactly --requests requests are sent over
--connections keep-alive connections, it is turned off and the counts dumped.
Instructions per request is the dump's total over that count. What every
thread ran is counted: the log's writer and housekeeping included.

Valgrind does not offer the CPU's SHA extensions to the program, so SHA-256
(the key's digest) runs in software under it: about 3,400 instructions a
request that the real CPU, with SHA-NI, does in a fraction of that. The
report prints that share apart and the ratios with and without it.

Targets (--targets, bare always among them): bare and keygate as above;
keygate-shadow, its route in `enforce = "shadow"`; keygate-cluster, with a
`[cluster]` table (sync_ms = 50) on a redis-server of its own (free port,
no persistence). The cluster's syncs run on a timer, so under valgrind,
which serves far fewer requests a second, their share of a request is
larger than at full speed: read that figure as an upper bound.

--top N prints the N functions whose exclusive instructions per request
differ most between keygate and bare (symbol names only; where inlining puts
keygate's code inside Pingora's functions it is counted there).

Usage:  benches/instructions.py [--requests 4000] [--connections 1]
                                [--targets bare,keygate] [--keys 10000]
                                [--before BIN] [--top 0]
                                [--no-build] [--keep DIR]
        About a minute after the build. Loopback only; every process started
        is stopped by its pid; the temp dir is removed unless --keep.

Installs valgrind (and nginx) with apt-get when missing and run as root;
otherwise says what to install. Builds like load.py, under the same cargo
lock.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import http.client
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import load  # noqa: E402  (the targets' set-up is load.py's)

SHA_COMPRESS = "sha2::sha256::compress256"
TARGETS = ["bare", "keygate", "keygate-shadow", "keygate-cluster"]


def ensure_valgrind():
    for tool in ("valgrind", "callgrind_control", "callgrind_annotate"):
        if load.find_tool(tool):
            continue
        if os.geteuid() != 0:
            sys.exit("valgrind is not installed; install it, e.g. "
                     "`sudo apt-get install -y valgrind`")
        load.log("installing valgrind with apt-get")
        load.apt_install("valgrind")
        if not load.find_tool(tool):
            sys.exit(f"{tool}: still missing after apt-get install valgrind")


def send(port, path, key, count, connections):
    """Exactly `count` GETs over `connections` keep-alive connections; every
    answer must be 200."""
    errors = []
    per = [count // connections + (i < count % connections) for i in range(connections)]

    def worker(n):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            for _ in range(n):
                conn.request("GET", path, headers={"Authorization": f"Bearer {key}"})
                r = conn.getresponse()
                r.read()
                if r.status != 200:
                    errors.append(r.status)
                    return
        except OSError as e:
            errors.append(repr(e))
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in per]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"port {port}: {errors[0]} instead of 200")


def callgrind(pid, *args):
    subprocess.run(["callgrind_control", *args, str(pid)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def exclusive(out_file):
    """{function: exclusive instructions} of a callgrind dump."""
    text = subprocess.run(["callgrind_annotate", "--inclusive=no", "--threshold=100",
                           str(out_file)], check=True, capture_output=True, text=True).stdout
    counts = {}
    for line in text.splitlines():
        m = re.match(r"\s*([\d,]+) \([^)]*\)\s+(?:[^:\s]*:)?(.*?)(?: \[[^\]]*\])?$", line)
        if m and "PROGRAM TOTALS" not in line:
            counts[m.group(2)] = counts.get(m.group(2), 0) + int(m.group(1).replace(",", ""))
    return counts


def total(out_file):
    m = re.search(r"^totals: (\d+)", out_file.read_text(), re.M)
    if not m:
        raise SystemExit(f"{out_file}: no totals line")
    return int(m.group(1))


def measure(procs, name, argv, port, ready, path, key, args, tmp, started=None, **kw):
    """Instructions per request of one target, and its per-function counts;
    `started(proc)` runs once it answers `ready`."""
    out = tmp / f"{name}.callgrind"
    vg = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
          f"--callgrind-out-file={out}"]
    p = procs.start(name, vg + argv, **kw)
    try:
        load.wait_status(p, *ready, timeout=120)
        if started is not None:
            started(p)
        send(port, path, key, args.requests // 4, args.connections)
        callgrind(p.pid, "-i", "on")
        send(port, path, key, args.requests, args.connections)
        callgrind(p.pid, "-i", "off")
        callgrind(p.pid, "-d")
        dumps = sorted(tmp.glob(f"{name}.callgrind.*"))
        if not dumps:
            raise SystemExit(f"{name}: callgrind wrote no dump")
        dump = dumps[-1]
        per_fn = {k: v / args.requests for k, v in exclusive(dump).items()}
        return total(dump) / args.requests, per_fn
    finally:
        stop(procs, p)


def stop(procs, p):
    """Stops one process started through `procs`, by its pid."""
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    procs.procs = [(n, q) for n, q in procs.procs if q is not p]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--connections", type=int, default=1)
    ap.add_argument("--keys", type=int, default=10000)
    ap.add_argument("--targets", default="bare,keygate",
                    help="comma-separated, from: " + ", ".join(TARGETS))
    ap.add_argument("--before", type=Path, default=None,
                    help="another keygate binary, measured on the same config")
    ap.add_argument("--top", type=int, default=0,
                    help="print the N functions that differ most, keygate - bare")
    ap.add_argument("--no-build", action="store_true",
                    help="use target/release as it is")
    ap.add_argument("--keep", type=Path, default=None,
                    help="copy the callgrind dumps here")
    args = ap.parse_args()
    if args.requests < 100 or not 1 <= args.connections <= args.requests:
        sys.exit("--requests must be at least 100 and --connections 1..requests")

    targets = [t for t in args.targets.split(",") if t]
    unknown = [t for t in targets if t not in TARGETS]
    if unknown or "bare" not in targets:
        sys.exit(f"--targets: unknown {unknown}" if unknown else "--targets must include bare")
    if args.before is not None:
        targets.append("keygate-before")
        args.before = args.before.resolve()
        if not args.before.is_file():
            sys.exit(f"--before {args.before}: no such file")
    ensure_valgrind()
    nginx = load.find_tool("nginx")
    if not nginx:
        load.ensure_tools()
        nginx = load.find_tool("nginx")
    if args.no_build:
        release = load.ROOT / "target" / "release"
        keygate_bin, bare_bin = release / "keygate", release / "examples" / "bare_proxy"
    else:
        keygate_bin, bare_bin = load.build()

    procs = load.Procs()
    tmp = Path(tempfile.mkdtemp(prefix="keygate-instr-"))
    if os.geteuid() == 0:
        tmp.chmod(0o755)
    try:
        keys = load.write_snapshot(tmp / "keys.json", args.keys)
        _, key, workspace = keys[len(keys) // 2]
        path = f"/api/v1/workspaces/{workspace}/posts/42"
        auth = {"Authorization": f"Bearer {key}"}
        up_port = load.free_port()
        up = load.start_nginx(procs, "upstream", nginx,
                              load.nginx_conf("upstream.conf.in", tmp / "upstream",
                                              PORT=up_port), None)
        load.wait_status(up, up_port, "/", 200)

        results = {}
        port = load.free_port()
        results["bare"] = measure(
            procs, "bare", [str(bare_bin), "--listen", f"127.0.0.1:{port}",
                            "--upstream", f"127.0.0.1:{up_port}"],
            port, (port, path, 200, auth), path, key, args, tmp,
            stdout=subprocess.DEVNULL, stderr=open(tmp / "bare.err", "wb"))
        redis_port = None
        if "keygate-cluster" in targets:
            redis_server = load.find_tool("redis-server")
            if redis_server is None:
                sys.exit("keygate-cluster: redis-server is not installed "
                         "(e.g. `apt-get install redis-server`)")
            _, redis_port = load.start_redis(procs, redis_server, tmp, None)
        for name, binary, enforce in (("keygate", keygate_bin, "on"),
                                      ("keygate-shadow", keygate_bin, "shadow"),
                                      ("keygate-cluster", keygate_bin, "on"),
                                      ("keygate-before", args.before, "on")):
            if name not in targets:
                continue
            d = tmp / name
            d.mkdir()
            shutil.copy(tmp / "keys.json", d / "keys.json")
            port, admin = load.free_port(), load.free_port()
            cluster = None
            if name == "keygate-cluster":
                cluster = (redis_port, f"keygate-instr-{os.getpid()}")
            load.write_keygate_config(d / "keygate.toml", port, admin, up_port,
                                      enforce=enforce, cluster=cluster)
            env = {k: v for k, v in os.environ.items() if not k.startswith("RUST_")}
            env["RUST_LOG"] = "info"
            started = None
            if cluster is not None:
                def started(p, admin=admin):
                    load.wait_cluster_up(p, admin, timeout=120)
            results[name] = measure(
                procs, name, [str(binary), "run", "--config", str(d / "keygate.toml")],
                port, (admin, "/readyz", 200), path, key, args, tmp, started=started,
                cwd=d, env=env, stdout=open(d / "stdout.log", "wb"),
                stderr=open(d / "stderr.log", "wb"))
            lines = load.count_lines(d / "stdout.log")
            # Warm-up, the requests counted, and the start-up probes.
            if lines < args.requests:
                raise SystemExit(f"{name}: {lines} access-log lines for "
                                 f"{args.requests} requests")
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            for f in tmp.glob("*.callgrind.*"):
                shutil.copy(f, args.keep / f.name)
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"instructions per request (callgrind, user space, {args.requests} requests "
          f"over {args.connections} connections)")
    sha = {n: fns.get(SHA_COMPRESS, 0.0) for n, (_, fns) in results.items()}
    for name, (per_req, _) in results.items():
        print(f"  {name:16} {per_req:9,.0f}   of which SHA-256 in software: {sha[name]:6,.0f}")
    base = results["bare"][0]
    for name in TARGETS[1:] + ["keygate-before"]:
        if name in results:
            n = results[name][0]
            print(f"{name} / bare: {n / base:.3f}x ({(n - sha[name]) / base:.3f}x "
                  "without the SHA-256 done in software)")
    if "keygate-before" in results and "keygate" in results:
        a, b = results["keygate"][0], results["keygate-before"][0]
        print(f"keygate / keygate-before: {a / b:.3f}x ({a - b:+,.0f} a request)")
    for name in ("keygate-shadow", "keygate-cluster"):
        if name in results and "keygate" in results:
            a, b = results[name][0], results["keygate"][0]
            print(f"{name} / keygate: {a / b:.3f}x ({a - b:+,.0f} a request)")
    if args.top and "keygate" in results:
        a, b = results["bare"][1], results["keygate"][1]
        rows = sorted(set(a) | set(b), key=lambda k: -abs(b.get(k, 0) - a.get(k, 0)))
        print(f"\nexclusive instructions per request, keygate - bare (top {args.top}):")
        for k in rows[:args.top]:
            print(f"  {b.get(k, 0) - a.get(k, 0):+8,.0f}  {a.get(k, 0):8,.0f} "
                  f"{b.get(k, 0):8,.0f}  {k[:140]}")


if __name__ == "__main__":
    main()
