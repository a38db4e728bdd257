"""A throwaway certificate authority for the demo and the tests (the `openssl` command line).

    ca = make_ca(directory)                                   # ca.crt, ca.key
    server = make_cert(ca, directory, "etcd1", ["127.0.0.1"])   # etcd1.crt, etcd1.key
    client = make_cert(ca, directory, "pgha", client=True)    # pgha.crt, pgha.key (no CN)

Both return a ``CertPair(cert, key)`` (a named tuple of paths).  A server certificate is
valid for the IP addresses given, for ``dns`` (localhost) and for NAME, and good for both
serverAuth and clientAuth, so one pair can serve an etcd member's client and peer ports or
an agent's API.  A client certificate (``client=True``) has no CommonName: with auth enabled,
etcd 3.4's JSON gateway answers 400 to any client certificate that carries one ("CommonName of
client sending a request against gateway will be ignored").  Keys are EC P-256, mode 0600.
Not for production: the CA key sits next to the certificates.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

OPENSSL = "openssl"
DAYS = 825
_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


class CertError(Exception):
    """openssl failed or is missing: one line naming the fix."""


class CertPair(NamedTuple):
    cert: Path
    key: Path


# A CA is a certificate and its key like any other pair.
CA = CertPair


def _openssl(*args: str) -> None:
    try:
        subprocess.run([OPENSSL, *args], check=True, capture_output=True, text=True)
    except FileNotFoundError:
        raise CertError("openssl not found; install it (apt-get install openssl)") from None
    except subprocess.CalledProcessError as exc:
        detail = " ".join((exc.stderr or "").split())[:300]
        raise CertError(f"openssl {args[0]} failed ({detail})") from None


def make_ca(dir: str | Path, name: str = "ca") -> CertPair:
    """A self-signed CA in ``dir`` (NAME.crt, NAME.key)."""
    d = Path(dir)
    d.mkdir(parents=True, exist_ok=True)
    ca = CertPair(d / f"{name}.crt", d / f"{name}.key")
    _openssl("req", "-x509", *_KEY, "-keyout", str(ca.key), "-out", str(ca.cert), "-days", str(DAYS),
             "-subj", f"/CN=pgha demo {name}",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    os.chmod(ca.key, 0o600)
    return ca


def make_cert(ca: CertPair, dir: str | Path, name: str, ips: Sequence[str] = (),
              dns: Sequence[str] = ("localhost",), client: bool = False) -> CertPair:
    """NAME.crt and NAME.key in ``dir``, signed by ``ca``: for ``ips``, ``dns`` and NAME, or with
    ``client=True`` a client-only certificate without CommonName (subject O=pgha, OU=NAME)."""
    d = Path(dir)
    d.mkdir(parents=True, exist_ok=True)
    cert, key, csr, ext = (d / f"{name}.{suffix}" for suffix in ("crt", "key", "csr", "ext"))
    names = [*dns, *([] if client else [name])]
    sans = ",".join([*(f"IP:{ip}" for ip in dict.fromkeys(ips)), *(f"DNS:{n}" for n in dict.fromkeys(names))])
    ext.write_text((f"subjectAltName={sans}\n" if sans else "") + "basicConstraints=CA:FALSE\n"
                   "keyUsage=critical,digitalSignature,keyEncipherment\n"
                   f"extendedKeyUsage={'clientAuth' if client else 'serverAuth,clientAuth'}\n"
                   "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n")
    subject = f"/O=pgha/OU={name}" if client else f"/CN={name}"
    try:
        _openssl("req", "-new", *_KEY, "-keyout", str(key), "-out", str(csr), "-subj", subject)
        os.chmod(key, 0o600)
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key), "-CAcreateserial",
                 "-out", str(cert), "-days", str(DAYS), "-extfile", str(ext))
    finally:
        for tmp in (csr, ext):
            tmp.unlink(missing_ok=True)
    return CertPair(cert, key)
