"""arrakis-router: one Arrow Flight address in front of many Arrakis data servers."""

__version__ = "0.1.0"
