"""The scheduling policy (``router serve --scheduling``): every thread of the process, and
those started after, run under SCHED_BATCH; ``normal`` and a policy set from outside are
left alone; a refusal is logged and serving goes on. Each case runs in a fresh interpreter,
so the test process keeps its own policy."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from structlog.testing import capture_logs

from router import scheduling

pytestmark = pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="SCHED_BATCH is Linux's")

PROBE = """
import json, os, subprocess, sys, threading
from router import scheduling

os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))  # whatever pytest runs under
{before}
early = threading.Event()
threading.Thread(target=early.wait, daemon=True).start()  # a thread that exists already
result = scheduling.apply({wanted!r})
threads = {{int(t): os.sched_getscheduler(int(t)) for t in os.listdir("/proc/self/task")}}
later = []
t = threading.Thread(target=lambda: later.append(os.sched_getscheduler(0)))
t.start(); t.join()
child = subprocess.run(
    [sys.executable, "-c", "import os; print(os.sched_getscheduler(0))"],
    capture_output=True, text=True, check=True,
)
early.set()
print(json.dumps({{
    "result": result, "threads": sorted(set(threads.values())), "n": len(threads),
    "later": later[0], "child": int(child.stdout), "current": scheduling.current(),
}}))
"""


def _probe(wanted: str, before: str = "") -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(wanted=wanted, before=before)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    out: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return out


def test_batch_moves_every_thread_and_what_starts_later_inherits_it() -> None:
    got = _probe("batch")
    assert got["result"] == got["current"] == "batch"
    assert got["threads"] == [os.SCHED_BATCH] and int(str(got["n"])) >= 2
    assert got["later"] == os.SCHED_BATCH  # a server thread started afterwards
    assert got["child"] == os.SCHED_BATCH  # a data worker started afterwards


def test_normal_leaves_the_policy_as_started() -> None:
    got = _probe("normal")
    assert got["result"] == "normal"
    assert got["threads"] == [os.SCHED_OTHER] and got["later"] == got["child"] == os.SCHED_OTHER


def test_a_policy_chosen_from_outside_is_kept() -> None:
    # as `chrt --idle 0 router serve` would start it
    got = _probe("batch", before="os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))")
    assert got["result"] == "idle"
    assert got["threads"] == [os.SCHED_IDLE] and got["child"] == os.SCHED_IDLE


def test_an_unknown_policy_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="must be one of batch, normal, got 'fast'"):
        scheduling.apply("fast")


def test_a_refusal_is_logged_and_the_policy_stays(monkeypatch: pytest.MonkeyPatch) -> None:
    """A sandbox whose seccomp profile forbids the call: the router serves as it is."""

    def refuse(*_: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(scheduling, "current", lambda: "normal")
    monkeypatch.setattr(os, "sched_setscheduler", refuse)
    with capture_logs() as logs:
        assert scheduling.apply("batch") == "normal"
    assert logs == [
        {
            "event": "scheduling_unchanged",
            "log_level": "warning",
            "wanted": "batch",
            "reason": "Operation not permitted",
        }
    ]
