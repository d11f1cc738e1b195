#!/usr/bin/env bash
# The connector tests run a real PostgreSQL server (Debian's package). Install it when missing.
set -euo pipefail
if command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "PostgreSQL server binaries (initdb, pg_ctl) are missing: apt-get install postgresql" >&2
  exit 1
fi
echo "installing PostgreSQL (Debian package postgresql) for the connector tests ..." >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq postgresql >/dev/null
