"""The card-analysis phase of a product: a small Starlette app on asyncio over `cardmill.aio`.

Upload documents, watch each upload go PENDING → LOADING → COMPLETED or FAILED, read the
cards. Two modes:

* ``inprocess`` (the default): each run is analysed by ``cardmill.aio.resume`` in a
  background task of this process; unfinished runs are resumed when the app starts.
* ``enqueue``: the app only stores runs; ``cardmill worker --follow --db DB`` processes
  analyse them from the same SQLite file or PostgreSQL database.

Run it with ``python examples/webapp/app.py --db cards.db``; docs/webapp.md describes it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import json
import logging
import os
import signal
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pages
from hypercorn.asyncio import serve
from hypercorn.config import Config
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

import cardmill
import cardmill.aio
from cardmill.errors import CardmillError, InputError, RunNotFound

__all__ = ["MAX_BODY", "MODES", "create_app", "main"]

MODES = ("inprocess", "enqueue")
MAX_BODY = 20 * 1024 * 1024
"""The largest ``POST /runs`` body, in bytes (documents are sent base64-encoded in it)."""
HERE = Path(__file__).resolve().parent
# Every dynamic string is put on the pages by their script, with textContent.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
log = logging.getLogger("webapp")


class BadRequest(Exception):
    """A request the app refuses: its status code and a one-line reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class Analyses:
    """The runs this process analyses, each in a background task, cancelled at shutdown."""

    def __init__(self, db: str, concurrency: int, provider: cardmill.aio.ProviderChoice) -> None:
        self.db, self.concurrency, self.provider = db, concurrency, provider
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._closing = False

    def start(self, run_id: str) -> None:
        if self._closing or run_id in self._tasks:
            return
        task = asyncio.create_task(self._analyse(run_id), name=f"cardmill run {run_id}")
        self._tasks[run_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(run_id, None))

    async def _analyse(self, run_id: str) -> None:
        try:
            summary = await cardmill.aio.resume(
                run_id, db=self.db, concurrency=self.concurrency, provider=self.provider
            )
        except CardmillError as exc:  # one run's failure is not the app's
            log.error("run %s stopped: %s", run_id, exc)
            return
        run = summary.run
        log.info("run %s: %s, %d cards", run_id, run.status.name, run.total_cards)

    async def close(self) -> None:
        """Cancel every run in flight; each is then CANCELLED, its uploads PENDING."""
        self._closing = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def create_app(
    db: str,
    *,
    mode: str = "inprocess",
    concurrency: int = 2,
    provider: cardmill.aio.ProviderChoice = None,
    poll: float = 0.5,
    max_body: int = MAX_BODY,
) -> Starlette:
    """The web app over the database ``db`` (a SQLite path or a PostgreSQL URL).

    Args:
        db: where runs are stored, as ``cardmill --db`` takes it.
        mode: ``"inprocess"`` (analyse runs here) or ``"enqueue"`` (only store them).
        concurrency: uploads analysed at once per run, in process.
        provider: None for the CLI's choice (Claude with ``ANTHROPIC_API_KEY``, else
            offline extractive), a provider's name, or a `cardmill.Provider` of yours.
        poll: seconds between reads of a run's progress for its event stream.
        max_body: the largest upload request, in bytes.
    """
    if mode not in MODES:
        raise InputError(f"mode: {mode!r} is not one of {', '.join(MODES)}")
    analyses = Analyses(db, concurrency, provider) if mode == "inprocess" else None
    # Set when the server is told to stop: open event streams end then, cleanly.
    stopping = asyncio.Event()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if analyses is not None:
            for run in await cardmill.aio.list_runs(db=db):
                if not run.status.finished:  # a run this server (or another) left off
                    analyses.start(run.id)
        try:
            yield
        finally:
            if analyses is not None:
                await analyses.close()

    async def known(request: Request) -> str:
        """The id the path names, if a run has it; raises RunNotFound."""
        run_id: str = request.path_params["id"]
        return (await cardmill.aio.get_run(run_id, db=db)).id

    async def index(request: Request) -> Response:
        return HTMLResponse(pages.INDEX, headers=SECURITY_HEADERS)

    async def runs(request: Request) -> Response:
        found = await cardmill.aio.list_runs(db=db)
        return JSONResponse([_run_json(run) for run in found])

    async def create(request: Request) -> Response:
        name, documents = _documents(await _body(request, max_body))
        run = await cardmill.aio.create_run(documents, db=db, name=name, provider=provider)
        if analyses is not None:
            analyses.start(run.id)
        return JSONResponse({"run_id": run.id}, status_code=201)

    async def show(request: Request) -> Response:
        now = await cardmill.aio.progress(await known(request), db=db)
        return JSONResponse(_progress_json(now))

    async def events(request: Request) -> Response:
        run_id = await known(request)

        async def stream() -> AsyncIterator[str]:
            # Starlette cancels this when the client leaves; follow's read then stops.
            updates = cardmill.aio.follow(run_id, db=db, interval=poll)
            async for now in _until(stopping, updates):
                yield f"data: {json.dumps(_progress_json(now))}\n\n"

        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

    async def cards(request: Request) -> Response:
        run_id = await known(request)
        uploads = {u.id: u.name for u in await cardmill.aio.list_uploads(run_id, db=db)}
        found = await cardmill.aio.list_cards(run_id, db=db)
        return JSONResponse([_card_json(card, uploads[card.upload_id]) for card in found])

    async def view(request: Request) -> Response:
        await known(request)
        return HTMLResponse(pages.RUN, headers=SECURITY_HEADERS)

    async def script(request: Request) -> Response:
        return Response(pages.SCRIPT, media_type="text/javascript", headers=SECURITY_HEADERS)

    async def style(request: Request) -> Response:
        return Response(pages.STYLE, media_type="text/css", headers=SECURITY_HEADERS)

    app = Starlette(
        routes=[
            Route("/", index),
            Route("/runs", runs, methods=["GET"]),
            Route("/runs", create, methods=["POST"]),
            Route("/runs/{id}", show),
            Route("/runs/{id}/events", events),
            Route("/runs/{id}/cards", cards),
            Route("/runs/{id}/view", view),
            Route("/webapp.js", script),
            Route("/webapp.css", style),
        ],
        lifespan=lifespan,
        exception_handlers={
            BadRequest: _refused,
            InputError: _refused,  # cardmill's refusal of what was sent
            RunNotFound: _refused,
        },
    )
    app.state.stopping = stopping
    return app


T = TypeVar("T")


async def _until(stopping: asyncio.Event, updates: AsyncIterator[T]) -> AsyncIterator[T]:
    """``updates`` until they end or ``stopping`` is set, whichever comes first."""
    stopped = asyncio.ensure_future(stopping.wait())
    step: asyncio.Future[T] | None = None
    try:
        while True:
            step = asyncio.ensure_future(anext(updates))
            await asyncio.wait({step, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not step.done():
                return  # the server is stopping
            try:
                value = step.result()
            except StopAsyncIteration:
                return
            yield value
    finally:
        stopped.cancel()
        if step is not None and not step.done():
            step.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await step
        close = getattr(updates, "aclose", None)
        if close is not None:
            await close()


# -- requests ----------------------------------------------------------------------------


async def _body(request: Request, limit: int) -> bytes:
    """The request's body, read as it comes, refused past ``limit`` bytes."""
    too_large = BadRequest(413, f"body: larger than the {limit:,} bytes an upload may be")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _documents(body: bytes) -> tuple[str | None, list[cardmill.Document]]:
    """The run's name and documents from ``{"name": ..., "documents": [{"name", "data"}]}``."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(400, f"body: not JSON ({_one_line(exc)})") from None
    if not isinstance(payload, dict):
        raise BadRequest(400, 'body: not a JSON object with "documents"')
    name = payload.get("name")
    if name is not None and not isinstance(name, str):
        raise BadRequest(400, "name: not a string")
    items = payload.get("documents")
    if not isinstance(items, list) or not items:
        raise BadRequest(400, "documents: give a list of at least one document")
    documents = []
    for i, item in enumerate(items):
        where = f"documents[{i}]"
        if not isinstance(item, dict):
            raise BadRequest(400, f'{where}: not an object with "name" and "data"')
        filename, data = item.get("name"), item.get("data")
        if not isinstance(filename, str) or not filename.strip():
            raise BadRequest(400, f"{where}.name: not a non-empty string")
        where = f"{where} ({json.dumps(filename)[1:-1][:80]})"
        if not isinstance(data, str):
            raise BadRequest(400, f"{where}.data: not a base64 string")
        try:
            content = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest(400, f"{where}.data: not valid base64") from None
        documents.append(cardmill.Document(filename, content))
    return (name or None), documents


# -- answers -----------------------------------------------------------------------------


def _one_line(message: object) -> str:
    return " ".join(str(message).split())


async def _refused(request: Request, exc: Exception) -> Response:
    """The one-line JSON answer to a request refused with ``exc``."""
    status = exc.status if isinstance(exc, BadRequest) else 400
    if isinstance(exc, RunNotFound):
        status = 404
    return JSONResponse({"error": _one_line(exc)}, status_code=status)


def _run_json(run: cardmill.Run) -> dict[str, Any]:
    return {
        "id": run.id,
        "name": run.name,
        "status": run.status.name,
        "finished": run.status.finished,
        "total": run.total_items,
        "completed": run.completed_items,
        "failed": run.failed_items,
        "pending": run.pending_items,
        "cards": run.total_cards,
        "provider": run.provider,
        "model": run.model,
        "created_at": run.created_at.isoformat(),
    }


def _progress_json(now: cardmill.aio.RunProgress) -> dict[str, Any]:
    uploads = []
    for upload in now.uploads:
        shown: dict[str, Any] = {
            "id": upload.id,
            "name": upload.name,
            "status": upload.status.name,
            "cards": upload.card_count,
        }
        if upload.status is cardmill.UploadStatus.FAILED:
            shown["reason"] = _one_line(upload.error or "failed")
        uploads.append(shown)
    return {**_run_json(now.run), "uploads": uploads}


def _card_json(card: cardmill.Card, upload: str) -> dict[str, Any]:
    return {
        "id": card.id,
        "upload_id": card.upload_id,
        "upload": upload,
        "ordinal": card.ordinal,
        "title": card.title,
        "body": card.body,
        "tags": list(card.tags),
        "quote": card.quote,
        "fields": dict(card.fields) if card.fields else None,
    }


# -- serving -----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    """``python examples/webapp/app.py --db cards.db``: serve until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--db", default=os.environ.get("CARDMILL_DB", cardmill.aio.DEFAULT_DB))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument(
        "--mode", choices=MODES, default=os.environ.get("CARDMILL_WEBAPP_MODE", "inprocess")
    )
    parser.add_argument(
        "--provider", choices=("auto", "anthropic", "openai", "extractive"), default="auto"
    )
    args = parser.parse_args(argv)
    if args.mode not in MODES:
        parser.error(f"CARDMILL_WEBAPP_MODE: {args.mode!r} is not one of {', '.join(MODES)}")
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    app = create_app(args.db, mode=args.mode, concurrency=args.concurrency, provider=args.provider)
    config = Config()
    config.bind = [f"[{args.host}]:{args.port}" if ":" in args.host else f"{args.host}:{args.port}"]
    config.graceful_timeout = 2.0  # event streams stay open until the run ends
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")  # printed once, as ours are
    asyncio.run(_serve(app, config))


async def _serve(app: Starlette, config: Config) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    async def stopped() -> None:
        await stop.wait()
        app.state.stopping.set()  # event streams end before the server closes

    log.info("serving on http://%s (Ctrl-C stops)", config.bind[0])
    await serve(app, config, shutdown_trigger=stopped)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
