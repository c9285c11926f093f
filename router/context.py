"""One request's context: request id, credential, one cancel token, an optional deadline.

Made by the Flight adapter for every call and handed down to every layer (Go's
``context.Context``, Trio's cancel scope): whoever waits for something on behalf of the
request waits on its token, and every downstream call gets :meth:`RequestContext.remaining`
(capped by its own per-call limit), never a fresh constant.

The token is set once, with a reason, by whichever comes first: the client leaving, the
server draining (:meth:`LiveContexts.cancel_all`), the deadline passing (the service-wide
:class:`router.timers.Timer` sets it) or the request's own code giving up. Setting it runs
the callbacks registered with :meth:`CancelToken.on_cancel` (each cancels one blocked
downstream read or wakes one waiting buffer), so a request's threads wake at once instead of
polling.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from router.errors import (
    ArrakisError,
    CancelledError,
    ShuttingDownError,
    TimedOutError,
    UnavailableError,
)

Monotonic = Callable[[], float]

#: why a token was cancelled
CLIENT_LEFT = "the client cancelled the request"
DEADLINE = "the request deadline passed"
SERVER_STOPPING = "the router is shutting down"
FINISHED = "the request ended"


class CancelToken:
    """Set once (thread-safe), with a reason; callbacks run on the setting thread.

    ``cancelled`` is a plain attribute: the per-block hot path reads it without a call.
    """

    def __init__(self) -> None:
        self.cancelled = False
        self.reason: str | None = None
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: dict[int, Callable[[], None]] = {}
        self._ids = itertools.count()

    def __repr__(self) -> str:
        return f"<CancelToken cancelled={self.cancelled} reason={self.reason!r}>"

    def cancel(self, reason: str) -> bool:
        """Set the token (False: it was set already; the first reason stays)."""
        with self._lock:
            if self.cancelled:
                return False
            self.reason = reason
            self.cancelled = True
            callbacks = list(self._callbacks.values())
            self._callbacks.clear()
        self._event.set()
        for callback in callbacks:
            callback()
        return True

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the token is set or ``timeout`` s passed; True if it is set."""
        return self._event.wait(timeout)

    def on_cancel(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Run ``callback`` when the token is set (at once if it is set already); returns
        the function that unregisters it (idempotent)."""
        with self._lock:
            if not self.cancelled:
                key = next(self._ids)
                self._callbacks[key] = callback

                def unregister() -> None:
                    with self._lock:
                        self._callbacks.pop(key, None)

                return unregister
        callback()
        return lambda: None

    @property
    def callbacks(self) -> int:
        """Callbacks registered and not yet run (a test counts what a request left behind)."""
        with self._lock:
            return len(self._callbacks)


@dataclass(eq=False)
class RequestContext:
    """Everything a request carries down: see the module docstring.

    ``deadline`` is a ``monotonic()`` time (None: no overall deadline).
    """

    request_id: str
    authorization: str | None = field(default=None, repr=False)
    deadline: float | None = None
    monotonic: Monotonic = field(default=time.monotonic, repr=False)
    token: CancelToken = field(default_factory=CancelToken)

    @classmethod
    def with_timeout(
        cls,
        request_id: str,
        timeout: float | None,
        authorization: str | None = None,
        monotonic: Monotonic = time.monotonic,
    ) -> RequestContext:
        """A context whose deadline is ``timeout`` s from now (None: no deadline)."""
        deadline = None if timeout is None else monotonic() + timeout
        return cls(request_id, authorization, deadline, monotonic)

    @property
    def cancelled(self) -> bool:
        return self.token.cancelled

    def cancel(self, reason: str) -> bool:
        return self.token.cancel(reason)

    def deadline_passed(self) -> None:
        """Cancel the token because the deadline passed (the timer calls this)."""
        self.token.cancel(DEADLINE)

    def remaining(self) -> float | None:
        """Seconds left before the deadline (never negative; None: no deadline)."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - self.monotonic())

    def limit(self, per_call: float | None) -> float | None:
        """The time one downstream call may take: ``per_call`` capped by what remains."""
        left = self.remaining()
        if left is None:
            return per_call
        return left if per_call is None else min(per_call, left)

    def error(self, what: str = "") -> ArrakisError:
        """The error a cancelled request raises: TimedOutError for a passed deadline,
        CancelledError when its client left (or it ended), UnavailableError when the server
        cancelled it (draining: the client should reconnect elsewhere)."""
        reason = self.token.reason or CLIENT_LEFT
        text = f"{what}: {reason}" if what else reason
        if reason == DEADLINE:
            return TimedOutError(text)
        if reason in (CLIENT_LEFT, FINISHED):
            return CancelledError(text)
        if reason == SERVER_STOPPING:  # the client should reconnect, to another router
            return ShuttingDownError(f"{what}: {ShuttingDownError.TEXT}" if what else None)
        return UnavailableError(text)

    def check(self, what: str = "") -> None:
        """Raise :meth:`error` if the token is set."""
        if self.token.cancelled:
            raise self.error(what)


class LiveContexts:
    """The contexts of the requests in flight, so that a draining server can cancel them all
    (:meth:`cancel_all`) and the service's timer can ask, in one sweep for all of them,
    whether their clients are still there (:meth:`sweep`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: dict[RequestContext, Callable[[], bool] | None] = {}
        self._closed_reason: str | None = None

    def __repr__(self) -> str:
        return f"<LiveContexts live={len(self)} closed={self._closed_reason!r}>"

    def __len__(self) -> int:
        with self._lock:
            return len(self._live)

    def add(self, ctx: RequestContext, gone: Callable[[], bool] | None = None) -> None:
        """Track ``ctx`` until :meth:`discard`; ``gone()`` says whether its client left (it
        is only called between these two calls). After ``cancel_all`` a context added is
        cancelled at once."""
        with self._lock:
            reason = self._closed_reason
            if reason is None:
                self._live[ctx] = gone
        if reason is not None:
            ctx.cancel(reason)

    def discard(self, ctx: RequestContext) -> None:
        with self._lock:
            self._live.pop(ctx, None)

    def sweep(self) -> bool:
        """Cancel the contexts whose client left (the timer calls this periodically)."""
        left = []
        with self._lock:  # held while asking: discard() waits, so gone() is never stale
            for ctx, gone in self._live.items():
                if gone is not None and not ctx.cancelled and gone():
                    left.append(ctx)
        for ctx in left:
            ctx.cancel(CLIENT_LEFT)
        return True

    def cancel_all(self, reason: str = SERVER_STOPPING) -> int:
        """Cancel every live context, and every one added from now on; returns how many
        were live."""
        with self._lock:
            self._closed_reason = reason
            live = list(self._live)
        for ctx in live:
            ctx.cancel(reason)
        return len(live)
