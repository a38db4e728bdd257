"""A throwaway certificate authority for the demo and the tests (the `openssl` command line).

``make_ca(dir)`` writes ca.crt and ca.key; ``make_cert(ca, dir, name, ips)`` writes
NAME.crt and NAME.key signed by it, valid for the IP addresses given, for ``localhost``
and for NAME (server and client use).  ``client=True`` makes a client-only certificate
without CommonName: with auth enabled, etcd 3.4's JSON gateway answers 400 to a client
certificate that carries one.  Keys are mode 0600.  Not for production: the CA key sits
next to the certificates.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

OPENSSL = "openssl"
DAYS = 825
_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


class CertError(Exception):
    """openssl failed or is missing: one line naming the fix."""


@dataclass(frozen=True)
class CA:
    cert: Path
    key: Path


def _openssl(*args: str) -> None:
    try:
        subprocess.run([OPENSSL, *args], check=True, capture_output=True, text=True)
    except FileNotFoundError:
        raise CertError("openssl not found; install it (apt-get install openssl)") from None
    except subprocess.CalledProcessError as exc:
        detail = " ".join((exc.stderr or "").split())[:300]
        raise CertError(f"openssl {args[0]} failed ({detail})") from None


def make_ca(dir: Path) -> CA:
    """A self-signed CA in ``dir`` (ca.crt, ca.key)."""
    dir.mkdir(parents=True, exist_ok=True)
    ca = CA(dir / "ca.crt", dir / "ca.key")
    _openssl("req", "-x509", *_KEY, "-keyout", str(ca.key), "-out", str(ca.cert), "-days", str(DAYS),
             "-subj", "/CN=pgha demo CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    os.chmod(ca.key, 0o600)
    return ca


def make_cert(ca: CA, dir: Path, name: str, ips: Sequence[str], client: bool = False,
              dns: Sequence[str] = ()) -> tuple[Path, Path]:
    """NAME.crt and NAME.key in ``dir``, signed by ``ca``, for ``ips``, localhost, NAME and ``dns``.

    ``client``: for clients only, with no CommonName (subject O=pgha, OU=NAME).  ``dns``: more
    DNS names; pgBackRest matches a TLS peer only against DNS names, so its certificates also
    carry their addresses as DNS names.
    """
    dir.mkdir(parents=True, exist_ok=True)
    cert, key, csr, ext = (dir / f"{name}.{suffix}" for suffix in ("crt", "key", "csr", "ext"))
    sans = ",".join([*(f"IP:{ip}" for ip in dict.fromkeys(ips)), "DNS:localhost", f"DNS:{name}",
                     *(f"DNS:{d}" for d in dict.fromkeys(dns) if d not in ("localhost", name))])
    ext.write_text(f"subjectAltName={sans}\nbasicConstraints=CA:FALSE\n"
                   "keyUsage=critical,digitalSignature,keyEncipherment\n"
                   f"extendedKeyUsage={'clientAuth' if client else 'serverAuth,clientAuth'}\n"
                   "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n")
    try:
        _openssl("req", "-new", *_KEY, "-keyout", str(key), "-out", str(csr),
                 "-subj", f"/O=pgha/OU={name}" if client else f"/CN={name}")
        os.chmod(key, 0o600)
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key), "-CAcreateserial",
                 "-out", str(cert), "-days", str(DAYS), "-extfile", str(ext))
    finally:
        for tmp in (csr, ext):
            tmp.unlink(missing_ok=True)
    return cert, key
