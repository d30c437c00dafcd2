"""OpenTelemetry traces, off unless OTEL_EXPORTER_OTLP_ENDPOINT is set (or a test hands in an
exporter). One trace per job: its trace id is derived from the job's kind and id, so the spans
of different requests and processes (the client's submit, a miner's lease and result, the
client's read of the answer, the worker's RunPod run) join one trace without passing anything
along. One trace per buyback likewise, with a span per chain RPC call of its runs."""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Iterator
from typing import Any

_tracer: Any = None  # an OpenTelemetry Tracer while tracing is on


def configure(endpoint: str | None, service: str, exporter: Any = None) -> None:
    """exporter: a SpanExporter (tests: InMemorySpanExporter), exported span by span; else
    OTLP over HTTP to endpoint, in batches. Neither: off."""
    global _tracer
    if endpoint is None and exporter is None:
        _tracer = None
        return
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(
            OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces")))
    _tracer = provider.get_tracer("mia")


def enabled() -> bool:
    return _tracer is not None


def _root(kind: str, ident: object) -> Any:
    """A remote parent whose trace id is a hash of (kind, id): the same in every process."""
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    digest = hashlib.blake2b(f"{kind}:{ident}".encode(), digest_size=24).digest()
    parent = SpanContext(trace_id=int.from_bytes(digest[:16], "big") or 1,
                         span_id=int.from_bytes(digest[16:], "big") or 1, is_remote=True,
                         trace_flags=TraceFlags(TraceFlags.SAMPLED))
    return trace.set_span_in_context(NonRecordingSpan(parent))


def record(name: str, kind: str, ident: object, start_ns: int | None = None,
           end_ns: int | None = None, **attributes: Any) -> None:
    """One finished span in the trace of (kind, ident)."""
    if _tracer is None:
        return
    span = _tracer.start_span(name, context=_root(kind, ident), start_time=start_ns,
                              attributes={f"mia.{kind}_id": str(ident), **attributes})
    span.end(end_time=end_ns)


@contextlib.contextmanager
def span(name: str, kind: str | None = None, ident: object = None, **attributes: Any) -> Iterator[None]:
    """A span around a block: in the trace of (kind, ident), or a child of the current one."""
    if _tracer is None:
        yield
        return
    context = _root(kind, ident) if kind is not None else None
    attrs = {f"mia.{kind}_id": str(ident), **attributes} if kind is not None else attributes
    with _tracer.start_as_current_span(name, context=context, attributes=attrs):
        yield


def child(name: str, **attributes: Any) -> Any:
    """A child of the current span, if one is recording (a buyback's chain calls); else none."""
    if _tracer is None:
        return contextlib.nullcontext()
    from opentelemetry import trace

    if not trace.get_current_span().is_recording():
        return contextlib.nullcontext()
    return _tracer.start_as_current_span(name, attributes=attributes)


def now_ns() -> int:
    return time.time_ns()
