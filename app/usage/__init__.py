"""Prompt caching and what a session costs (SPEC §19), kept out of the relay.

* :mod:`app.usage.tokens` reads usage from upstream answers (JSON and streams);
* :mod:`app.usage.prices` prices it from the shipped genai-prices table and overrides;
* :mod:`app.usage.hints` adds cache hints to upstream bodies (breakpoints, cache keys);
* :mod:`app.usage.meter` is the per-call observer the relay feeds;
* :mod:`app.usage.recorder` turns a call's usage into metrics, span attributes, log
  fields and per-session totals.
"""
