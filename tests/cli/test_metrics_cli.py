"""--metrics-port serves /metrics while a run works; --otel and bad ports fail in one line."""

from __future__ import annotations

import math
import random
import re
import signal
import socket
import subprocess
from functools import partial
from pathlib import Path

import trio
from prometheus_client.parser import text_string_to_metric_families

from cardmill.testing import FakeAnthropicServer

from .conftest import cardmill_command

KEY = "fake-anthropic-metrics-key-0123456789"


class HoldSecond:
    """A latency for the fake server: the first answer at once, every later one held
    until the request is cancelled; ``held`` is set when the second arrives."""

    def __init__(self) -> None:
        self.calls = 0
        self.held = trio.Event()

    def __call__(self, rng: random.Random) -> float:
        self.calls += 1
        if self.calls == 1:
            return 0.0
        self.held.set()
        return math.inf


async def _scrape(port: int) -> str:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK"), head
    return body.decode()


async def test_metrics_port_answers_while_the_run_works(
    tmp_path: Path, env: dict[str, str]
) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(3):
        (folder / f"d{i}.md").write_text(f"# Doc {i}\n\nSome words about thing {i}.\n")
    hold = HoldSecond()
    async with FakeAnthropicServer(latency=hold, api_key=KEY) as server:
        run_env = {**env, "ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": server.url}
        command = [*cardmill_command(), "analyze", str(folder), "--db", str(tmp_path / "m.db")]
        command += ["--concurrency", "1", "--quiet", "--metrics-port", "0"]
        command += ["--model", "claude-haiku-4-5"]  # a priced model: the cost is counted
        process = await trio.lowlevel.open_process(
            command, env=run_env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL
        )
        try:
            assert process.stderr is not None
            said = b""
            while b"/metrics\n" not in said:
                chunk = await process.stderr.receive_some(4096)
                assert chunk, said
                said += chunk
            found = re.search(rb"metrics at http://127\.0\.0\.1:(\d+)/metrics", said)
            assert found, said
            port = int(found.group(1))
            await hold.held.wait()  # one answered, the next in flight

            text = await _scrape(port)
            samples = {
                (s.name, tuple(sorted(s.labels.items()))): s.value
                for f in text_string_to_metric_families(text)
                for s in f.samples
            }
            model = _labels_of(samples, "cardmill_requests_total")
            assert model["gen_ai_provider_name"] == "anthropic"
            assert model["gen_ai_request_model"] == "claude-haiku-4-5"
            assert _value(samples, "cardmill_requests_total") == 1
            assert _value(samples, "cardmill_uploads_total") == 1
            assert _value(samples, "cardmill_uploads_in_flight") == 1
            assert _value(samples, "cardmill_tokens_total", cardmill_token_type="output") > 0
            assert _value(samples, "cardmill_cost_usd_total") > 0
        finally:
            process.send_signal(signal.SIGINT)
            with trio.fail_after(60):
                await process.wait()
    assert process.returncode == 130
    # The server went with the command.
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0


def _labels_of(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str
) -> dict[str, str]:
    for (sample, labels), _ in samples.items():
        if sample == name:
            return dict(labels)
    raise AssertionError(f"no {name}")


def _value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **where: str
) -> float:
    return sum(
        v
        for (sample, labels), v in samples.items()
        if sample == name and where.items() <= dict(labels).items()
    )


async def _cardmill(
    *args: str, env: dict[str, str], cwd: Path
) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        [*cardmill_command(), *args],
        env=env,
        cwd=cwd,
        check=False,
        capture_stdout=True,
        capture_stderr=True,
    )


async def test_otel_without_an_endpoint_is_one_line_and_makes_no_run(
    tmp_path: Path, env: dict[str, str]
) -> None:
    (tmp_path / "a.md").write_text("# A\n\ntext\n")
    clean = {k: v for k, v in env.items() if not k.startswith("OTEL_")}
    done = await _cardmill("analyze", "a.md", "--otel", env=clean, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.decode() == (
        "cardmill: error: OTLP export needs an endpoint: set OTEL_EXPORTER_OTLP_ENDPOINT "
        "(e.g. http://127.0.0.1:4318)\n"
    )
    assert not await trio.Path(env["CARDMILL_DB"]).exists()


async def test_a_port_in_use_is_one_line(tmp_path: Path, env: dict[str, str]) -> None:
    (tmp_path / "a.md").write_text("# A\n\ntext\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = await _cardmill(
            "analyze", "a.md", "--metrics-port", str(port), env=env, cwd=tmp_path
        )
    assert done.returncode == 2
    message = done.stderr.decode()
    assert message.startswith(f"cardmill: error: --metrics-port {port}: cannot listen on 127.0.0.1")
    assert message.count("\n") == 1
    assert not await trio.Path(env["CARDMILL_DB"]).exists()


async def test_metrics_off_by_default_and_the_run_unchanged_with_them(
    tmp_path: Path, env: dict[str, str]
) -> None:
    (tmp_path / "a.md").write_text("# A\n\nSome text here.\n")
    plain = await _cardmill("analyze", "a.md", "-q", env=env, cwd=tmp_path)
    assert plain.returncode == 0
    assert b"metrics" not in plain.stderr
    served = await _cardmill("analyze", "a.md", "-q", "--metrics-port", "0", env=env, cwd=tmp_path)
    assert served.returncode == 0, served.stderr
    assert re.fullmatch(rb"cardmill: metrics at http://127\.0\.0\.1:\d+/metrics\n", served.stderr)


async def test_otel_exports_the_runs_metrics_to_the_endpoint(
    tmp_path: Path, env: dict[str, str]
) -> None:
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )

    for name in ("a.md", "b.md"):
        (tmp_path / name).write_text(f"# {name}\n\nSome text here.\n")
    received: list[tuple[bytes, bytes]] = []

    async def collector(stream: trio.SocketStream) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
        assert length is not None, head
        while len(body) < int(length.group(1)):
            body += await stream.receive_some(65536)
        received.append((head.split(b" ")[1], body))
        await stream.send_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\n"
            b"Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
        await stream.aclose()

    clean = {k: v for k, v in env.items() if not k.startswith("OTEL_")}
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, collector, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        run_env = {
            **clean,
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
            "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20collector-secret-42",
            # Far beyond the run: only the export when the command ends can carry it.
            "OTEL_METRIC_EXPORT_INTERVAL": "600000",
        }
        done = await _cardmill("analyze", "a.md", "b.md", "-q", "--otel", env=run_env, cwd=tmp_path)
        nursery.cancel_scope.cancel()
    assert done.returncode == 0, done.stderr
    assert b"collector-secret-42" not in done.stdout + done.stderr
    assert received
    assert {path for path, _ in received} == {b"/v1/metrics"}
    uploads: dict[str, int] = {}
    services = set()
    for _, body in received:
        request = ExportMetricsServiceRequest.FromString(body)
        for rm in request.resource_metrics:
            for a in rm.resource.attributes:
                if a.key == "service.name":
                    services.add(a.value.string_value)
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name != "cardmill.uploads":
                        continue
                    for point in metric.sum.data_points:
                        labels = {a.key: a.value.string_value for a in point.attributes}
                        status = labels["cardmill.upload.status"]
                        uploads[status] = max(uploads.get(status, 0), point.as_int)
    assert services == {"cardmill"}
    assert uploads == {"completed": 2}
