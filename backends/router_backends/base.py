"""Compatibility names: the interface lives in :mod:`router_backends.interface`, the server
core in :mod:`router_backends.server`."""

from __future__ import annotations

from router_backends.interface import Backend, BackendBase, BlockStream, CallContext
from router_backends.server import ACTIONS, BackendServer

__all__ = ["ACTIONS", "Backend", "BackendBase", "BackendServer", "BlockStream", "CallContext"]
