"""Replica policy for one channel group's stream, as pure functions (no I/O, no clock).

The reader (:class:`router.fanout.ReplicaFeed`) does the I/O: it opens the attempt this
module says, reads it, records how it ended as an :class:`Outcome`, and asks again.

Rationale. The fault that matters most is the rolling restart: a server closes its open
streams with a *normal* end of stream, then refuses connections for a while, then serves
again. So:

* a bounded stream that ends before the slice's end is a fault (:class:`EndedEarlyError`,
  retryable), never the end of the data;
* after a fault the next replica not yet tried in this *round* is opened at once, resuming
  after the last delivered block; an attempt that delivered data starts a new round (the
  request advanced, so a rolling restart moving from replica to replica is followed);
* when every replica of the round has failed, the one that failed last is tried once more
  after a short backoff if its fault looks like a restart (an early end, a refused or reset
  connection), not if it was stuck (a timeout) or refused the request itself;
* every replica that answered in the round ending its stream properly at the same point,
  twice in a row, is an answer: the data ends there (a real gap, null-filled and logged),
  not a fault;
* a feed fails for good after ``len(endpoints) + 2`` faults in all, progress or not: a
  downstream that breaks every few blocks is an error, not a slow trickle of retries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from router.errors import (
    ArrakisError,
    ChannelsNotAvailableError,
    InternalError,
    TimedOutError,
    UnavailableError,
)

#: seconds before the once-more attempt on a restarting endpoint; live reconnects back off
#: from ``base`` to ``cap``
RETRY_BACKOFF_S = 0.5
LIVE_BACKOFF_BASE_S = 0.5
LIVE_BACKOFF_CAP_S = 30.0


class EndedEarlyError(UnavailableError):
    """A downstream ended a bounded stream (normally) before the slice's end."""

    def __init__(self, text: str, at: int | None = None) -> None:
        super().__init__(text)
        self.at = at  # where the data delivered so far ends (GPS ns; None: nothing)


def is_retryable(error: ArrakisError) -> bool:
    """A replica may succeed where this endpoint failed (the request itself is not at fault)."""
    if isinstance(error, ChannelsNotAvailableError):
        return False
    return isinstance(error, UnavailableError | TimedOutError | InternalError)


def may_be_restarting(error: ArrakisError) -> bool:
    """A fault a restarting server shows (worth one more try on the same endpoint): an early
    end or a refused / reset connection; a timeout is a stuck server, not a restarting one."""
    return isinstance(error, UnavailableError) and not isinstance(error, ChannelsNotAvailableError)


CONNECTION_FAULTS = (
    "connection refused",
    "connection reset",
    "failed to connect",
    "socket closed",
    "broken pipe",
    "connection attempt timed out",
    "failed to connect to all addresses",
)


def is_connection_fault(error: ArrakisError) -> bool:
    """A refused or reset connection: the pooled client may be stale (the server restarted),
    so it is dropped and the call retried once on a fresh one before counting as a failure."""
    text = str(error).lower()
    return isinstance(error, UnavailableError) and any(f in text for f in CONNECTION_FAULTS)


@dataclass(frozen=True)
class Outcome:
    """How one attempt on ``url`` ended: ``delivered`` batches, then ``error``."""

    url: str
    delivered: int
    error: ArrakisError


@dataclass(frozen=True)
class Attempt:
    """Open ``url`` after waiting ``delay`` s."""

    url: str
    delay: float = 0.0


@dataclass(frozen=True)
class GiveUp:
    """No attempt left: fail with the round's errors."""

    errors: tuple[ArrakisError, ...]


@dataclass(frozen=True)
class DataEnds:
    """Every replica asked agrees the data ends at ``at``: finish (the rest is a real gap)."""

    at: int | None


Step = Attempt | GiveUp | DataEnds


def current_round(outcomes: Sequence[Outcome]) -> Sequence[Outcome]:
    """The outcomes since the last attempt that delivered data (that one included)."""
    for i in range(len(outcomes) - 1, -1, -1):
        if outcomes[i].delivered:
            return outcomes[i:]
    return outcomes


def next_step(
    endpoints: Sequence[str], outcomes: Sequence[Outcome], backoff: float = RETRY_BACKOFF_S
) -> Step:
    """What to do after ``outcomes`` (oldest first); no outcome: open the first replica."""
    if not endpoints:
        raise ValueError("no endpoint to read")
    if not outcomes:
        return Attempt(endpoints[0])
    last = outcomes[-1]
    this_round = current_round(outcomes)
    errors = tuple(o.error for o in this_round)
    if not is_retryable(last.error) or len(outcomes) >= len(endpoints) + 2:
        return GiveUp(errors)
    early = [o.error for o in this_round if isinstance(o.error, EndedEarlyError)]
    if len(early) >= 2 and len(early) == len(this_round):
        points = {e.at for e in early if isinstance(e, EndedEarlyError)}
        if len(points) == 1 and all(not o.delivered for o in this_round[1:]):
            return DataEnds(points.pop())
    tried = {o.url for o in this_round}
    start = endpoints.index(last.url) + 1 if last.url in endpoints else 0
    for url in [*endpoints[start:], *endpoints[:start]]:
        if url not in tried:
            return Attempt(url)
    retried = len(this_round) > len(tried)
    if not retried and may_be_restarting(last.error):
        return Attempt(last.url, backoff)
    return GiveUp(errors)


def backoff_s(
    attempt: int,
    jitter: float,
    base: float = LIVE_BACKOFF_BASE_S,
    cap: float = LIVE_BACKOFF_CAP_S,
) -> float:
    """Exponential backoff with full jitter: the wait before reconnect number ``attempt``
    (1, 2, ...), ``jitter`` in [0, 1) drawn by the caller: ``base * 2**(attempt-1)`` capped
    at ``cap``, scaled into its upper half (never zero: a refused reconnect never spins)."""
    if attempt < 1:
        raise ValueError(f"attempt counts from 1, got {attempt}")
    ceiling = min(cap, base * 2.0 ** min(attempt - 1, 32))
    return ceiling * (0.5 + 0.5 * jitter)
