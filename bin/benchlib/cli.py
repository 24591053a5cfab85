"""``bin/bench``: the benchmark of SPEC §11.

    bin/bench [--duration S] [--warmup S] [--concurrency 1,32] [--workers 2]
              [--scenarios a,b,...] [--json PATH]
              [--repeat N] [--profile]
    bin/bench --memory [--sessions N] [--json PATH]
    bin/bench --streams [--stream-concurrency 100,500,1000,2000] [--workers 2]
    bin/bench --cost [--large] [--workers 2] [--json PATH]

Starts its own mock upstream, Redis (``REDIS_URL`` when set) and gateways (gunicorn, gevent
workers, tracing off), runs each scenario at each concurrency after a warm-up, prints a table
and writes the same numbers as JSON (default ``.bench/results.json``). Everything it started
is stopped by pid at the end, also on Ctrl-C, SIGTERM or an error. ``--repeat N`` runs the
scenario list N times and reports each row's median round (for a busy machine);
``--profile`` samples the gunicorn workers with py-spy (see :mod:`benchlib.profile`).
``--memory`` instead measures memory per pinned session (Redis ``MEMORY USAGE``, memory
backend at 1M sessions). ``--streams`` measures many simultaneous slow streams
(:mod:`benchlib.streams`). ``--cost`` replays agent sessions under four affinity policies
and reports what each costs (:mod:`benchlib.cost`, SPEC §20). Exit status: 0, 1 when a row
is flagged (errors, no responses, failed checks), 2 when a server could not be started (its
logs are kept and named).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from benchlib import memory, pygen, report, streams
from benchlib import scenarios as sc
from benchlib.runner import Bench
from benchlib.servers import ROUTING_MOCK_LATENCY_MS, SERVER_ERRORS, Servers
from devkit import ROOT, processes

DEFAULT_JSON = ROOT / ".bench" / "results.json"
DEFAULT_MEMORY_JSON = ROOT / ".bench" / "memory.json"
DEFAULT_STREAMS_JSON = ROOT / ".bench" / "streams.json"
DEFAULT_COST_JSON = ROOT / ".bench" / "cost.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="bin/bench", description="Benchmark the gateway against its mock upstream, a "
        "bare Flask/gevent passthrough and itself in every session mode (SPEC §11).")
    parser.add_argument("--duration", type=float, default=5.0,
                        help="measured seconds per scenario and concurrency (default 5)")
    parser.add_argument("--warmup", type=float, default=1.0,
                        help="warm-up seconds before each measurement, 0 for none "
                        "(default 1)")
    parser.add_argument("--concurrency", default="1,32",
                        help="comma list of concurrent connections (default 1,32)")
    parser.add_argument("--workers", type=int, default=2,
                        help="gunicorn workers of the gateway and the passthrough (default 2)")
    parser.add_argument("--scenarios", default="",
                        help="comma list; default: every request-path scenario ("
                        f"{','.join(s.name for s in sc.SCENARIOS)}); also "
                        f"{','.join(s.name for s in sc.EXTRA_SCENARIOS)}")
    parser.add_argument("--json", type=Path, default=None,
                        help=f"where to write results (default {DEFAULT_JSON.relative_to(ROOT)};"
                        f" with --memory {DEFAULT_MEMORY_JSON.relative_to(ROOT)})")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds of the whole scenario list; each row reports the "
                        "round with the median req/s (default 1; use 3 on a busy machine)")
    parser.add_argument("--profile", action="store_true",
                        help="after measuring each gunicorn-served scenario, sample its "
                        "workers with py-spy during one more run at the highest concurrency "
                        "(needs py-spy; output under .bench/)")
    parser.add_argument("--memory", action="store_true",
                        help="measure memory per pinned session instead (Redis and memory "
                        "backend)")
    parser.add_argument("--sessions", type=int, default=1_000_000,
                        help="sessions for the memory-backend measurement (default 1000000)")
    parser.add_argument("--failover-cost", action="store_true",
                        help="CPU us per pinned chat request with and without the failover "
                        "attempt chain, in-process (no servers started)")
    parser.add_argument("--requests", type=int, default=2000,
                        help="--failover-cost: requests per round (default 2000)")
    parser.add_argument("--cost", action="store_true",
                        help="replay agent sessions under four affinity policies (none, "
                        "pinned, turn-level, turn-level with a 20%% budget) and report what "
                        "each costs (SPEC §20; about a minute)")
    parser.add_argument("--large", action="store_true",
                        help="--cost: a larger run (more and longer sessions)")
    streams.add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        args.concurrency = sorted({int(c) for c in args.concurrency.split(",") if c.strip()})
    except ValueError:
        parser.error("--concurrency takes a comma list of integers")
    if not args.concurrency or min(args.concurrency) < 1:
        parser.error("--concurrency values must be >= 1")
    if args.duration < 1 or args.warmup < 0 or args.workers < 1 or args.repeat < 1:
        parser.error("--duration must be >= 1, --warmup >= 0, --workers and --repeat >= 1")
    try:
        args.scenario_list = sc.select(args.scenarios)
    except ValueError as error:
        parser.error(str(error))
    return args


def machine_info() -> dict:
    """The machine the numbers come from."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu_model": model, "python": platform.python_version(),
            "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
            "platform": platform.platform(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def _terminate_on_sigterm() -> None:
    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, handler)


def run_memory(args: argparse.Namespace, log_dir: Path) -> int:
    """``--memory``: measure, print, write JSON."""
    servers = Servers(args.workers, log_dir, echo=Bench.echo)
    try:
        url = servers.ensure("redis").url
        print(f"measuring memory per session (Redis at {url}; memory backend with "
              f"{args.sessions:,} sessions in a fresh interpreter)...", flush=True)
        result = memory.run(url, args.sessions)
    finally:
        servers.stop_all()
    for line in memory.report_lines(result):
        print(line)
    path = args.json or DEFAULT_MEMORY_JSON
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report.dumps({"machine": machine_info(), "memory": result}))
    print(f"wrote {path}")
    return 0


def run_streams(args: argparse.Namespace, log_dir: Path) -> int:
    """``--streams``: measure, print the table and targets, write JSON."""
    machine = machine_info()
    print(f"bin/bench --streams on {machine['nproc']} cores ({machine['cpu_model']}), "
          f"{args.workers} gunicorn workers, mock chunk every {args.chunk_delay_ms:g} ms, "
          f"{args.stream_words} words per answer", flush=True)
    doc = streams.run(args, log_dir, echo=Bench.echo)
    machine["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    doc["machine"] = machine
    print()
    for line in streams.table_lines(doc["rows"]):
        print(line)
    print("ttfb = request sent to first body byte; gap = time between body reads of one "
          "stream; RSS = workers' peak RSS growth over C; CPU = workers' CPU over C")
    lines, held = streams.target_lines(doc["rows"], args.workers)
    print("\nstream targets:")
    for line in lines:
        print(line)
    path = args.json or DEFAULT_STREAMS_JSON
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report.dumps(doc))
    print(f"wrote {path}")
    return 0 if held else 1


def run_cost(args: argparse.Namespace, log_dir: Path) -> int:
    """``--cost``: replay the sessions under each policy, print the table, write JSON."""
    from benchlib import cost

    size = cost.LARGE if args.large else cost.SMALL
    machine = machine_info()
    print(f"bin/bench --cost on {machine['nproc']} cores: {size.sessions} agent sessions x "
          f"{size.turns} user turns (tool loops of up to {size.tool_rounds} rounds), "
          f"{size.concurrency} at a time, through gunicorn ({args.workers} workers) + Redis + "
          f"the mock, per policy", flush=True)
    print(f"time is scaled down: the mock's prompt cache and the gateway's warm window are "
          f"{cost.WARM_SECONDS} s (providers: 300 s), idle gaps scale with it", flush=True)
    doc = cost.run(size, log_dir, workers=args.workers,
                   echo=lambda text: print(text, end="", flush=True))
    machine["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    doc["machine"] = machine
    print()
    for line in cost.table_lines(doc["rows"]):
        print(line)
    print("cost = the gateway's own plano_cost_usd_total (shipped genai-prices table); "
          "cache-read = cache-read share of prompt tokens; switches = model changes per "
          "session")
    path = args.json or DEFAULT_COST_JSON
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(cost.dumps(doc))
    print(f"wrote {path}")
    return 1 if any(row["errors"] for row in doc["rows"]) else 0


def run_load(args: argparse.Namespace, log_dir: Path) -> int:
    """The load scenarios: measure, print the table and targets, write JSON."""
    generator = pygen.PythonGenerator()
    machine = machine_info()
    print(f"bin/bench on {machine['nproc']} cores ({machine['cpu_model']}), load generator "
          f"{generator.version()}, {args.workers} gunicorn workers, {args.warmup:g}s warm-up "
          f"+ {args.duration:g}s per run, concurrency {','.join(map(str, args.concurrency))}"
          + (f", {args.repeat} rounds (median)" if args.repeat > 1 else ""),
          flush=True)
    if machine["loadavg_at_start"][0] > 0.5:
        print(f"WARNING: load average {machine['loadavg_at_start'][0]:.2f} before starting: "
              "other work on this machine will make the numbers noisy", flush=True)
    bench = Bench(args, generator, log_dir)
    try:
        bench.run()
    finally:
        bench.servers.stop_all()
    rows = report.derive(report.median_rows(bench.rows), bench.ceiling_rps)
    machine["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    settings = {"duration_s": args.duration, "warmup_s": args.warmup, "repeat": args.repeat,
                "concurrency": args.concurrency, "workers": args.workers,
                "scenarios": [s.name for s in args.scenario_list],
                "tracing": "off (*_traced scenarios: FlaskInstrumentor, 100% sampling to an "
                           "OTLP sink; *_traced_10: 10%)",
                "session_pool": sc.SESSION_POOL_SIZE,
                "routing_mock_latency_ms": ROUTING_MOCK_LATENCY_MS}
    gen_info = {"name": generator.name, "version": generator.version(),
                "ceiling_rps": bench.ceiling_rps}
    doc = report.results_document(rows, machine=machine, settings=settings,
                                  generator=gen_info, extra={"prepin": bench.prepins})
    print_report(rows, max(args.concurrency))
    path = args.json or DEFAULT_JSON
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report.dumps(doc))
    print(f"wrote {path}")
    failed = [row for row in rows if row.failed]
    if failed:
        print(f"bin/bench: {len(failed)} row(s) with errors, no responses or failed checks "
              "(see flags)", file=sys.stderr)
    return 1 if failed else 0


def print_report(rows: list[report.Row], top_concurrency: int) -> None:
    """The table, the targets and the Redis commands per request."""
    print()
    for line in report.table_lines(rows):
        print(line)
    print("overhead = p50 at c=1 minus the direct mock's p50 at c=1; % passthru = req/s "
          "relative to the passthrough at the same concurrency; cpu us/req = CPU time of "
          "the server under test (gunicorn workers) per request")
    print("\nrequest-path targets:")
    for line in report.target_lines(report.targets(rows, top_concurrency)):
        print(line)
    redis_lines = report.redis_lines(rows)
    if redis_lines:
        print("\nRedis commands per request (INFO commandstats around each measured run; "
              "requests in flight at the end add a few %):")
        for line in redis_lines:
            print(line)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``bin/bench``; exit 1 when a row is flagged, 2 when a server failed."""
    args = parse_args(argv)
    if args.failover_cost:
        from benchlib import failover_cost

        return failover_cost.main(args.requests, max(args.repeat, 7))
    _terminate_on_sigterm()
    processes.DIE_WITH_PARENT = True  # a killed bench leaves no servers behind
    log_dir = Path(tempfile.mkdtemp(prefix="plano-bench-"))
    keep_logs = True
    try:
        if args.cost:
            code = run_cost(args, log_dir)
        elif args.streams:
            code = run_streams(args, log_dir)
        else:
            code = run_memory(args, log_dir) if args.memory else run_load(args, log_dir)
        keep_logs = False
        return code
    except SERVER_ERRORS as error:
        print(f"bin/bench: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        keep_logs = False
        print("bin/bench: interrupted; everything it started was stopped", file=sys.stderr)
        return 130
    finally:
        if keep_logs:
            print(f"bin/bench: server logs kept in {log_dir}", file=sys.stderr)
        else:
            shutil.rmtree(log_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
