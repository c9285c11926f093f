"""TLS options shared by ``router serve`` and ``router health``: PEM files read with clear
errors, and the serve options checked against the ``--url`` scheme."""

from __future__ import annotations


class TlsError(ValueError):
    """The TLS options cannot be used (the message says why)."""


def read_pem(option: str, path: str) -> bytes:
    """The bytes of the PEM file given to ``option``; :class:`TlsError` when unreadable."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise TlsError(f"cannot read {option} {path}: {exc.strerror or exc}") from None
    if b"-----BEGIN" not in data:
        raise TlsError(f"{option} {path} is not a PEM file")
    return data


def tls_certificates(cert: str | None, key: str | None, url: str) -> tuple[bytes, bytes] | None:
    """``(certificate, key)`` PEM bytes to serve ``url`` with, or None for plaintext; the
    options and the URL scheme must agree (:class:`TlsError` otherwise)."""
    if (cert is None) != (key is None):
        raise TlsError("--tls-cert and --tls-key go together")
    scheme = url.split("://", 1)[0] if "://" in url else None
    if cert is None or key is None:
        if scheme == "grpc+tls":
            raise TlsError(f"--url {url} needs --tls-cert and --tls-key")
        return None
    if scheme not in (None, "grpc+tls"):
        raise TlsError(f"with --tls-cert the --url scheme must be grpc+tls, not {scheme}://")
    return read_pem("--tls-cert", cert), read_pem("--tls-key", key)
