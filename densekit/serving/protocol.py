"""The HTTP protocol ``densekit serve`` runs uvicorn with: h11 plus a deadline for each request head.

uvicorn closes a keep-alive connection that stays idle after a response, but it waits forever for the first
request on a new connection, and for a request head that arrives a byte at a time (slowloris). Each such
connection holds a file descriptor; enough of them (1,024 under a common ``ulimit -n``) and the server accepts
no one. Here every connection must deliver a whole request head within ``read_timeout`` seconds of opening (or of
its previous response); otherwise it is closed. The body has the same deadline, enforced by the guard middleware.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.h11_impl import H11Protocol


def protocol_with_deadline(read_timeout: float) -> type[H11Protocol]:
    """An ``H11Protocol`` subclass that closes a connection whose request head is not in after ``read_timeout``."""

    class DeadlineH11Protocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None
        _waiting_after = None  # the request cycle before the one whose head we are waiting for

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        def handle_events(self) -> None:
            super().handle_events()
            if self._deadline is not None and self.cycle is not self._waiting_after:
                self._disarm()  # a new request head arrived in time

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._waiting_after = self.cycle
            self._deadline = self.loop.call_later(read_timeout, self._too_slow)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _too_slow(self) -> None:
            self._deadline = None
            if not self.transport.is_closing():
                self.transport.close()

    return DeadlineH11Protocol
