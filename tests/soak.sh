#!/usr/bin/env bash
# Soak: ten minutes of mixed load at a moderate rate against one `referrals serve`,
# sampling its resident memory and its PostgreSQL connections every five seconds, then
# printing whether both stayed flat. Not part of CI, which runs the same test for 20 s.
#
# Usage: tests/soak.sh [SECONDS]   (default 600)
# Needs DATABASE_URL naming a PostgreSQL server where the role may create databases,
# such as postgres://postgres@127.0.0.1:5432/postgres; `./dev env` prints one.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-600}
if [[ ! $seconds =~ ^[0-9]+$ ]]; then
    echo "error: SECONDS must be a whole number, not '$seconds'" >&2
    exit 1
fi
if [[ -z ${DATABASE_URL:-} ]]; then
    echo 'error: DATABASE_URL is not set; run eval "$(./dev env)" first' >&2
    exit 1
fi

SOAK_SECONDS=$seconds SOAK_SAMPLE_SECONDS=${SOAK_SAMPLE_SECONDS:-5} \
    cargo test -p referrals-api --test soak -- --nocapture --test-threads=1
