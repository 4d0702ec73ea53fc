"""Request limits at the HTTP edge, before gradio reads a body: an upload request holds at most
``DEFAULTS["max_upload_mb"]`` MB and ``DEFAULTS["max_upload_files"]`` files in all, any other request body (an API
call's JSON) at most ``DEFAULTS["max_body_kb"]`` KB. Gradio's own ``max_file_size`` (set by
:func:`diffuse_core.ui.launch.launch`) bounds each file; these bound the request.

:class:`RequestLimits` is a plain ASGI middleware: it refuses from the ``Content-Length`` header when there is one,
and counts the bytes (and, for an upload, the multipart parts) as they stream in otherwise. A refusal is a 413 with a
one-line message that quotes nothing of the request.
"""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException

from diffuse_core.studio.settings import DEFAULTS, max_upload_bytes

MULTIPART_SLACK = 256 * 1024       # bytes of multipart headers allowed on top of the files (~250 bytes a file)
BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


def is_upload(path: str) -> bool:
    """Whether ``path`` is gradio's upload route (``/gradio_api/upload`` under any root path)."""
    return path.rstrip("/").endswith("/upload")


class _Refused(HTTPException):
    def __init__(self, detail: str):
        super().__init__(status_code=413, detail=detail)


class RequestLimits:
    """ASGI middleware refusing requests over the limits of :data:`DEFAULTS` (read when the app starts)."""

    def __init__(self, app, upload_bytes: int | None = None, upload_files: int | None = None,
                 body_bytes: int | None = None):
        self.app = app
        self.upload_bytes = upload_bytes if upload_bytes is not None else max_upload_bytes()
        self.upload_files = upload_files if upload_files is not None else int(DEFAULTS["max_upload_files"])
        self.body_bytes = body_bytes if body_bytes is not None else int(DEFAULTS["max_body_kb"]) * 1024

    def _too_big(self, upload: bool) -> str:
        if upload:
            return (f"the upload is over the limit of {self.upload_bytes / 2**20:g} MB per request (all files "
                    f"together): upload fewer or smaller files")
        return (f"the request body is over the limit of {self.body_bytes // 1024} KB: upload files through the "
                f"file inputs (gradio_client's handle_file), not inside the request")

    def _too_many(self) -> str:
        return f"too many files in one upload: at most {self.upload_files} files per request"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method", "GET") not in BODY_METHODS:
            return await self.app(scope, receive, send)
        upload = is_upload(scope.get("path", ""))
        limit = self.upload_bytes + MULTIPART_SLACK if upload else self.body_bytes
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        try:
            declared = int(headers.get("content-length", ""))
        except ValueError:
            declared = None
        if declared is not None and declared > limit:
            return await _refuse(send, self._too_big(upload))
        delimiter = _multipart_delimiter(headers.get("content-type", "")) if upload else None
        seen = {"bytes": 0, "delimiters": 0, "tail": b""}
        started = {"response": False}

        async def limited_receive():
            message = await receive()
            if message["type"] != "http.request":
                return message
            chunk = message.get("body", b"")
            seen["bytes"] += len(chunk)
            if seen["bytes"] > limit:
                raise _Refused(self._too_big(upload))
            if delimiter:
                window = seen["tail"] + chunk             # the tail is shorter than a delimiter: none counted twice
                seen["delimiters"] += window.count(delimiter)
                seen["tail"] = window[-(len(delimiter) - 1):]
                if seen["delimiters"] - 1 > self.upload_files:   # n parts have n + 1 delimiters (the last closes)
                    raise _Refused(self._too_many())
            return message

        async def watched_send(message):
            if message["type"] == "http.response.start":
                started["response"] = True
            await send(message)

        try:
            await self.app(scope, limited_receive, watched_send)
        except _Refused as refusal:                         # the app let it through: answer here
            if not started["response"]:
                await _refuse(send, refusal.detail)


def _multipart_delimiter(content_type: str) -> bytes | None:
    """``--<boundary>`` of a multipart content type (None for any other)."""
    if not content_type.lower().startswith("multipart/"):
        return None
    for part in content_type.split(";")[1:]:
        key, _, value = part.strip().partition("=")
        if key.lower() == "boundary" and value:
            return b"--" + value.strip('"').encode("latin-1")
    return None


async def _refuse(send, detail: str) -> None:
    body = json.dumps({"detail": detail[0].upper() + detail[1:]}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
