"""A tiny FastAPI app for the load generator's tests, served by a real uvicorn in a subprocess."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response, StreamingResponse

# The body of ``/chunked``: CHUNKS pieces of CHUNK_BYTES each, sent as separate HTTP chunks.
CHUNKS = 5
CHUNK_BYTES = 1000
# ``/slow`` answers after this long; the tests use a shorter per-request timeout.
SLOW_S = 3.0

app = FastAPI()


@app.get("/healthz")
async def healthz() -> dict[str, object]:
    return {"status": "ok", "worker": os.getpid()}


@app.get("/ok")
async def ok() -> dict[str, object]:
    return {"ok": True, "items": [1, 2, 3]}


@app.get("/fail")
async def fail() -> JSONResponse:
    return JSONResponse({"detail": "broken on purpose"}, status_code=500)


@app.get("/chunked")
async def chunked() -> StreamingResponse:
    async def pieces() -> AsyncIterator[bytes]:
        for i in range(CHUNKS):
            yield bytes([ord("a") + i]) * CHUNK_BYTES

    return StreamingResponse(pieces(), media_type="application/octet-stream")


@app.get("/close")
async def close() -> Response:
    return Response(b"bye", headers={"Connection": "close"})


@app.get("/slow")
async def slow() -> dict[str, bool]:
    await asyncio.sleep(SLOW_S)
    return {"ok": True}
