#!/usr/bin/env bash
# Install what pgha needs on Debian, only what is missing; safe to run again.
set -euo pipefail

packages=(postgresql-15 pgbackrest etcd-server etcd-client zookeeperd pgbouncer haproxy iproute2 iputils-arping python3-venv
          util-linux procps openssl nftables stress-ng
          rsync                      # pgha upgrade brings the replicas to the new major by pg_upgrade's rsync method
          systemd                    # systemd-analyze verify checks packaging/systemd in the tests
          prometheus                 # promtool checks packaging/prometheus alerts.yml in the tests
          chromium chromium-driver)  # the dashboard's browser tests (tests/browser)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "pgha: missing Debian packages: ${missing[*]}; run 'sudo make ${MAKE_TARGET:-demo}' or install them with apt-get" >&2
    exit 1
  fi
  echo "pgha: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Keep the packaged services from starting their own instances (pgha runs its own).
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d.pgha && chmod +x /usr/sbin/policy-rc.d.pgha
  if [ ! -e /usr/sbin/policy-rc.d ]; then cp /usr/sbin/policy-rc.d.pgha /usr/sbin/policy-rc.d; remove_policy=1; fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
  [ "${remove_policy:-0}" = 1 ] && rm -f /usr/sbin/policy-rc.d
  rm -f /usr/sbin/policy-rc.d.pgha
fi
