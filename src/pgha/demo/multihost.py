"""The steps of docs/multi-host.md, as the shell text an operator runs and `pgha demo up --etcd-members` runs.

Each step is a bash script that reads its inputs from environment variables (listed in
``STEP_INPUTS``), so the very same text is the guide's code block and what the demo runs
inside its "hosts" (network namespaces).  tests/unit/test_multihost_guide.py checks that
every block of the guide tagged ``<!-- step: NAME -->`` is exactly ``STEPS[NAME]``, and the
netns lab test runs the demo, hence these scripts.  Secrets (the etcd passwords) come in
through the environment, never on a command line.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence

# The CA and the JWT signing key of the etcd cluster, once, on the machine that keeps the CA.
CA = """\
cd "$PKI"
openssl req -x509 -new -nodes -days 3650 -subj "/CN=pgha etcd CA" \\
  -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -keyout ca.key -out ca.crt
openssl ecparam -name prime256v1 -genkey -noout -out jwt.key
openssl ec -in jwt.key -pubout -out jwt.pub
chmod 600 ca.key jwt.key
"""

# A key and a certificate signed by the CA, for each etcd member (its address in SAN, used for
# both the client and the peer port) and each etcd client (the pgha agents, the admin's etcdctl).
# A client certificate has no CN: once authentication is on, etcd's JSON gateway (which pgha
# uses) refuses a client certificate with a CN ("CommonName of client sending a request against
# gateway will be ignored"), and the etcd user comes from the password instead.
CERT = """\
cd "$PKI"
openssl req -new -nodes -subj "$SUBJECT" \\
  -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -keyout "$NAME.key" -out "$NAME.csr"
printf 'subjectAltName=%s\\nextendedKeyUsage=serverAuth,clientAuth\\n' "$SAN" > "$NAME.ext"
openssl x509 -req -days 825 -in "$NAME.csr" -CA ca.crt -CAkey ca.key -CAcreateserial \\
  -extfile "$NAME.ext" -out "$NAME.crt"
rm "$NAME.csr" "$NAME.ext"
chmod 600 "$NAME.key"
"""

# Each etcd member's settings, as the environment file Debian's etcd.service reads
# (/etc/default/etcd); TLS on the client and the peer port, client certificates required.
# bcrypt cost 4: every login is a bcrypt check on the member, and at the default cost (10) a loaded
# member took over 2 s per login, so agents timed out logging in; the passwords are random.
ETCD_ENV = """\
cat > "$ETCD_ENV_FILE" <<EOF
ETCD_NAME=$NAME
ETCD_DATA_DIR=$DATA_DIR
ETCD_LISTEN_CLIENT_URLS=https://$IP:2379
ETCD_ADVERTISE_CLIENT_URLS=https://$IP:2379
ETCD_LISTEN_PEER_URLS=https://$IP:2380
ETCD_INITIAL_ADVERTISE_PEER_URLS=https://$IP:2380
ETCD_INITIAL_CLUSTER=$INITIAL_CLUSTER
ETCD_INITIAL_CLUSTER_STATE=new
ETCD_INITIAL_CLUSTER_TOKEN=pgha-etcd
ETCD_CLIENT_CERT_AUTH=true
ETCD_TRUSTED_CA_FILE=$PKI/ca.crt
ETCD_CERT_FILE=$PKI/$NAME.crt
ETCD_KEY_FILE=$PKI/$NAME.key
ETCD_PEER_CLIENT_CERT_AUTH=true
ETCD_PEER_TRUSTED_CA_FILE=$PKI/ca.crt
ETCD_PEER_CERT_FILE=$PKI/$NAME.crt
ETCD_PEER_KEY_FILE=$PKI/$NAME.key
ETCD_AUTH_TOKEN=jwt,pub-key=$PKI/jwt.pub,priv-key=$PKI/jwt.key,sign-method=ES256,ttl=10m
ETCD_BCRYPT_COST=4
ETCD_PRE_VOTE=true
EOF
chmod 600 "$ETCD_ENV_FILE"
"""

# Once the members run: a root user, and a pgha user whose role may read and write only
# under /pgha/; then authentication on.  etcdctl reads each new password twice on stdin.
ETCD_AUTH = """\
export ETCDCTL_API=3 ETCDCTL_ENDPOINTS="$ENDPOINTS" ETCDCTL_CACERT="$PKI/ca.crt" \\
  ETCDCTL_CERT="$PKI/admin.crt" ETCDCTL_KEY="$PKI/admin.key"
etcdctl endpoint health
printf '%s\\n%s\\n' "$ROOT_PASSWORD" "$ROOT_PASSWORD" | etcdctl user add root
etcdctl user grant-role root root
printf '%s\\n%s\\n' "$PGHA_PASSWORD" "$PGHA_PASSWORD" | etcdctl user add pgha
etcdctl role add pgha
etcdctl role grant-permission pgha --prefix=true readwrite /pgha/
etcdctl user grant-role pgha pgha
etcdctl auth enable
"""

# Anyone may check the cluster's health; the member list needs a user.
ETCD_CHECK = """\
export ETCDCTL_API=3 ETCDCTL_ENDPOINTS="$ENDPOINTS" ETCDCTL_CACERT="$PKI/ca.crt" \\
  ETCDCTL_CERT="$PKI/admin.crt" ETCDCTL_KEY="$PKI/admin.key"
etcdctl endpoint health
printf '%s\\n' "$ROOT_PASSWORD" | etcdctl --user root member list
"""

# On each database host, once its agent runs.
PGHA_CHECK = """\
pgha -c "$PGHA_CONFIG" list
"""

# On one host of the primary site, once: the permanent physical slot the second site's standby leader
# streams through (pgha keeps it on every member that could be promoted, so a failover keeps it).
SITE_SLOT = """\
pgha -c "$PGHA_CONFIG" edit-config --force -s "slots.$SLOT.type=physical"
"""

# On a host of the standby site: it becomes a primary cluster (its standby leader promotes).
PROMOTE_CLUSTER = """\
pgha -c "$PGHA_CONFIG" promote-cluster --force
"""

# On a host of the primary site: it becomes a standby cluster of the other site, streaming from
# whichever of SOURCE_HOSTS ("h1:p1,h2:p2") runs as primary, through the slot SLOT there.
DEMOTE_CLUSTER = """\
pgha -c "$PGHA_CONFIG" demote-cluster --force --host "$SOURCE_HOSTS" --slot "$SLOT"
"""

# Between the two: wait until the site being promoted (TO_DSN, its standby leader) has replayed
# all the demoted site wrote (FROM_DSN, its leader, a replica since demote-cluster returned).
SITE_CAUGHT_UP = """\
FROM_LSN=$(psql "$FROM_DSN" -Atc "SELECT pg_last_wal_replay_lsn()")
until [ "$(psql "$TO_DSN" -Atc "SELECT pg_last_wal_replay_lsn() >= '$FROM_LSN'")" = t ]; do
  sleep 0.1
done
"""

STEPS: dict[str, str] = {
    "ca": CA,
    "cert": CERT,
    "etcd-env": ETCD_ENV,
    "etcd-auth": ETCD_AUTH,
    "etcd-check": ETCD_CHECK,
    "pgha-check": PGHA_CHECK,
    "site-slot": SITE_SLOT,
    "promote-cluster": PROMOTE_CLUSTER,
    "demote-cluster": DEMOTE_CLUSTER,
    "site-caught-up": SITE_CAUGHT_UP,
}

# The environment variables each step reads (the guide sets them before each block).
STEP_INPUTS: dict[str, tuple[str, ...]] = {
    "ca": ("PKI",),
    "cert": ("PKI", "NAME", "SUBJECT", "SAN"),
    "etcd-env": ("ETCD_ENV_FILE", "NAME", "DATA_DIR", "IP", "INITIAL_CLUSTER", "PKI"),
    "etcd-auth": ("ENDPOINTS", "PKI", "ROOT_PASSWORD", "PGHA_PASSWORD"),
    "etcd-check": ("ENDPOINTS", "PKI", "ROOT_PASSWORD"),
    "pgha-check": ("PGHA_CONFIG", "PATH"),
    "site-slot": ("PGHA_CONFIG", "PATH", "SLOT"),
    "promote-cluster": ("PGHA_CONFIG", "PATH"),
    "demote-cluster": ("PGHA_CONFIG", "PATH", "SOURCE_HOSTS", "SLOT"),
    "site-caught-up": ("FROM_DSN", "TO_DSN"),
}


class StepError(Exception):
    """A step failed: one line naming it and where its output is."""


def run_step(name: str, inputs: Mapping[str, str], log: str, prefix: Sequence[str] = (),
             timeout: float = 60.0) -> str:
    """Run step ``name`` with bash -eu (inside ``prefix``, e.g. `ip netns exec NS`), its inputs
    in the environment; append its output to ``log`` and return its stdout."""
    missing = [k for k in STEP_INPUTS[name] if k not in inputs]
    if missing:
        raise StepError(f"step {name}: missing input {', '.join(missing)}")
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), **inputs}
    try:
        res = subprocess.run([*prefix, "bash", "-euo", "pipefail", "-c", STEPS[name]], env=env,
                             capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise StepError(f"step {name} of docs/multi-host.md did not finish in {timeout:.0f}s; see {log}") from None
    with open(log, "a") as fh:
        fh.write(f"--- step {name}\n{res.stdout}{res.stderr}")
    if res.returncode != 0:
        raise StepError(f"step {name} of docs/multi-host.md failed (exit {res.returncode}); see {log}")
    return res.stdout


def read_env_file(path: str) -> dict[str, str]:
    """KEY=VALUE lines (what systemd's EnvironmentFile= reads; no quoting is used here)."""
    env: dict[str, str] = {}
    with open(path) as fh:
        for line in fh:
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                key, value = line.split("=", 1)
                env[key] = value
    return env
