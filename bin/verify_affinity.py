#!/usr/bin/env python3
"""verify_affinity: check that X-Model-Affinity keeps every session on one model (SPEC §9).

Usage::

    bin/verify_affinity.py [--url URL]... [--sessions N] [--rounds N] [--json] [--timeout S]

``URL`` is the full chat endpoint. Default: the URL that ``bin/run_demo.sh up`` recorded in
``.run/gateway_url``, else ``http://localhost:12000/v1/chat/completions``. Several ``--url``
are visited round-robin, as a load balancer in front of replicas would.

Phase 1 sends requests without the header (models may vary). Phase 2 sends ``--rounds``
requests (default 6) for each of ``--sessions`` sessions (default 3). A session's first round
asks something one route answers and every later round something the other route answers
(fast first for ``demo-session-001``, deep first for ``-002``, and so on), so a session that is
held by its pin stays on its first model while one that is routed afresh visibly changes
model. Every request goes over a new TCP connection (``Connection: close``): the kernel hands
each one to any gateway process, which is what exposes per-process in-memory pins. With 4
processes a session shows no change only when all its later rounds reach the process that
served its first round: (1/4)^5, about 1 in 1000, at 6 rounds.

Session ids are new on every run (``demo-session-001-<run id>``, the run id random): with the
memory cache each process keeps the pins of earlier runs until their TTL ends, and pins that
happen to agree would hide the per-process maps; a fresh id starts every run from no pin,
with either cache.

Exit status: 0 when every session stayed on one model; 1 when a session changed model; 2 on
request errors (printed) or bad arguments.

Standard library only (``http.client``), so it runs under any Python 3.11+, venv or not.
"""

from __future__ import annotations

import argparse
import http.client
import json
import secrets
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_URL = "http://localhost:12000/v1/chat/completions"
RUN_URL_FILE = Path(__file__).resolve().parent.parent / ".run" / "gateway_url"
AFFINITY_HEADER = "X-Model-Affinity"
REQUEST_MODEL = "openai/gpt-4o-mini"  # what the client asks for; the router decides anyway
RULE = "=" * 60

# Prompts the router sends to different routes (deep_reasoning -> openai/gpt-5.2,
# fast_responses -> openai/gpt-4o-mini, with the embedded router and with the routing LLM).
DEEP_PROMPTS = (
    "Explain quantum entanglement in detail with equations.",
    "Derive the equations of motion for a double pendulum, step by step.",
    "Prove that there are infinitely many primes, with a detailed technical explanation.",
)
FAST_PROMPTS = (
    "Write a short poem about the ocean.",
    "hi",
    "What is the capital of France? Short answer please.",
)
PHASE1_PROMPTS = (FAST_PROMPTS[0], DEEP_PROMPTS[0], FAST_PROMPTS[1])


class RequestFailed(Exception):
    """A request that produced no usable answer (connection error, HTTP error, bad body)."""


@dataclass
class Answer:
    """What one request told us: the model and the gateway's affinity headers."""

    url: str
    prompt: str
    model: str
    pinned: bool
    affinity: str | None
    route: str | None
    worker: str | None


@dataclass
class SessionResult:
    """One session's answers, round by round."""

    session: str
    answers: list[Answer] = field(default_factory=list)

    @property
    def models(self) -> list[str]:
        """Distinct models, in the order first seen."""
        return list(dict.fromkeys(a.model for a in self.answers))

    @property
    def workers(self) -> list[str]:
        """Distinct serving workers (``host:pid``), in the order first seen."""
        return list(dict.fromkeys(a.worker for a in self.answers if a.worker))

    @property
    def passed(self) -> bool:
        return len(self.models) == 1


class Client:
    """Sends chat requests round-robin over ``urls``, one new connection per request."""

    def __init__(self, urls: list[str], timeout: float):
        self.urls = urls
        self.timeout = timeout
        self.sent = 0

    def chat(self, prompt: str, session: str | None = None) -> Answer:
        """POST one chat request to the next URL; raise :class:`RequestFailed` on error."""
        url = self.urls[self.sent % len(self.urls)]
        self.sent += 1
        body = {"model": REQUEST_MODEL, "messages": [{"role": "user", "content": prompt}]}
        headers = {"Content-Type": "application/json", "Connection": "close"}
        if session is not None:
            headers[AFFINITY_HEADER] = session
        status, response_headers, raw = self._request("POST", url, json.dumps(body).encode(),
                                                      headers)
        if status != 200:
            raise RequestFailed(f"{url}: HTTP {status}: {raw[:300].decode('utf-8', 'replace')}")
        try:
            payload = json.loads(raw)
            model = payload["model"]
        except (ValueError, KeyError, TypeError):
            raise RequestFailed(f"{url}: answer without a model: {raw[:300]!r}") from None
        pinned = (response_headers.get("x-plano-pinned") == "true"
                  or payload.get("x_plano_pinned") is True)
        return Answer(url=url, prompt=prompt, model=model, pinned=pinned,
                      affinity=response_headers.get("x-plano-affinity"),
                      route=response_headers.get("x-plano-route"),
                      worker=response_headers.get("x-plano-worker"))

    def health(self) -> dict | None:
        """The first URL's ``/healthz`` JSON (tells the session-cache backend), else None."""
        parts = urlsplit(self.urls[0])
        url = f"{parts.scheme}://{parts.netloc}/healthz"
        try:
            status, _, raw = self._request("GET", url, None, {"Connection": "close"})
            return json.loads(raw) if status == 200 else None
        except (RequestFailed, ValueError):
            return None

    def _request(self, method: str, url: str, body: bytes | None,
                 headers: dict) -> tuple[int, dict, bytes]:
        parts = urlsplit(url)
        kind = (http.client.HTTPSConnection if parts.scheme == "https"
                else http.client.HTTPConnection)
        conn = kind(parts.hostname, parts.port, timeout=self.timeout)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            raw = response.read()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, raw
        except (OSError, http.client.HTTPException) as error:
            raise RequestFailed(f"{url}: {type(error).__name__}: {error}") from None
        finally:
            conn.close()


def session_prompt(session_index: int, round_index: int) -> str:
    """The prompt of one round: the first round's route differs from every later round's.

    Even sessions start with a fast prompt, odd ones with a deep prompt, so pinned sessions
    show both models; the later rounds cycle through the other route's prompts.
    """
    first, later = ((DEEP_PROMPTS, FAST_PROMPTS) if session_index % 2 == 1
                    else (FAST_PROMPTS, DEEP_PROMPTS))
    if round_index == 0:
        return first[(session_index // 2) % len(first)]
    return later[(round_index - 1) % len(later)]


def session_ids(count: int, run_id: str) -> list[str]:
    """This run's session ids: ``demo-session-001-<run_id>``, ..."""
    return [f"demo-session-{n:03d}-{run_id}" for n in range(1, count + 1)]


def round_label(round_number: int, answer: Answer, first_model: str | None) -> str:
    """The walkthrough's tag for a round, told by the gateway's own headers when present."""
    if answer.pinned:
        if first_model is not None and answer.model != first_model:
            return "[PINNED — to another model by this worker's own pin]"
        return "[PINNED]"
    if answer.affinity == "unavailable":
        return "[NOT PINNED — affinity unavailable]"
    if round_number == 1:
        return "[FIRST — sets affinity]"
    if answer.affinity == "new":
        return "[NEW PIN — this worker had no pin for the session]"
    return "[NOT PINNED]"


def worker_note(answer: Answer, several_urls: bool) -> str:
    """`` (worker host:pid via host:port)`` when the gateway names its serving process."""
    parts = []
    if answer.worker:
        parts.append(f"worker {answer.worker}")
    if several_urls:
        parts.append(f"via {urlsplit(answer.url).netloc}")
    return f"  ({' '.join(parts)})" if parts else ""


class Printer:
    """Prints the walkthrough's text, or nothing when ``--json`` is asked for."""

    def __init__(self, quiet: bool):
        self.quiet = quiet

    def __call__(self, text: str = "") -> None:
        if not self.quiet:
            print(text, flush=True)


def run_phase1(client: Client, out: Printer, errors: list[str]) -> list[Answer]:
    """Requests without the affinity header: the router decides every time."""
    out(RULE)
    out("Phase 1: Requests WITHOUT X-Model-Affinity header")
    out("  (model may vary between requests — that is expected)")
    out(RULE)
    answers = []
    several = len(client.urls) > 1
    for number, prompt in enumerate(PHASE1_PROMPTS, start=1):
        try:
            answer = client.chat(prompt)
        except RequestFailed as error:
            errors.append(str(error))
            out(f"  Request {number}: ERROR {error}")
            continue
        answers.append(answer)
        out(f"  Request {number}: model = {answer.model}{worker_note(answer, several)}")
    seen = sorted({a.model for a in answers})
    shown = "{" + ", ".join(repr(m) for m in seen) + "}"
    out(f"  Models seen across {len(answers)} requests: {shown}")
    out()
    return answers


def run_phase2(client: Client, sessions: list[str], rounds: int, out: Printer,
               errors: list[str]) -> list[SessionResult]:
    """Each session's rounds with the header: every round should get the first model."""
    out(RULE)
    out("Phase 2: Requests WITH X-Model-Affinity (session pinning)")
    out("  Each session should be pinned to exactly one model.")
    out(RULE)
    several = len(client.urls) > 1
    results = []
    for s, session in enumerate(sessions):
        result = SessionResult(session)
        out(f"  Session '{result.session}':")
        for r in range(rounds):
            try:
                answer = client.chat(session_prompt(s, r), result.session)
            except RequestFailed as error:
                errors.append(f"{result.session} round {r + 1}: {error}")
                out(f"    Round {r + 1}: ERROR {error}")
                continue
            first_model = result.answers[0].model if result.answers else None
            result.answers.append(answer)
            out(f"    Round {r + 1}: model = {answer.model} "
                f"{round_label(r + 1, answer, first_model)}"
                f"{worker_note(answer, several)}")
        results.append(result)
    out()
    return results


def verdict_lines(results: list[SessionResult], backend: str | None, urls: list[str],
                  errors: list[str]) -> list[str]:
    """The closing explanation: why it passed, or why sessions changed model."""
    failed = [r for r in results if r.answers and not r.passed]
    workers = sorted({w for r in results for w in r.workers})
    where = (f"{len(workers)} workers" if workers else "the serving processes") + (
        f" behind {len(urls)} URLs" if len(urls) > 1 else "")
    lines = []
    if errors:
        lines.append(f"{len(errors)} request(s) failed; the check is incomplete:")
        lines += [f"  {e}" for e in errors[:5]]
        if len(errors) > 5:
            lines.append(f"  ... and {len(errors) - 5} more")
        if not any(r.answers for r in results):
            lines.append("No answer at all: is the gateway running? Start it with "
                         "bin/run_demo.sh up, or pass --url.")
    if failed:
        lines.append(f"{len(failed)} of {len(results)} sessions changed model across requests.")
        if backend == "memory":
            lines += [
                "Why: the gateway uses the in-memory session cache. Each worker process (and",
                "each replica) keeps its own in-memory map, so a session pinned in one worker",
                "is routed from scratch in another, and the new prompt picks another model",
                f"(these requests were served by {where}).",
                "Fix: share the pins in Redis: bin/run_demo.sh down && bin/run_demo.sh up "
                "--cache redis",
            ]
        else:
            lines += [
                f"The session cache is {backend or 'unknown'}; lines tagged 'affinity",
                "unavailable' mean the gateway could not reach it (check its log and Redis).",
            ]
    elif results and not errors:
        lines.append("All sessions were pinned consistently.")
        if backend == "redis":
            lines.append("Redis session cache is working correctly.")
        elif backend == "memory":
            lines.append(
                f"(memory session cache, requests served by {where}: with several workers or "
                "replicas it breaks affinity; use Redis)")
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Check that X-Model-Affinity pins every session to one model.")
    parser.add_argument("--url", action="append", dest="urls", metavar="URL",
                        help="full chat endpoint; repeat for replicas (visited round-robin). "
                             f"Default: .run/gateway_url from bin/run_demo.sh, else {DEFAULT_URL}")
    parser.add_argument("--sessions", type=int, default=3, help="sessions (default 3)")
    parser.add_argument("--rounds", type=int, default=6, help="requests per session (default 6)")
    parser.add_argument("--json", action="store_true", help="print a JSON result instead")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds per request (default 30)")
    args = parser.parse_args(argv)
    if args.sessions < 1 or args.rounds < 2:
        parser.error("--sessions must be >= 1 and --rounds >= 2")
    if args.timeout <= 0:
        parser.error("--timeout must be > 0")
    if not args.urls:
        recorded = RUN_URL_FILE.read_text().strip() if RUN_URL_FILE.is_file() else ""
        args.urls = [recorded or DEFAULT_URL]
    for url in args.urls:
        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
            parser.error(f"not an http(s) URL: {url!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Printer(quiet=args.json)
    client = Client(args.urls, args.timeout)
    errors: list[str] = []

    out(f"Plano endpoint : {', '.join(args.urls)}")
    out(f"Sessions       : {args.sessions}")
    out(f"Rounds/session : {args.rounds}")
    out()
    phase1 = run_phase1(client, out, errors)
    sessions = session_ids(args.sessions, secrets.token_hex(3))
    results = run_phase2(client, sessions, args.rounds, out, errors)
    health = client.health() or {}
    backend = (health.get("session_cache") or {}).get("backend")

    out(RULE)
    out("Results")
    out(RULE)
    for result in results:
        if not result.answers:
            out(f"  ERROR {result.session} -> no answer")
        elif result.passed:
            out(f"  PASS {result.session} -> always routed to '{result.models[0]}'")
        else:
            out(f"  FAIL {result.session} -> saw models {result.models} "
                f"across workers {result.workers or ['(not exposed)']}")
    out()
    lines = verdict_lines(results, backend, args.urls, errors)
    for line in lines:
        out(line)

    passed = bool(results) and all(r.answers and r.passed for r in results)
    status = 2 if errors else (0 if passed else 1)
    if args.json:
        print(json.dumps({
            "endpoints": args.urls, "sessions": args.sessions, "rounds": args.rounds,
            "session_cache": backend, "passed": status == 0, "exit_status": status,
            "phase1": [asdict(a) for a in phase1],
            "results": [{"session": r.session, "passed": r.passed, "models": r.models,
                         "workers": r.workers, "answers": [asdict(a) for a in r.answers]}
                        for r in results],
            "errors": errors, "verdict": lines,
        }, indent=2))
    return status


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
