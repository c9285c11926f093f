"""Arrakis-protocol data servers we control: deterministic mock and Arrow IPC files."""
