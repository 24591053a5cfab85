"""The OTLP/HTTP span exporter of the gateway: the SDK's, with a cheaper encoder (SPEC §10).

Profiling tracing at 100 % sampling (``bin/bench --profile``) showed the OTLP protobuf
encoding of the finished spans as its largest single cost: the SDK builds a new
``KeyValue``/``AnyValue`` pair for every attribute of every span, about 3 µs each, while
most attribute values repeat from span to span (method, route, host, port, scheme, model,
provider, server address...). :class:`AttributeEncoder` keeps the encoded pair of each
``(key, type, value)`` it has seen, in a bounded map emptied when full (so high-cardinality
values such as session ids or client ports only cost a dictionary miss), and
:class:`CachingOTLPSpanExporter` encodes batches with it. Everything else (endpoint,
headers, compression, timeouts, retries, the size limit) is the SDK exporter's own.

The encoding is byte-for-byte the SDK's (``tests/unit/test_trace_export.py`` compares
them); it reuses the SDK encoder's helpers for everything but the attributes, so it follows
the pinned ``opentelemetry-exporter-otlp-proto-*`` version (1.45.1) and must be re-checked
with it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.common._internal import (
    _encode_instrumentation_scope,
    _encode_key_value,
    _encode_span_id,
    _encode_trace_id,
)
from opentelemetry.exporter.otlp.proto.common._internal.trace_encoder import (
    _SPAN_KIND_MAP,
    _encode_events,
    _encode_links,
    _encode_parent_id,
    _encode_status,
    _encode_trace_state,
    _span_flags,
)
from opentelemetry.exporter.otlp.proto.http._common import (
    RequestPayloadTooLargeError,
    _is_request_too_large,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as PB2Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PB2Span
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.semconv.attributes.http_attributes import HTTP_RESPONSE_STATUS_CODE

_logger = logging.getLogger(__name__)

#: Encoded attributes kept per exporter; emptied when full.
MAX_CACHED_ATTRIBUTES = 4096


class AttributeEncoder:
    """Encodes span attributes as OTLP ``KeyValue``s, reusing those already encoded.

    Keyed by ``(key, type, value)``: ``True``, ``1`` and ``1.0`` are equal in Python but
    encode differently. Unhashable values (lists) are encoded afresh each time. Used by one
    exporter, whose batches are encoded one at a time.
    """

    def __init__(self, max_entries: int = MAX_CACHED_ATTRIBUTES):
        self._max_entries = max_entries
        self._encoded: dict[tuple, Any] = {}

    def encode(self, attributes: Mapping[str, Any] | None) -> list:
        """The encoded ``KeyValue`` list of ``attributes``, in their order."""
        if not attributes:
            return []
        encoded = self._encoded
        result = []
        for key, value in attributes.items():
            cache_key = (key, type(value), value)
            try:
                pair = encoded[cache_key]
            except KeyError:
                pair = self._encode_new(key, value)
                if len(encoded) >= self._max_entries:
                    encoded.clear()
                encoded[cache_key] = pair
            except TypeError:  # an unhashable value (a list): not cached
                pair = self._encode_new(key, value)
            if pair is not None:
                result.append(pair)
        return result

    @staticmethod
    def _encode_new(key: str, value: Any):
        try:
            return _encode_key_value(key, value)
        except Exception as error:  # noqa: BLE001 - the SDK encoder skips such a value too
            _logger.exception("Failed to encode key %s: %s", key, error)
            return None

    def encode_spans(self, spans: Sequence[ReadableSpan]) -> ExportTraceServiceRequest:
        """The export request for ``spans``, grouped by resource and scope as the SDK does."""
        # Grouped by identity first: a worker's spans share one Resource object, whose
        # hash is a JSON dump of its attributes (the SDK hashes it for every span). Equal
        # resources that are distinct objects still end up in one group.
        grouped: dict[Any, dict[Any, list]] = {}
        by_identity: dict[int, dict[Any, list]] = {}
        for span in spans:
            resource = span.resource
            by_scope = by_identity.get(id(resource))
            if by_scope is None:
                by_scope = by_identity[id(resource)] = grouped.setdefault(resource, {})
            by_scope.setdefault(span.instrumentation_scope or None, []).append(
                self._encode_span(span))
        resource_spans = []
        for resource, by_scope in grouped.items():
            scope_spans = [ScopeSpans(scope=_encode_instrumentation_scope(scope), spans=encoded,
                                      schema_url=scope.schema_url if scope else None)
                           for scope, encoded in by_scope.items()]
            resource_spans.append(ResourceSpans(
                resource=PB2Resource(attributes=self.encode(resource.attributes)),
                scope_spans=scope_spans, schema_url=resource.schema_url))
        return ExportTraceServiceRequest(resource_spans=resource_spans)

    def _encode_span(self, span: ReadableSpan) -> PB2Span:
        context = span.get_span_context()
        return PB2Span(
            trace_id=_encode_trace_id(context.trace_id),
            span_id=_encode_span_id(context.span_id),
            trace_state=_encode_trace_state(context.trace_state),
            parent_span_id=_encode_parent_id(span.parent),
            name=span.name,
            kind=_SPAN_KIND_MAP[span.kind],
            start_time_unix_nano=span.start_time,
            end_time_unix_nano=span.end_time,
            attributes=self.encode(span.attributes),
            events=_encode_events(span.events),
            links=_encode_links(span.links),
            status=_encode_status(span.status),
            dropped_attributes_count=span.dropped_attributes,
            dropped_events_count=span.dropped_events,
            dropped_links_count=span.dropped_links,
            flags=_span_flags(span.parent),
        )


class CachingOTLPSpanExporter(OTLPSpanExporter):
    """``OTLPSpanExporter`` whose batches are encoded by an :class:`AttributeEncoder`.

    :meth:`export` is the SDK's (1.45.1) with only the encoding call changed.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._attribute_encoder = AttributeEncoder()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Encode ``spans`` and send them in one OTLP/HTTP request."""
        if self._shutdown:
            _logger.warning("Exporter already shutdown, ignoring batch")
            return SpanExportResult.FAILURE
        with self._metrics.export_operation(len(spans)) as result:
            try:
                data = self._attribute_encoder.encode_spans(spans).SerializePartialToString()
            except Exception as error:  # noqa: BLE001 - as the SDK: a failed batch, no crash
                _logger.error("Failed to encode span batch: %s", error)
                result.error = error
                return SpanExportResult.FAILURE
            if _is_request_too_large(data, self._max_request_size):
                _logger.warning("Dropping span batch: serialized size %d bytes exceeds "
                                "max_request_size %d bytes.", len(data),
                                self._max_request_size)
                result.error = RequestPayloadTooLargeError(
                    f"Serialized span request size {len(data)} bytes exceeds "
                    f"max_request_size {self._max_request_size} bytes.")
                return SpanExportResult.FAILURE
            export_result = self._client.export(data)
            if not export_result.success:
                result.error = export_result.error
                result.error_attrs = (
                    {HTTP_RESPONSE_STATUS_CODE: export_result.status_code}
                    if export_result.status_code is not None else None)
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS
