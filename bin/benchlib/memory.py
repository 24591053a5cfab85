"""Memory per pinned session: in Redis and in the per-process memory backend.

* Redis: a binding stored through the gateway's own ``RedisSessionCache`` under a
  realistic session id, then ``MEMORY USAGE <key> SAMPLES 0`` (target <= 200 bytes). Also
  ``used_memory`` growth per key over many keys, which includes what MEMORY USAGE leaves
  out (the main dict's and the expires dict's entries).
* Memory backend: ``MemorySessionCache`` filled with 1,000,000 sessions named like
  ``demo-session-000123`` (the key strings included: the gateway keeps the header's string)
  in a fresh interpreter, measured twice: tracemalloc's traced-bytes growth, and RSS growth
  without tracemalloc (target <= 400 bytes per session).
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tracemalloc

import psutil

from devkit import ROOT
from devkit.configs import gateway_config

SESSION_FORMAT = "demo-session-{:06d}"
BINDINGS = (("openai/gpt-5.2", "deep_reasoning"), ("openai/gpt-4o-mini", "fast_responses"),
            ("openai/gpt-4o-mini", None))


def _rss_bytes() -> int:
    return psutil.Process().memory_info().rss


def fill_memory_cache(sessions: int, method: str) -> dict:
    """Fill a ``MemorySessionCache`` with ``sessions`` pins; bytes per session by ``method``."""
    from app.session_cache.base import SessionBinding
    from app.session_cache.memory import MemorySessionCache

    cache = MemorySessionCache(max_entries=sessions)
    bindings = [SessionBinding(model, route) for model, route in BINDINGS]
    gc.collect()
    if method == "tracemalloc":
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
    else:
        before = _rss_bytes()
    for index in range(sessions):
        # A new binding object per request, as the gateway makes one per routing decision;
        # the cache interns it.
        model, route = BINDINGS[index % len(BINDINGS)]
        cache.put_if_absent(SESSION_FORMAT.format(index), SessionBinding(model, route), 600)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0] if method == "tracemalloc" else _rss_bytes()
    if method == "tracemalloc":
        tracemalloc.stop()
    assert len(cache) == sessions and cache.get(SESSION_FORMAT.format(0)) in bindings
    return {"method": method, "sessions": sessions, "bytes_total": after - before,
            "bytes_per_session": round((after - before) / sessions, 1)}


def measure_memory_backend(sessions: int = 1_000_000) -> list[dict]:
    """Both measurements, each in a fresh interpreter (so nothing else is in the way)."""
    results = []
    for method in ("tracemalloc", "rss"):
        out = subprocess.run(
            [sys.executable, "-m", "benchlib.memory", "--fill", str(sessions),
             "--method", method], capture_output=True, text=True, cwd=ROOT, timeout=600)
        if out.returncode != 0:
            raise RuntimeError(f"memory backend measurement failed: {out.stderr[-2000:]}")
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return results


def measure_redis(url: str, *, bulk_sessions: int = 100_000) -> dict:
    """MEMORY USAGE of pinned keys written by the gateway's Redis backend; bulk growth.

    Keys use the default layout (``plano:affinity:demo-session-000123``), since the key's
    length is part of what is measured. Only keys this function created are deleted again
    (an existing key, e.g. on a shared ``REDIS_URL`` server, is skipped and left alone).
    """
    import redis

    from app.config import config_from_dict
    from app.session_cache.base import SessionBinding
    from app.session_cache.factory import create_session_cache

    config = config_from_dict(gateway_config(routing={
        "session_ttl_seconds": 600, "session_cache": {"type": "redis", "url": url}}))
    prefix = config.routing.session_cache.key_prefix
    cache = create_session_cache(config.routing)
    admin = redis.Redis.from_url(url)
    try:
        samples = {}
        index = 123
        for model, route in BINDINGS:
            while admin.exists(prefix + SESSION_FORMAT.format(index)):
                index += 1
            session = SESSION_FORMAT.format(index)
            cache.put_if_absent(session, SessionBinding(model, route), 600)
            key = prefix + session
            samples[key] = {"value": admin.get(key).decode(), "ttl": admin.ttl(key),
                            "memory_usage_bytes": admin.memory_usage(key, samples=0)}
            index += 1
        admin.delete(*samples)
        bulk = _redis_bulk(admin, prefix, bulk_sessions,
                           next(iter(samples.values()))["value"].encode())
        version = admin.info("server")["redis_version"]
    finally:
        cache.close()
        admin.close()
    return {"redis_version": version, "keys": samples, "bulk": bulk,
            "max_memory_usage_bytes": max(s["memory_usage_bytes"] for s in samples.values())}


def _redis_bulk(admin, prefix: str, count: int, value: bytes) -> dict:
    """``used_memory`` growth per key for ``count`` keys like the gateway writes them."""
    before = int(admin.info("memory")["used_memory"])
    created = []
    keys = [prefix + SESSION_FORMAT.format(i) for i in range(count)]
    for start in range(0, count, 5000):
        pipe = admin.pipeline(transaction=False)
        batch = keys[start:start + 5000]
        for key in batch:
            pipe.set(key, value, nx=True, ex=600)
        created += [key for key, stored in zip(batch, pipe.execute(), strict=True) if stored]
    after = int(admin.info("memory")["used_memory"])
    for start in range(0, len(created), 5000):
        admin.delete(*created[start:start + 5000])
    return {"sessions": len(created), "used_memory_growth_bytes": after - before,
            "bytes_per_session": round((after - before) / max(len(created), 1), 1)}


def run(redis_url: str, sessions: int = 1_000_000) -> dict:
    """Both measurements, as one JSON-ready document."""
    return {"redis": measure_redis(redis_url), "memory_backend": measure_memory_backend(sessions)}


def report_lines(result: dict) -> list[str]:
    """Human-readable lines for :func:`run`'s result, with the targets."""
    red = result["redis"]
    lines = [f"Redis {red['redis_version']}: MEMORY USAGE per pinned session key "
             f"(target <= 200 bytes):"]
    for key, sample in red["keys"].items():
        lines.append(f"  {key} = {sample['value']} (TTL {sample['ttl']}s): "
                     f"{sample['memory_usage_bytes']} bytes")
    worst = red["max_memory_usage_bytes"]
    lines.append(f"  -> {worst} bytes: {'MET' if worst <= 200 else 'MISSED'}")
    bulk = red["bulk"]
    lines.append(f"  used_memory growth over {bulk['sessions']:,} keys: "
                 f"{bulk['bytes_per_session']} bytes/session (includes dict and expires "
                 "entries, which MEMORY USAGE leaves out)")
    sessions = result["memory_backend"][0]["sessions"]
    lines.append(f"MemorySessionCache per session at {sessions:,} sessions "
                 "(target <= 400 bytes at 1,000,000):")
    for item in result["memory_backend"]:
        verdict = "MET" if item["bytes_per_session"] <= 400 else "MISSED"
        lines.append(f"  {item['method']}: {item['bytes_per_session']} bytes/session "
                     f"({item['bytes_total'] / 2**20:.1f} MiB for {item['sessions']:,}) "
                     f"{verdict}")
    return lines


def main(argv: list[str] | None = None) -> int:
    """``python -m benchlib.memory --fill N --method tracemalloc|rss`` (a child process)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--fill", type=int, required=True)
    parser.add_argument("--method", choices=("tracemalloc", "rss"), required=True)
    args = parser.parse_args(argv)
    print(json.dumps(fill_memory_cache(args.fill, args.method)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
