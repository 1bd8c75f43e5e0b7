#!/usr/bin/env bash
# Hostile input: runs Schemathesis against /openapi.json of a fresh `referrals serve` with
# a valid session token, and fails on any 5xx response or any response that does not
# match the OpenAPI document (status code, content type or body schema).
#
# Usage: tests/schemathesis.sh [MAX_EXAMPLES] [MAX_SECONDS]   (defaults 20 and 300)
#   MAX_EXAMPLES  test cases per operation
#   MAX_SECONDS   time budget of the whole Schemathesis run
# Environment:
#   DATABASE_URL    a PostgreSQL server where the role may create databases (required)
#   REFERRALS_BIN   the binary to test; default: built here with cargo
#
# Schemathesis is installed with pip into .data/venv on the first run. The script creates
# a database of its own and drops it at the end, and sends requests to 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."

max_examples=${1:-20}
max_seconds=${2:-300}
for value in "$max_examples" "$max_seconds"; do
    if [[ ! $value =~ ^[1-9][0-9]*$ ]]; then
        echo "error: MAX_EXAMPLES and MAX_SECONDS must be positive whole numbers, not '$value'" >&2
        exit 2
    fi
done
if [[ -z ${DATABASE_URL:-} ]]; then
    echo 'error: DATABASE_URL is not set; run eval "$(./dev env)" first' >&2
    exit 2
fi

# Schemathesis 4 has the command-line options used below.
venv=$PWD/.data/venv
if [[ ! -x $venv/bin/st ]]; then
    echo "installing Schemathesis into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet 'schemathesis>=4.32,<5'
fi

binary=${REFERRALS_BIN:-}
if [[ -z $binary ]]; then
    cargo build --quiet -p referrals-api --bin referrals
    binary=$(realpath "${CARGO_TARGET_DIR:-target}/debug/referrals")
fi

work=$(mktemp -d)
database="referrals_schemathesis_$(date +%s)_$$"
export DATABASE_URL="${DATABASE_URL%/*}/$database"
REFERRALS_MASTER_KEY=$(python3 -c 'import base64, os; print(base64.b64encode(os.urandom(32)).decode())')
export REFERRALS_MASTER_KEY
server_pid=""

cleanup() {
    if [[ -n $server_pid ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    psql -q "${DATABASE_URL%/*}/postgres" \
        -c "DROP DATABASE IF EXISTS \"$database\" WITH (FORCE)" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

"$binary" migrate >/dev/null

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
BIND_ADDR="127.0.0.1:$port" RUST_LOG=warn "$binary" serve 2>"$work/server.log" &
server_pid=$!
for _ in $(seq 1 100); do
    curl -sf "$base/healthz" >/dev/null 2>&1 && break
    sleep 0.2
done
curl -sf "$base/healthz" >/dev/null || {
    echo "error: the server did not start; its log:" >&2
    cat "$work/server.log" >&2
    exit 1
}

# An agency whose admin has every agency role, so that every route is reachable.
email="admin.$$@example.com"
password="a long passphrase for schemathesis"
created=$("$binary" agency create --name "Schemathesis Staffing" --admin-email "$email")
json() { python3 -c "import json, sys; print(json.load(sys.stdin)$1)"; }
invite_token=$(json '["invite_token"]' <<<"$created")
user_id=$(json '["admin_user_id"]' <<<"$created")
accepted=$(curl -sf "$base/v1/auth/invitations/accept" -H 'content-type: application/json' \
    -d "{\"invite_token\": \"$invite_token\", \"password\": \"$password\"}")
secret=$(json '["totp_secret"]' <<<"$accepted")
# TOTP (RFC 6238): HMAC-SHA1 over the 30-second step, six digits.
code=$(python3 - "$secret" <<'EOF'
import base64, hashlib, hmac, struct, sys, time
secret = sys.argv[1].upper()
key = base64.b32decode(secret + "=" * (-len(secret) % 8))
digest = hmac.new(key, struct.pack(">Q", int(time.time()) // 30), hashlib.sha1).digest()
offset = digest[-1] & 15
print(f"{(struct.unpack('>I', digest[offset:offset + 4])[0] & 0x7FFFFFFF) % 1000000:06d}")
EOF
)
session=$(curl -sf "$base/v1/auth/sessions" -H 'content-type: application/json' \
    -d "{\"email\": \"$email\", \"password\": \"$password\", \"totp\": \"$code\"}")
token=$(json '["token"]' <<<"$session")
curl -sf -X PUT "$base/v1/users/$user_id/roles" -H "authorization: Bearer $token" \
    -H 'content-type: application/json' \
    -d '{"roles": ["agency_admin", "recruiter", "payout_approver", "analyst", "compliance_auditor"]}' \
    >/dev/null

# Signing out would revoke the token for every later case, so that operation is left out.
# Schemathesis runs in the temporary directory because it writes a cache where it runs.
status=0
cd "$work"
"$venv/bin/st" run "$base/openapi.json" \
    --header "Authorization: Bearer $token" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
    --exclude-path /v1/auth/sessions/current \
    --phases examples,coverage,fuzzing \
    --max-examples "$max_examples" \
    --max-time "$max_seconds" \
    --request-timeout 30 \
    --workers 1 \
    --seed "${SCHEMATHESIS_SEED:-1}" \
    --generation-database none \
    --report junit --report-dir "$work/report" \
    --no-color || status=$?

if grep -q '"level":"ERROR"' "$work/server.log"; then
    echo "server errors during the run:" >&2
    grep '"level":"ERROR"' "$work/server.log" | head -20 >&2
    status=1
fi
exit "$status"
