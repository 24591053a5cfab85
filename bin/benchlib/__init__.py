"""The parts of ``bin/bench`` (SPEC §11): a benchmark, not a test.

- :mod:`benchlib.cli` — the command line, the report on stdout, the JSON file;
- :mod:`benchlib.runner` — one load run: probe, pre-pin, warm up, measure, profile;
- :mod:`benchlib.scenarios` — what is measured (target server, body, sessions, checks);
- :mod:`benchlib.servers` — mock upstreams, Redis, gateways and the passthrough, started
  and stopped with :mod:`devkit`;
- :mod:`benchlib.loadgen` — the load spec and session pre-pinning; :mod:`benchlib.pygen`
  sends it (:mod:`devkit.load`);
- :mod:`benchlib.report` — pure: percentiles, rows, overhead, targets, table and JSON;
- :mod:`benchlib.memory` — memory per pinned session, in Redis and in the memory backend;
- :mod:`benchlib.profile` — ``--profile``: py-spy on the gunicorn workers, text summary;
- :mod:`benchlib.passthrough` — the bare Flask + gunicorn + gevent reference app.

The routing LLM is ``bin/mock_llm.py --route NAME``, the OTLP collector of the traced
scenario another mock (its ``POST /v1/traces`` swallows exports).

Installed into ``.venv`` with :mod:`devkit` (``pyproject.toml``); ``bin/bench`` runs
``python -m benchlib.cli``.
"""
