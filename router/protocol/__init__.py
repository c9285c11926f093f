"""The Arrakis wire layer shared by the router and router_backends.

Request envelopes, Arrow schemas, block ⇄ batch conversion, GPS time, request ids and the
Flight error mapping.  Imports neither ``scopemap`` nor the rest of ``router``.
"""
