"""``bin/bench --streams``: many simultaneous slow streams (SPEC §11).

For each C in ``--stream-concurrency`` (default 100,500,1000,2000) it opens C connections
and sends C streaming chat requests at the same moment (:mod:`devkit.burst`, gevent
on its own sockets), against the mock upstream sending one SSE event every
``--chunk-delay-ms`` (50 ms by default):

1. through the gateway (gunicorn, ``--workers`` gevent workers, Redis session cache): a
   first round of C new sessions, then a second round of the same sessions (pinned);
2. through the bare passthrough (:mod:`benchlib.passthrough`, same gunicorn settings).

Each target is started fresh for each C, so its RSS growth is that of the C streams. Per
round: time to first byte (first body byte) p50/p99, chunk gap (time between body reads of
one stream) p50/p99, RSS growth per open stream (peak of the workers' summed RSS during
the round minus before it, over C), CPU ms per stream (the workers' user+system CPU over
the round, over C), and the count of each ``x-plano-affinity`` value. All load goes to
127.0.0.1, every round is bounded in time. The open-files limit of this process (and so of
the servers it starts) is raised to its hard limit when it is below what C needs.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
import uuid
from collections import Counter
from pathlib import Path

import gevent

from benchlib import report
from benchlib.servers import BenchRedis, bench_config, start_gunicorn, start_passthrough
from devkit import HOST
from devkit.burst import BurstRequest, burst
from devkit.gateway import Gateway
from devkit.processes import cpu_seconds
from devkit.stubs import Stub

DEFAULT_CONCURRENCY = (100, 500, 1000, 2000)
DEFAULT_CHUNK_DELAY_MS = 50.0
DEFAULT_WORDS = 40
WORKER_CONNECTIONS = int(os.environ.get("PLANO_WORKER_CONNECTIONS", "1000"))
#: Unmeasured streams each fresh target serves first (imports, pools, first connections).
WARMUP_STREAMS = 20
ROUND_DEADLINE_S = 180.0
#: Targets: CPU per stream and chunk-gap p99 against the passthrough's, RSS per stream.
CPU_RATIO_TARGET = 1.1
GAP_P99_RATIO_TARGET = 1.5
RSS_KB_TARGET = 60.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--streams`` options of ``bin/bench``."""
    parser.add_argument("--streams", action="store_true",
                        help="measure many simultaneous slow streams instead: gateway "
                        "(new, then pinned sessions, Redis) and passthrough, per C")
    parser.add_argument("--stream-concurrency", default=",".join(map(str, DEFAULT_CONCURRENCY)),
                        help="with --streams: comma list of simultaneous streams "
                        "(default 100,500,1000,2000)")
    parser.add_argument("--chunk-delay-ms", type=float, default=DEFAULT_CHUNK_DELAY_MS,
                        help="with --streams: the mock's delay between SSE events (default 50)")
    parser.add_argument("--stream-words", type=int, default=DEFAULT_WORDS,
                        help="with --streams: words per answer, one SSE event each "
                        "(default 40)")


def raise_open_files_limit(needed: int) -> None:
    """Raise this process's soft RLIMIT_NOFILE towards its hard limit (never system-wide);
    child processes inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def stream_body(words: int) -> dict:
    """A streaming chat body whose mock answer has ``words`` words (one event each)."""
    content = " ".join(f"w{i}" for i in range(words))
    return {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
            "mock_fault": {"content": content}}


def rss_kb(pids: list[int]) -> int:
    """Summed resident set size of ``pids`` in KiB."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    break
        except OSError:
            continue
    return total


def measure_round(server: Gateway, concurrency: int, body: dict,
                  sessions: list[str] | None) -> dict:
    """One burst of ``concurrency`` streams at ``server``; the round's figures."""
    plans = [BurstRequest(body, {"X-Model-Affinity": sessions[i]} if sessions else {})
             for i in range(concurrency)]
    pids = server.pids()
    rss_before = rss_kb(pids)
    peak = [rss_before]
    sampling = [True]

    def sample() -> None:
        while sampling[0]:
            peak[0] = max(peak[0], rss_kb(pids))
            gevent.sleep(0.05)

    sampler = gevent.spawn(sample)
    cpu_before = cpu_seconds(pids)
    started = time.monotonic()
    results = burst(HOST, server.port, "/v1/chat/completions", plans,
                    timeout=60.0, deadline=ROUND_DEADLINE_S)
    wall = time.monotonic() - started
    cpu = cpu_seconds(pids) - cpu_before
    sampling[0] = False
    sampler.join(timeout=1)

    ok = [r for r in results if r.status == 200 and b"[DONE]" in r.body]
    ttfbs = sorted(r.ttfb for r in ok if r.ttfb is not None)
    gaps = sorted(gap for r in ok for gap in r.gaps)
    failures = Counter(r.error or f"HTTP {r.status}" for r in results if r not in ok)
    return {
        "concurrency": concurrency,
        "ok": len(ok),
        "failures": dict(failures),
        "ttfb_p50_ms": _ms(report.percentile(ttfbs, 50)),
        "ttfb_p99_ms": _ms(report.percentile(ttfbs, 99)),
        "gap_p50_ms": _ms(report.percentile(gaps, 50)),
        "gap_p99_ms": _ms(report.percentile(gaps, 99)),
        "rss_kb_per_stream": round((peak[0] - rss_before) / concurrency, 1),
        "rss_kb_before": rss_before,
        "cpu_ms_per_stream": round(cpu * 1000 / concurrency, 3),
        "wall_s": round(wall, 2),
        "affinity": dict(Counter(r.headers.get("x-plano-affinity", "-") for r in results)),
    }


def warm_up(server: Gateway, body: dict, session_prefix: str | None) -> None:
    """A few unmeasured streams (their own sessions), so one-time costs stay out."""
    sessions = ([f"{session_prefix}-{i}" for i in range(WARMUP_STREAMS)]
                if session_prefix else None)
    measure_round(server, WARMUP_STREAMS, body, sessions)


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def run(args: argparse.Namespace, log_dir: Path, echo=print) -> dict:
    """Every C: gateway (new, pinned), passthrough; returns the results document."""
    levels = sorted({int(c) for c in str(args.stream_concurrency).split(",") if c.strip()})
    if not levels or min(levels) < 1 or max(levels) > 5000:
        raise SystemExit("--stream-concurrency takes integers in 1..5000")
    # Client sockets, plus (inherited by the servers) client + upstream + Redis per stream.
    raise_open_files_limit(4 * max(levels) + 1024)
    body = stream_body(args.stream_words)
    run_id = uuid.uuid4().hex[:8]
    started: list = []
    rows: list[dict] = []
    try:
        mock = Stub("--chunk-delay-ms", str(args.chunk_delay_ms), log_dir=log_dir).start()
        started.append(mock)
        redis = BenchRedis()
        started.append(redis)
        for concurrency in levels:
            sessions = [f"streams-{run_id}-{concurrency}-{i}" for i in range(concurrency)]
            config = bench_config(mock.base_url, cache="redis", redis_url=redis.url,
                                  key_prefix="plano:bench:")
            gateway = start_gunicorn(f"streams-gateway-{concurrency}", config, args.workers,
                                     log_dir)
            try:
                warm_up(gateway, body, f"streams-{run_id}-{concurrency}-warmup")
                for round_name in ("new", "pinned"):
                    row = measure_round(gateway, concurrency, body, sessions)
                    row.update(target="gateway", round=round_name)
                    rows.append(row)
                    echo(_progress(row))
            finally:
                gateway.stop()
            passthrough = start_passthrough("passthrough", mock, args.workers, log_dir)
            try:
                warm_up(passthrough, body, None)
                row = measure_round(passthrough, concurrency, body, None)
                row.update(target="passthrough", round="-")
                rows.append(row)
                echo(_progress(row))
            finally:
                passthrough.stop()
    finally:
        for server in reversed(started):
            server.stop()
    return {"rows": rows, "settings": {
        "concurrency": levels, "workers": args.workers, "worker_connections":
        WORKER_CONNECTIONS, "chunk_delay_ms": args.chunk_delay_ms,
        "words": args.stream_words}}


def _progress(row: dict) -> str:
    return (f"  {row['target']:<11} {row['round']:<6} C={row['concurrency']:<5} "
            f"ok={row['ok']} wall={row['wall_s']}s")


def table_lines(rows: list[dict]) -> list[str]:
    """The results table."""
    head = (f"{'target':<11} {'round':<6} {'C':>5} {'ok':>5} {'ttfb p50/p99 ms':>17} "
            f"{'gap p50/p99 ms':>16} {'RSS KB/str':>10} {'CPU ms/str':>10}  affinity")
    lines = [head, "-" * len(head)]
    for row in rows:
        affinity = ", ".join(f"{k}={v}" for k, v in sorted(row["affinity"].items()))
        failed = f"  FAILED {row['failures']}" if row["failures"] else ""
        lines.append(
            f"{row['target']:<11} {row['round']:<6} {row['concurrency']:>5} {row['ok']:>5} "
            f"{row['ttfb_p50_ms']:>8}/{row['ttfb_p99_ms']:<8} "
            f"{row['gap_p50_ms']:>7}/{row['gap_p99_ms']:<8} {row['rss_kb_per_stream']:>10} "
            f"{row['cpu_ms_per_stream']:>10}  {affinity}{failed}")
    return lines


def target_lines(rows: list[dict], workers: int) -> tuple[list[str], bool]:
    """The stream targets, each ``ok``/``MISSED`` with the numbers; and whether all held."""
    lines, all_ok = [], True
    passthrough = {r["concurrency"]: r for r in rows if r["target"] == "passthrough"}
    limit = WORKER_CONNECTIONS * workers

    def check(ok: bool, text: str) -> None:
        nonlocal all_ok
        all_ok = all_ok and ok
        lines.append(f"  [{'ok' if ok else 'MISSED'}] {text}")

    for row in (r for r in rows if r["target"] == "gateway"):
        c = row["concurrency"]
        if c <= limit:
            unavailable = row["affinity"].get("unavailable", 0)
            check(unavailable == 0, f"C={c} {row['round']}: {unavailable} unavailable "
                  f"(target 0 up to {limit})")
        base = passthrough.get(c)
        if base and base["cpu_ms_per_stream"]:
            ratio = row["cpu_ms_per_stream"] / base["cpu_ms_per_stream"]
            check(ratio <= CPU_RATIO_TARGET, f"C={c} {row['round']}: CPU/stream "
                  f"{row['cpu_ms_per_stream']} ms = {ratio:.2f}x passthrough "
                  f"(target <= {CPU_RATIO_TARGET}x)")
        if c == 2000 and base and base["gap_p99_ms"]:
            ratio = row["gap_p99_ms"] / base["gap_p99_ms"]
            check(ratio <= GAP_P99_RATIO_TARGET, f"C={c} {row['round']}: chunk-gap p99 "
                  f"{row['gap_p99_ms']} ms = {ratio:.2f}x passthrough "
                  f"(target <= {GAP_P99_RATIO_TARGET}x)")
        check(row["rss_kb_per_stream"] <= RSS_KB_TARGET, f"C={c} {row['round']}: "
              f"{row['rss_kb_per_stream']} KB RSS per open stream "
              f"(target <= {RSS_KB_TARGET:g})")
    return lines, all_ok
