"""The Prometheus text format: it parses, its names and labels are valid, its numbers
are the reader's; the loopback server; OTLP's one-line errors; no OpenTelemetry
import when metrics are off."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from functools import partial

import pytest
import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families

from cardmill import Document, LimitKind, MemoryStorage, MissingExtra, RateLimited, Usage
from cardmill.engine import Engine
from cardmill.errors import InputError
from cardmill.metrics import PROMETHEUS_CONTENT_TYPE, otlp_reader, prometheus_text, serve_metrics
from cardmill.testing import ScriptedProvider, Step

from .conftest import Named, Otel

NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


async def _run(otel: Otel, *, model: str = "claude-haiku-4-5") -> None:
    storage = MemoryStorage()
    run = await storage.create_run([Document(f"d{i}.md", b"# d\n\ntext\n") for i in range(3)])
    provider = Named(
        ScriptedProvider(
            {"d0.md": [Step(0.5, error=RateLimited("slow", limit=LimitKind.REQUESTS))]},
            default=Step(
                0.25, usage=Usage(input_tokens=300, output_tokens=70, cache_read_input_tokens=1)
            ),
        ),
        model,
    )
    observer = otel.metrics.observer(provider="anthropic", model=model)
    await Engine(storage, provider, observer=observer).execute(run.id)


async def test_the_text_parses_with_valid_names_and_the_reader_numbers(
    otel: Otel, autojump_clock: trio.testing.MockClock
) -> None:
    await _run(otel)
    text = prometheus_text(otel.reader)
    assert text.endswith("\n")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for family in families.values():
        assert NAME.match(family.name), family.name
        for sample in family.samples:
            assert NAME.match(sample.name), sample.name
            for label in sample.labels:
                assert LABEL.match(label), label
    assert families["cardmill_requests"].type == "counter"
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in families.values()
        for s in f.samples
    }
    base = (
        ("gen_ai_operation_name", "chat"),
        ("gen_ai_provider_name", "anthropic"),
        ("gen_ai_request_model", "claude-haiku-4-5"),
    )
    assert samples[("cardmill_requests_total", base)] == 3
    assert samples[("cardmill_requests_total", (("error_type", "RateLimited"), *base))] == 1
    limit = tuple(sorted((("cardmill_limit", "requests"), *base)))
    assert samples[("cardmill_rate_limited_total", limit)] == 1
    tokens = tuple(sorted((("cardmill_token_type", "input"), *base)))
    assert samples[("cardmill_tokens_total", tokens)] == 900
    assert otel.total("cardmill.cost") > 0
    assert samples[("cardmill_cost_usd_total", base)] == pytest.approx(otel.total("cardmill.cost"))
    # Histograms: cumulative buckets ending in +Inf == _count, and the _sum.
    duration = families["gen_ai_client_operation_duration_seconds"]
    assert duration.type == "histogram"
    buckets = [
        s for s in duration.samples if s.name.endswith("_bucket") and "error_type" not in s.labels
    ]
    counts = [s.value for s in buckets]
    assert counts == sorted(counts)
    assert buckets[-1].labels["le"] == "+Inf"
    assert buckets[-1].value == 3
    assert samples[("gen_ai_client_operation_duration_seconds_sum", base)] == pytest.approx(0.75)
    prompt = tuple(sorted((("gen_ai_token_type", "input"), *base)))
    assert samples[("gen_ai_client_token_usage_sum", prompt)] == 903
    assert families["cardmill_uploads_in_flight"].type == "gauge"
    assert "cardmill_rate_requests_per_second" in families


async def test_hostile_label_values_are_escaped(
    otel: Otel, autojump_clock: trio.testing.MockClock
) -> None:
    model = 'evil"model\\with\nnewline} x="1'
    await _run(otel, model=model)
    text = prometheus_text(otel.reader)
    families = list(text_string_to_metric_families(text))
    models = {s.labels.get("gen_ai_request_model") for f in families for s in f.samples if s.labels}
    assert models == {model}
    for line in text.splitlines():
        assert line.startswith(("# HELP ", "# TYPE ")) or re.match(r"^[a-zA-Z_:][\w:]*[{ ]", line)


def test_an_empty_reader_renders_nothing(otel: Otel) -> None:
    # Instruments exist, nothing was recorded: gauges have no value to give yet.
    text = prometheus_text(otel.reader)
    assert list(text_string_to_metric_families(text)) == []


def test_numbers_render_as_the_format_spells_them() -> None:
    from cardmill.metrics._prometheus import _metric_name
    from cardmill.metrics._prometheus import number as _number

    assert [_number(v) for v in (3, 0.5, math.inf, -math.inf)] == ["3", "0.5", "+Inf", "-Inf"]
    assert _number(math.nan) == "NaN"
    assert _metric_name("a.b-c", "{token}/s") == "a_b_c_per_second"
    assert _metric_name("x.duration", "s") == "x_duration_seconds"
    assert _metric_name("1st", "") == "_1st"


# -- the server ----------------------------------------------------------------------------


async def _get(port: int, request: bytes) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(request)
        data = b""
        try:
            while chunk := await stream.receive_some(65536):
                data += chunk
        except trio.BrokenResourceError:
            pass  # dropped with our request unread: a reset
    return data


async def test_the_server_answers_get_and_head_and_refuses_the_rest() -> None:
    pages = iter(range(100))
    async with trio.open_nursery() as nursery:
        port = await nursery.start(partial(serve_metrics, lambda: f"page {next(pages)}\n", port=0))
        first = await _get(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        head, _, body = first.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK")
        assert f"Content-Type: {PROMETHEUS_CONTENT_TYPE}".encode() in head
        assert body == b"page 0\n"
        # A fresh rendering for every scrape.
        assert (await _get(port, b"GET /metrics?x=1 HTTP/1.0\r\n\r\n")).endswith(b"page 1\n")
        only_head = await _get(port, b"HEAD /metrics HTTP/1.1\r\n\r\n")
        assert only_head.startswith(b"HTTP/1.1 200")
        assert only_head.endswith(b"\r\n\r\n")
        assert (await _get(port, b"GET / HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 404")
        assert (await _get(port, b"POST /metrics HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 405")
        assert (await _get(port, b"nonsense\r\n\r\n")).startswith(b"HTTP/1.1 400")
        # An endless head is dropped, not buffered.
        assert await _get(port, b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 20000) == b""
        nursery.cancel_scope.cancel()


async def test_a_render_that_raises_is_a_500_and_the_server_stays_up() -> None:
    calls = 0

    def render() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        return "ok\n"

    async with trio.open_nursery() as nursery:
        port = await nursery.start(partial(serve_metrics, render, port=0))
        assert (await _get(port, b"GET /metrics HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 500")
        assert (await _get(port, b"GET /metrics HTTP/1.1\r\n\r\n")).endswith(b"ok\n")
        nursery.cancel_scope.cancel()


async def test_a_client_that_sends_nothing_is_dropped_after_the_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(partial(serve_metrics, lambda: "x\n", port=0))
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            t0 = trio.current_time()
            assert await stream.receive_some(100) == b""
            assert trio.current_time() - t0 == pytest.approx(10.0)
        nursery.cancel_scope.cancel()


# -- OTLP ----------------------------------------------------------------------------------


def test_otlp_without_an_endpoint_is_one_line() -> None:
    with pytest.raises(InputError, match="set OTEL_EXPORTER_OTLP_ENDPOINT") as caught:
        otlp_reader({"OTEL_EXPORTER_OTLP_HEADERS": "api-key=secret"})
    assert "\n" not in str(caught.value)
    assert "secret" not in str(caught.value)


def test_otlp_with_an_unknown_protocol_is_one_line() -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_EXPORTER_OTLP_PROTOCOL": "x"}
    with pytest.raises(InputError, match="must be http/protobuf or grpc"):
        otlp_reader(env)


def test_otlp_without_the_exporter_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['opentelemetry.exporter'] = None\n"
        "from cardmill.metrics import otlp_reader\n"
        "from cardmill import MissingExtra\n"
        "try:\n"
        "    otlp_reader({'OTEL_EXPORTER_OTLP_ENDPOINT': 'http://127.0.0.1:4318'})\n"
        "except MissingExtra as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out == "OTLP export needs the otlp extra: pip install 'cardmill[otlp]'\n"


def test_metrics_without_opentelemetry_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['opentelemetry'] = None\n"
        "from cardmill.metrics import EngineMetrics\n"
        "from cardmill import MissingExtra\n"
        "try:\n"
        "    EngineMetrics()\n"
        "except MissingExtra as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out == "metrics needs the metrics extra: pip install 'cardmill[metrics]'\n"


def test_no_opentelemetry_module_is_imported_while_metrics_are_off(tmp_path: object) -> None:
    code = (
        "import sys, trio\n"
        "import cardmill, cardmill.metrics, cardmill.cli\n"
        "from cardmill import Engine, MemoryStorage, Document, ExtractiveProvider\n"
        "async def main():\n"
        "    s = MemoryStorage()\n"
        "    run = await s.create_run([Document('a.md', b'# A\\n\\ntext\\n')])\n"
        "    await Engine(s, ExtractiveProvider()).execute(run.id)\n"
        "trio.run(main)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'opentelemetry'))\n"
        "print('prometheus_client' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env=env,
    ).stdout
    assert out == "[]\nFalse\n"


def test_the_check_above_sees_an_import_when_there_is_one() -> None:
    code = (
        "import sys\n"
        "from cardmill.metrics import EngineMetrics\n"
        "EngineMetrics()\n"
        "print(any(m.split('.')[0] == 'opentelemetry' for m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out == "True\n"


def test_missing_extra_is_exported() -> None:
    assert issubclass(MissingExtra, ImportError)
