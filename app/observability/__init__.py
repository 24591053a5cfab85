"""What the gateway tells about itself: ``metrics`` (the :class:`Metrics` seam) and
``prometheus_metrics`` (its Prometheus implementation), ``tracing`` and ``trace_export``
(OpenTelemetry set-up, spans and the OTLP exporter), and ``relay_observers`` (the listeners
on the relay's events: each concern of a provider call in one place)."""
