"""Arrakis-protocol data servers we control: deterministic mock and Arrow IPC files."""

__version__ = "0.1.0"
