"""Major-version upgrades of the running cluster (``pgha upgrade --to-bin-dir DIR``).

``record`` (the DCS keys' values), ``keys`` (reading and writing them), ``checks`` (the pre-flight
on one member), ``steps`` (pg_upgrade and the data directories on one member), ``worker`` (the
agent's thread that carries out its member's part), ``bindir`` (the bin_dir an upgrade left).
"""
