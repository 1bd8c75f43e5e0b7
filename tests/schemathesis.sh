#!/usr/bin/env bash
# Hostile input: loads the demo data set into a fresh database, serves it with
# `referrals demo`, and runs Schemathesis against its /openapi.json with a valid session
# token and real ids in the path parameters. Fails on any 5xx response or any response
# that does not match the OpenAPI document (status code, content type or body schema).
#
# Usage: tests/schemathesis.sh [MAX_EXAMPLES] [MAX_SECONDS]   (defaults 20 and 300)
#   MAX_EXAMPLES  test cases per operation
#   MAX_SECONDS   time budget of the whole Schemathesis run
# Environment:
#   DATABASE_URL        a PostgreSQL server where the role may create databases (required)
#   REFERRALS_BIN       the binary to test; default: built here with cargo
#   DEMO_SCALE          size of the demo data set, default 0.01 (loads in seconds);
#                       1 is the full data set of 12,000 referrals
#   SCHEMATHESIS_SEED   seed of the generated cases, default 1
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
scale=${DEMO_SCALE:-0.01}
if [[ ! $scale =~ ^[0-9]*\.?[0-9]+$ ]]; then
    echo "error: DEMO_SCALE must be a positive number such as 0.01, not '$scale'" >&2
    exit 2
fi
if [[ -z ${DATABASE_URL:-} ]]; then
    echo 'error: DATABASE_URL is not set; run eval "$(./dev env)" first' >&2
    exit 2
fi

# Schemathesis 4 has the command-line options and configuration file used below.
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

# `referrals demo` migrates, loads the data set, then serves with its workers. It writes
# its logins to .data/ under the directory it runs in, so it runs in the temporary one.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
(cd "$work" && BIND_ADDR="127.0.0.1:$port" RUST_LOG=warn exec "$binary" demo --scale "$scale") \
    >"$work/demo.log" 2>"$work/server.log" &
server_pid=$!
# Waits up to ten minutes: loading takes seconds at scale 0.01 and about six minutes at 1.
for _ in $(seq 1 1200); do
    curl -sf "$base/healthz" >/dev/null 2>&1 && break
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.5
done
curl -sf "$base/healthz" >/dev/null || {
    echo "error: the demo server did not start; its output and log:" >&2
    cat "$work/demo.log" "$work/server.log" >&2
    exit 1
}

json() { python3 -c "import json, sys; print(json.load(sys.stdin)$1)"; }

# Signs in as the demo login of role $1 and prints the session token. Roles that need MFA
# send the current TOTP code of their secret (RFC 6238: HMAC-SHA1 over the 30-second
# step, six digits).
sign_in() {
    python3 - "$work/.data/demo-logins.json" "$1" <<'PYTHON' |
import base64, hashlib, hmac, json, struct, sys, time
stored = json.load(open(sys.argv[1]))
login = next(login for login in stored["logins"] if login["role"] == sys.argv[2])
body = {"email": login["email"], "password": login["password"]}
if login["totp_secret"]:
    secret = login["totp_secret"].upper()
    key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    digest = hmac.new(key, struct.pack(">Q", int(time.time()) // 30), hashlib.sha1).digest()
    offset = digest[-1] & 15
    code = (struct.unpack(">I", digest[offset:offset + 4])[0] & 0x7FFFFFFF) % 1000000
    body["totp"] = f"{code:06d}"
print(json.dumps(body))
PYTHON
        curl -sf "$base/v1/auth/sessions" -H 'content-type: application/json' -d @- |
        json '["token"]'
}

# Sends GET $1 with the admin's token and prints the response body.
get() { curl -sf "$base$1" -H "authorization: Bearer $token"; }

# The demo admin gets every agency role, so that every route of the agency is reachable.
token=$(sign_in agency_admin)
admin_id=$(get /v1/me | json '["user_id"]')
curl -sf -X PUT "$base/v1/users/$admin_id/roles" -H "authorization: Bearer $token" \
    -H 'content-type: application/json' \
    -d '{"roles": ["agency_admin", "recruiter", "payout_approver", "analyst", "compliance_auditor"]}' \
    >/dev/null

# Real ids for the path parameters, so that cases get past the 404 of an unknown id. The
# user operations get the analyst, not the admin: deactivating or demoting the admin
# would turn every later case into a 401 or 403.
first_id() { get "$1" | json '["items"][0]["id"]'; }
referral_id=$(first_id '/v1/referrals?status=hired&limit=1')
ambassador_id=$(first_id '/v1/ambassadors?limit=1')
# An open program, so that submissions to it can succeed.
program_id=$(get /v1/programs | python3 -c 'import json, sys
items = json.load(sys.stdin)["items"]
print(next((item for item in items if item.get("status") == "open"), items[0])["id"])')
payout_id=$(first_id '/v1/payouts?limit=1')
analyst_id=$(curl -sf "$base/v1/me" -H "authorization: Bearer $(sign_in analyst)" |
    json '["user_id"]')

# Schemathesis uses a parameter set here in every case it generates for the operation.
cat >"$work/schemathesis.toml" <<TOML
# Request bodies that name a program, an ambassador or a recruiter get real ones.
[parameters]
"body.program_id" = "$program_id"
"body.ambassador_id" = "$ambassador_id"
"body.recruiter_id" = "$admin_id"

[[operations]]
include-path-regex = '^/v1/referrals/\{id\}'
parameters = { "path.id" = "$referral_id" }

[[operations]]
include-path-regex = '^/v1/ambassadors/\{id\}'
parameters = { "path.id" = "$ambassador_id" }

[[operations]]
include-path-regex = '^/v1/programs/\{id\}'
parameters = { "path.id" = "$program_id" }

[[operations]]
include-path-regex = '^/v1/payouts/\{id\}'
parameters = { "path.id" = "$payout_id" }

[[operations]]
include-path-regex = '^/v1/users/\{id\}'
parameters = { "path.id" = "$analyst_id" }

[[operations]]
include-path-regex = '^/v1/audit/\{aggregate_type\}/\{id\}'
parameters = { "path.aggregate_type" = "referral", "path.id" = "$referral_id" }
TOML

# Signing out would revoke the token for every later case, so that operation is left out.
# Schemathesis runs in the temporary directory because it writes a cache where it runs.
status=0
cd "$work"
"$venv/bin/st" --config-file "$work/schemathesis.toml" run "$base/openapi.json" \
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
