"""One ``bin/bench`` load run: servers up, each scenario probed, pre-pinned, warmed up and
measured at each concurrency (with the servers' CPU time and Redis commands around the
measured run), optionally profiled; servers stopped as soon as no later scenario needs them.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from benchlib import loadgen, profile, report
from benchlib import scenarios as sc
from benchlib.servers import Servers
from devkit import HOST, ROOT

PROFILE_DIR = ROOT / ".bench"
CEILING_SECONDS = 2.0


class Bench:
    """One run: servers, scenarios, rows."""

    def __init__(self, args: argparse.Namespace, generator, log_dir: Path):
        self.args = args
        self.generator = generator
        self.servers = Servers(args.workers, log_dir, echo=self.echo)
        self.run_id = f"{os.getpid()}-{int(time.time())}"
        self.rows: list[report.Row] = []
        self.prepins: dict[str, dict] = {}
        self.ceiling_rps: float | None = None

    @staticmethod
    def echo(line: str) -> None:
        """Progress output, flushed at once."""
        print(line, flush=True)

    def spec(self, scenario: sc.Scenario, port: int, phase: str) -> loadgen.LoadSpec:
        """The load spec of ``scenario`` against ``port``; ``phase`` keeps ids unique."""
        pool = sc.session_pool(scenario, self.run_id) if scenario.sessions == "pool" else []
        return loadgen.LoadSpec(
            HOST, port, sc.CHAT_PATH, scenario.body, sessions=scenario.sessions, pool=pool,
            unique_prefix=f"bench-{scenario.name}-{self.run_id}-{phase}",
            expect=dict(scenario.expect))

    def run(self) -> None:
        """Every scenario at every concurrency, ``--repeat`` rounds; servers are stopped as
        soon as no later scenario of the round needs them, and at the end of each round."""
        scenario_list = self.args.scenario_list
        for round_index in range(self.args.repeat):
            if self.args.repeat > 1:
                self.echo(f"round {round_index + 1} of {self.args.repeat}")
            for index, scenario in enumerate(scenario_list):
                self.servers.release_except(s.target for s in scenario_list[index:])
                self._scenario(scenario, profile_it=self.args.profile and round_index == 0)
            self.servers.stop_all()
        self._python_ceiling()
        self.servers.stop_all()

    def _scenario(self, scenario: sc.Scenario, profile_it: bool) -> None:
        server = self.servers.get(scenario.target)
        self.echo(f"{scenario.name}: {scenario.description}")
        self._probe(scenario, server.port)
        if scenario.sessions == "pool":
            info = loadgen.prepin(self.spec(scenario, server.port, "prepin"), server.pids())
            self.prepins[scenario.name] = info
            self.echo(f"  pre-pinned {info['of']} sessions in {info['covered']}/"
                      f"{info['workers']} workers; then {info['rounds']} rounds on fresh "
                      f"connections, last {info['pinned']}/{info['of']} pinned")
            if info["covered"] < info["workers"]:
                self.echo("  WARNING: could not reach every worker; a memory-cache "
                          "scenario may show misses")
        for concurrency in self.args.concurrency:
            self.rows.append(self._measure(scenario, server, concurrency))
        if profile_it and server.pids() and scenario.target != sc.MOCK:
            self._profile(scenario, server)

    def _measure(self, scenario: sc.Scenario, server, concurrency: int) -> report.Row:
        """Warm up, then one measured run with the servers' CPU time around it."""
        if self.args.warmup > 0:
            self.generator.run(self.spec(scenario, server.port, f"w{concurrency}"),
                               concurrency, self.args.warmup)
        uses_redis = "redis" in self.servers.NEEDS[scenario.target]
        redis_before = self.servers.redis_commands() if uses_redis else {}
        cpu_before = self.servers.cpu_snapshot()
        result = self.generator.run(self.spec(scenario, server.port, f"m{concurrency}"),
                                    concurrency, self.args.duration)
        cpu_after = self.servers.cpu_snapshot()
        redis_after = self.servers.redis_commands() if uses_redis else {}
        check = "" if result.matched is None else \
            f", {scenario.check} {result.matched}/{result.requests}"
        self.echo(f"  c={concurrency}: {result.rps:.1f} req/s, p50 {result.p50_ms:.2f} ms, "
                  f"p99 {result.p99_ms:.2f} ms, errors {result.error_count}{check}")
        return report.Row(scenario.name, concurrency, result, scenario.description,
                          check=scenario.check, target=server.name,
                          cpu_us_per_request=report.cpu_per_request(cpu_before, cpu_after,
                                                                    result.requests),
                          redis_per_request=report.commands_per_request(
                              redis_before, redis_after, result.requests))

    def _profile(self, scenario: sc.Scenario, server) -> None:
        """One unmeasured run at the top concurrency with py-spy on every worker."""
        py_spy = profile.find_py_spy()
        if py_spy is None:
            self.echo("  --profile: py-spy not found (pip install py-spy into the venv)")
            return
        concurrency = max(self.args.concurrency)
        out_dir = PROFILE_DIR
        for old in out_dir.glob(f"profile-{scenario.name}-*.txt"):
            old.unlink()
        recorders = profile.start(py_spy, server.pids(), self.args.duration, out_dir,
                                  scenario.name)
        result = self.generator.run(self.spec(scenario, server.port, "prof"), concurrency,
                                    self.args.duration)
        files = profile.finish(recorders, timeout=self.args.duration + 30)
        gil = [f for f in files if f.name.endswith(".gil.txt")]
        busy = [f for f in files if f not in gil]
        path = out_dir / f"profile-{scenario.name}.summary.txt"
        path.write_text(
            f"{scenario.name} at c={concurrency} under py-spy: {result.rps:.1f} req/s "
            f"(unmeasured run)\n\n== all busy samples ==\n"
            + "\n".join(profile.summarize(profile.load_stacks(busy)))
            + "\n\n== samples holding the GIL (Python work only) ==\n"
            + "\n".join(profile.summarize(profile.load_stacks(gil))) + "\n")
        self.echo(f"  profiled (c={concurrency}, {result.rps:.0f} req/s under py-spy): "
                  f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")

    def _probe(self, scenario: sc.Scenario, port: int) -> None:
        """One request up front, so a broken target is reported before its numbers."""
        spec = self.spec(scenario, port, "probe")
        session = {"pool": f"bench-probe-{self.run_id}",
                   "unique": f"bench-probe-{scenario.name}-{self.run_id}"}.get(
                       scenario.sessions or "")
        status, headers = loadgen.send_one(spec, session)
        if status != 200:
            self.echo(f"  WARNING: probe request answered HTTP {status}")

    def _python_ceiling(self) -> None:
        """What the Python generator reaches against the mock directly."""
        top = max(self.args.concurrency)
        direct = [r for r in self.rows if r.scenario == "direct" and r.concurrency == top]
        if direct:
            self.ceiling_rps = max(r.result.rps for r in direct)
        else:
            server = self.servers.get(sc.MOCK)
            result = self.generator.run(self.spec(sc.BY_NAME["direct"], server.port, "ceil"),
                                        top, CEILING_SECONDS)
            self.ceiling_rps = result.rps
        self.echo(f"python load generator ceiling (mock directly, c={top}): "
                  f"{self.ceiling_rps:.0f} req/s")
