"""Per-session state that outlives one request: the Stop flags of the Explore runs.

Gradio's own cancel (a separate HTTP request) can land after the Stop handler has already written "Stopped.", letting
one more step overwrite it; a run therefore also checks :data:`STOP_FLAGS` before every update and ends itself, so
the page always ends on "Stopped.".
"""

from __future__ import annotations

import threading


def session_id(request) -> str | None:
    """The session hash of a gradio request (None outside a request, e.g. when a test calls a callback)."""
    return getattr(request, "session_hash", None) if request is not None else None


class StopFlags:
    """Sessions whose Stop was pressed during a run; a flag is consumed when the run reads it."""

    def __init__(self):
        self._lock = threading.Lock()
        self._pressed: set[str] = set()

    def request(self, sid: str | None) -> None:
        """Flag session ``sid``'s running run to end (no-op without a session)."""
        if sid is not None:
            with self._lock:
                self._pressed.add(sid)

    def take(self, sid: str | None) -> bool:
        """Whether Stop was pressed for ``sid`` since the last call; the flag is consumed."""
        if sid is None:
            return False
        with self._lock:
            pressed = sid in self._pressed
            self._pressed.discard(sid)
            return pressed

    def clear(self) -> None:
        with self._lock:
            self._pressed.clear()


STOP_FLAGS = StopFlags()
