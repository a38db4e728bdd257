"""`pgha probe`: measure what a client sees of a PostgreSQL service, write by write.

Every interval the probe runs a health check, a SELECT and an autocommit INSERT of
``(run_id, seq)`` into a probe table.  An INSERT that returned successfully, in time, is
an *acknowledged* (committed) write.  After the run it reads the table back through the
same DSN and counts the acknowledged writes the final primary does not have.

The module has two halves:

* a pure half (``ProbeStats``, ``ProbeReport``, ``mask_dsn``…) that never reads a clock,
  opens a socket or starts a thread: times are arguments, so tests feed it synthetic data;
* an I/O half (``Probe``, ``probe_each``, ``Watchdog``) that talks to PostgreSQL.

Timeouts are client-side, so they work through any pooler and against a frozen server:

* ``connect_timeout`` bounds each connection attempt (libpq's minimum is 2 s);
* TCP keepalives and ``tcp_user_timeout`` make the kernel give up on a dead peer;
* a ``Watchdog`` thread bounds every statement: at the deadline it sends a cancel request
  (``Connection.cancel_safe``), and if the statement is still not back after a short grace
  (the server may be frozen, so the cancel request itself hangs) it shuts the socket down,
  which wakes the blocked client at once.  A statement the watchdog had to stop counts as
  failed even if it then returned: cancelling a commit that waits for synchronous
  replication makes PostgreSQL return success with a warning, and that is not an
  acknowledgement a client could rely on.
"""

from pgha.probe.client import Probe, Watchdog, probe_each
from pgha.probe.report import (
    DEFAULT_TABLE,
    ProbeError,
    ProbeReport,
    ProbeStats,
    create_table_sql,
    dsn_secrets,
    error_line,
    mask_dsn,
    probe_conninfo,
    safe_dsn,
    scrub,
    table_identifier,
    top_errors,
)

__all__ = [
    "DEFAULT_TABLE",
    "Probe",
    "ProbeError",
    "ProbeReport",
    "ProbeStats",
    "Watchdog",
    "create_table_sql",
    "dsn_secrets",
    "error_line",
    "mask_dsn",
    "probe_conninfo",
    "probe_each",
    "safe_dsn",
    "scrub",
    "table_identifier",
    "top_errors",
]
