"""Throwaway TLS material for demos and tests, made with the ``openssl`` command line.

    ca = make_ca(directory)                                  # ca.pem, ca.key
    server = make_cert(ca, directory, "etcd1", ["127.0.0.1"])  # etcd1.pem, etcd1.key (SAN IP 127.0.0.1)
    client = make_cert(ca, directory, "pgha", client=True)   # pgha.pem, pgha.key (no CN)

A server certificate is good for both serverAuth and clientAuth, so one pair
can serve an etcd member's client and peer ports.  A client certificate
(``client=True``) has no CommonName: with auth enabled, etcd 3.4's JSON gateway
answers 400 to any client certificate that carries one ("CommonName of client
sending a request against gateway will be ignored").  Keys are EC P-256, 0600.
Not for production: the CA key sits next to the certificates.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

DAYS = 30


class CertError(Exception):
    """openssl is missing or failed; one line naming what to do."""


@dataclass(frozen=True)
class CertPair:
    cert: str
    key: str


def _openssl(*args: str, cwd: Path) -> None:
    if shutil.which("openssl") is None:
        raise CertError("openssl not found; install it (apt-get install openssl)")
    res = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        last = (res.stderr.strip().splitlines() or ["no output"])[-1]
        raise CertError(f"openssl {args[0]} failed: {last}")


def _new_key(path: Path) -> None:
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(path),
             cwd=path.parent)
    os.chmod(path, 0o600)


def make_ca(directory: str | Path, name: str = "ca") -> CertPair:
    """A self-signed CA: ``<name>.pem`` and ``<name>.key`` in ``directory``."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    key, cert = d / f"{name}.key", d / f"{name}.pem"
    _new_key(key)
    _openssl("req", "-x509", "-new", "-key", str(key), "-out", str(cert), "-days", str(DAYS),
             "-subj", f"/CN=pgha test {name}", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    return CertPair(str(cert), str(key))


def make_cert(ca: CertPair, directory: str | Path, name: str, ips: Sequence[str] = (),
              dns: Sequence[str] = ("localhost",), client: bool = False) -> CertPair:
    """A certificate for ``name`` signed by ``ca``, with ``ips`` and ``dns`` as subject alternative names.

    ``client=True``: a client-only certificate without CommonName (subject O=pgha, OU=name).
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    key, csr, cert, ext = d / f"{name}.key", d / f"{name}.csr", d / f"{name}.pem", d / f"{name}.ext"
    _new_key(key)
    subject = f"/O=pgha/OU={name}" if client else f"/CN={name}"
    _openssl("req", "-new", "-key", str(key), "-out", str(csr), "-subj", subject, cwd=d)
    sans = [f"IP:{ip}" for ip in ips] + [f"DNS:{n}" for n in dns]
    usage = "clientAuth" if client else "serverAuth,clientAuth"
    ext.write_text("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
                   f"extendedKeyUsage={usage}\n"
                   + (f"subjectAltName={','.join(sans)}\n" if sans else ""))
    _openssl("x509", "-req", "-in", str(csr), "-CA", ca.cert, "-CAkey", ca.key, "-CAcreateserial",
             "-out", str(cert), "-days", str(DAYS), "-extfile", str(ext), cwd=d)
    csr.unlink()
    ext.unlink()
    return CertPair(str(cert), str(key))
