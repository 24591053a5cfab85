"""What the load generator sends, and the pre-pinning of session pools (``bin/bench``).

:mod:`benchlib.pygen` sends :class:`LoadSpec` and returns a :class:`benchlib.report.LoadResult`:
keep-alive connections (one per unit of concurrency) sending requests back to back for the
duration; latency from sending to the last byte of the answer; responses outside 2xx and
connection failures counted as errors; and the number of responses that carried every
expected header (``spec.expect``), so a scenario can prove it measured what it says.
"""

from __future__ import annotations

import http.client
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterable

import psutil

AFFINITY_HEADER = "X-Model-Affinity"
#: A response slower than this counts as a timeout error.
RESPONSE_TIMEOUT_S = 10


@dataclass
class LoadSpec:
    """What to send: ``sessions`` is ``None``, ``"pool"`` (cycle ``pool``) or ``"unique"``."""

    host: str
    port: int
    path: str
    body: bytes
    sessions: str | None = None
    pool: list = field(default_factory=list)
    unique_prefix: str = "bench"
    expect: dict = field(default_factory=dict)

    def headers(self, session: str | None = None) -> dict:
        """The request headers (``session`` adds the affinity header)."""
        headers = {"Content-Type": "application/json"}
        if session is not None:
            headers[AFFINITY_HEADER] = session
        return headers


# --------------------------------------------------------------------------- pre-pinning


def send_one(spec: LoadSpec, session: str | None, timeout: float = 30.0) -> tuple[int, dict]:
    """One request on a fresh connection; its status and lower-cased headers."""
    conn = http.client.HTTPConnection(spec.host, spec.port, timeout=timeout)
    try:
        conn.request("POST", spec.path, body=spec.body, headers=spec.headers(session))
        response = conn.getresponse()
        response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}
    finally:
        conn.close()


def _send_all(spec: LoadSpec, conn: http.client.HTTPConnection) -> None:
    """Send every pool session over one kept-alive connection."""
    for session in spec.pool:
        conn.request("POST", spec.path, body=spec.body, headers=spec.headers(session))
        conn.getresponse().read()


def connection_owner(client_port: int, server_port: int, pids: Iterable[int]) -> int | None:
    """Which of ``pids`` holds the server side of our loopback connection (psutil).

    ``None`` when it cannot be told (not accepted yet, no permission).
    """
    for pid in pids:
        try:
            connections = psutil.Process(pid).net_connections(kind="tcp")
        except psutil.Error:
            continue
        for conn in connections:
            if conn.laddr and conn.raddr and conn.laddr.port == server_port \
                    and conn.raddr.port == client_port:
                return pid
    return None


def _pin_in_every_worker(spec: LoadSpec, worker_pids: list[int],
                         max_connections: int = 400) -> list[int]:
    """Send the whole pool through a connection owned by each worker; the workers covered.

    gevent workers accept many pending connections per wake-up, so one worker can take
    all of a burst: fresh connections are opened one at a time, their owner looked up,
    until every worker has had one.
    """
    covered: set[int] = set()
    for _ in range(max_connections):
        if covered >= set(worker_pids):
            break
        conn = http.client.HTTPConnection(spec.host, spec.port, timeout=30)
        try:
            conn.request("POST", spec.path, body=spec.body,
                         headers=spec.headers(spec.pool[0]))
            conn.getresponse().read()
            owner = connection_owner(conn.sock.getsockname()[1], spec.port, worker_pids)
            if owner is not None and owner not in covered:
                _send_all(spec, conn)
                covered.add(owner)
        finally:
            conn.close()
    return sorted(covered)


def prepin(spec: LoadSpec, worker_pids: Iterable[int] = (), *, pinned_rounds: int = 2,
           max_rounds: int = 30) -> dict:
    """Pin every session of ``spec.pool`` in every gunicorn worker before measuring.

    The memory backend is per worker, so each worker must see each session: the pool is
    sent through a connection served by each of ``worker_pids``. Then it is sent in rounds,
    each request on a fresh connection, until ``pinned_rounds`` rounds in a row were all
    answered ``x-plano-pinned: true``. Returns ``{"workers", "covered", "rounds",
    "pinned", "of", "statuses"}`` (the last round's figures).
    """
    pids = list(worker_pids)
    covered = _pin_in_every_worker(spec, pids) if pids else []
    streak = rounds = 0
    pinned = 0
    statuses: dict[int, int] = {}
    with ThreadPoolExecutor(8) as pool:
        while streak < pinned_rounds and rounds < max_rounds:
            rounds += 1
            answers = list(pool.map(lambda s: send_one(spec, s), spec.pool))
            statuses = {}
            for status, _ in answers:
                statuses[status] = statuses.get(status, 0) + 1
            pinned = sum(1 for _, headers in answers
                         if headers.get("x-plano-pinned") == "true")
            streak = streak + 1 if pinned == len(spec.pool) else 0
    return {"workers": len(pids), "covered": len(covered), "rounds": rounds,
            "pinned": pinned, "of": len(spec.pool), "statuses": statuses}
