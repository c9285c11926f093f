"""Read-ahead: one reader thread fills one bounded buffer from one source; nothing else.

The consumer either iterates (blocking, woken by the reader or by the request's token) or,
when one thread serves several buffers (the live merge), calls :meth:`ReadAhead.poll` and is
told through ``notify`` that something arrived. A full buffer blocks the reader, so a fast
downstream cannot fill memory. Waits are on one condition, never timed polls.
``close()`` interrupts the source (its ``interrupt`` callable cancels a blocked downstream
read), closes it and joins the thread, on every path; it is idempotent.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Generator, Iterator
from typing import Generic, TypeVar

import structlog

from router.context import RequestContext

T = TypeVar("T")
log = structlog.get_logger("router.readahead")

END = object()  # what :meth:`ReadAhead.poll` returns once the source has ended normally
JOIN_S = 10.0  # how long close() waits for the reader before saying it is stuck


class ReadAhead(Generic[T]):
    """Items of ``source`` read ahead, at most ``size`` held (see the module docstring)."""

    def __init__(
        self,
        source: Iterator[T],
        ctx: RequestContext,
        *,
        size: int = 16,
        name: str = "",
        interrupt: Callable[[], None] = lambda: None,
        notify: Callable[[], None] | None = None,
    ) -> None:
        if size < 1:
            raise ValueError(f"read-ahead size must be at least 1, got {size}")
        self.name = name
        self._source = source
        self._ctx = ctx
        self._size = size
        self._interrupt = interrupt
        self._notify = notify
        self._cond = threading.Condition()
        self._items: deque[object] = deque()
        self._done = False  # END or an error is queued: the reader has finished
        self._closed = False
        self._thread = threading.Thread(target=self._read, name=f"feed {name}", daemon=True)
        self._started = False
        self._finished = threading.Event()  # set as the reader thread's last act
        self._unregister: Callable[[], None] = lambda: None

    def __repr__(self) -> str:
        return (
            f"<ReadAhead {self.name} held={len(self._items)} done={self._done} "
            f"closed={self._closed}>"
        )

    def start(self) -> ReadAhead[T]:
        if not self._started:
            self._started = True
            self._unregister = self._ctx.token.on_cancel(self._wake)
            self._thread.start()
        return self

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()
        if self._notify is not None:
            self._notify()

    # ------------------------------------------------------------------ reader thread
    def _read(self) -> None:
        source = self._source
        try:
            for item in source:
                with self._cond:
                    while len(self._items) >= self._size and not self._closed:
                        self._cond.wait()
                    if self._closed:
                        return
                    self._items.append(item)
                    self._cond.notify_all()
                if self._notify is not None:
                    self._notify()
            self._finish(END)
        except Exception as exc:
            self._finish(exc)
        finally:
            try:
                close = getattr(source, "close", None)
                if close is not None:
                    close()
            finally:
                self._finished.set()

    def _finish(self, last: object) -> None:
        with self._cond:
            self._items.append(last)
            self._done = True
            self._cond.notify_all()
        if self._notify is not None:
            self._notify()

    # ------------------------------------------------------------------ consumer side
    def __iter__(self) -> Generator[T, None, None]:
        self.start()
        cond, items, token = self._cond, self._items, self._ctx.token
        while True:
            with cond:
                while not items and not token.cancelled:
                    cond.wait()
                if token.cancelled:
                    raise self._ctx.error(self.name)
                item = items.popleft()
                cond.notify_all()
            if item is END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]

    def poll(self) -> object | None:
        """The next item, :data:`END`, an error to raise, or None when nothing is held."""
        self.start()
        with self._cond:
            if not self._items:
                return None
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def close(self) -> None:
        """Stop the reader, interrupt and close its source, join it (idempotent)."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        self._unregister()
        self._interrupt()
        # Waits for the reader's own "finished" event: ``Thread.join`` (``current_thread``)
        # from a gRPC serving thread would register that thread with ``threading`` for good.
        # A thread ``threading`` knows (tests, the live merge's) also joins the reader.
        me = threading.get_ident()
        if self._started and self._thread.ident != me:
            if not self._finished.wait(timeout=JOIN_S):
                # the downstream call ignored its cancellation: say so rather than hide it
                log.error("feed_thread_stuck", feed=self.name, waited_s=JOIN_S)
            elif any(t.ident == me for t in threading.enumerate()):
                self._thread.join(timeout=JOIN_S)
        with self._cond:
            self._items.clear()  # nothing held after close

    def __enter__(self) -> ReadAhead[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
