"""Upstream providers: the OpenAI-compatible HTTP client, the SSE codec, the registry."""
