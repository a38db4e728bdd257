#!/usr/bin/env bash
# Patroni 4.1.5 for the migration tests (tests/integration/test_patroni_migration.py), in a venv of the tests'
# own made from Debian's python so that the postgres user can run it, plus Patroni's example configurations
# (postgres0.yml and friends: they ship in Debian's patroni package, not in the wheel or the sdist) for
# tests/unit/test_patroni_import.py.  Safe to run again: it does only what is missing.
set -euo pipefail
venv=${1:-.venv-patroni}
version=4.1.5
stamp="$venv/.installed-$version-3"
examples="$venv/share/patroni-examples"

if [ ! -e "$stamp" ]; then
  test -x "$venv/bin/python" || /usr/bin/python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "patroni[etcd3,psycopg3]==$version" 'psycopg[binary]' \
    prometheus-client pytest  # tests/support/patroni_xcheck.py imports pgha's API and its table test
  # psycopg's binary wheel carries its own libpq; check Patroni can load it and talk to etcd v3.
  "$venv/bin/python" -c 'import psycopg, patroni.dcs.etcd3, patroni.version as v; assert v.__version__ == "'"$version"'"'
  touch "$stamp"
fi

if [ ! -e "$examples/dcs.yml" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && apt-get download -qq patroni 2>/dev/null) || {
    echo "pgha: cannot download Debian's patroni package (for its example configurations); run apt-get update" >&2
    exit 1
  }
  dpkg-deb -x "$tmp"/patroni_*.deb "$tmp/x"
  mkdir -p "$examples"
  for f in "$tmp"/x/usr/share/doc/patroni/examples/postgres*.yml*; do
    case "$f" in
      *.gz) gunzip -c "$f" > "$examples/$(basename "$f" .gz)" ;;
      *) cp "$f" "$examples/" ;;
    esac
  done
  cp "$tmp/x/etc/patroni/config.yml.in" "$tmp/x/etc/patroni/dcs.yml" "$tmp/x/usr/share/doc/patroni/examples/haproxy.cfg" \
     "$examples/"
fi
