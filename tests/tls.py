"""A throwaway TLS certificate for tests that serve HTTPS on loopback."""

from __future__ import annotations

import shutil
import subprocess

import pytest


def certificate(tmp_path, name: str, *alt: str) -> tuple[str, str]:
    """(cert, key) files of a self-signed certificate for ``name`` (or the ``alt``
    subjectAltName entries); skips the test when the openssl command is missing."""
    if not shutil.which("openssl"):
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    names = ",".join(alt or (f"DNS:{name}",))
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert),
            "-subj", f"/CN={name}", "-addext", f"subjectAltName={names}",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return str(cert), str(key)
