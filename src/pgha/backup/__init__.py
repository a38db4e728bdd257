"""Backups with pgBackRest: a repository host reached over TLS, WAL archiving, backups and PITR.

How the pieces fit (docs/operations.md, "Backups and point-in-time recovery"):

- ``settings``: the ``backup:`` section of a node file (and of the repository host's file) and
  ``bootstrap.pgbackrest``, and their checks beyond types (``checks``: the node file's).  Pure.
- ``conffile``: the pgbackrest.conf of a database member (repo1-host over TLS, its own TLS server
  for the repository to reach it) and of the repository host (repo1-path, one pgN-host per
  member).  Every value is checked before it is written.  Pure.
- ``command``: runs ``pgbackrest`` as the PostgreSQL user; every failure is one line.
- ``info``: the backups and the restore window, from ``pgbackrest info --output=json``.  Pure.
- ``archive``: the archive settings pgha gives every member, pushing a former primary's ``.ready``
  segments before it is rewound, and a new primary's copies of earlier timelines' segments.
- ``member``: the agent's ``Archive`` port (pgha.agent.ports): stanza-create, check, pushes.
- ``continuity``: whether the archive has a hole from a backup to the newest segment.  Pure.
- ``keys``: the DCS keys /backup/request, /backup/result, /backup/info.
- ``probe``: a TLS handshake with the repository (``pgha validate``).
- ``repository``: the small pgha process on the repository host (``pgha repository run``).
- ``restore``: point-in-time recovery into a new cluster (``pgha restore``, ``bootstrap.method``).

Where a backup runs: pgBackRest refuses ``backup`` on a host whose repository is remote ("backup
command must be run on the repository host"), so backups run on the repository host.  The CLI and
the API record a backup intent in the DCS; the repository process carries it out with
``backup-standby`` (from a standby when one streams) and publishes the result and a summary of
``pgbackrest info`` back into the DCS, where ``pgha backup list`` and the API read it.
"""
