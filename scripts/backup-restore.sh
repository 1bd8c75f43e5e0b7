#!/usr/bin/env bash
# Backs up a Staffing Referrals database with pg_dump, restores it into a new database,
# and checks the copy: `referrals audit verify` must pass, and `referrals projections
# rebuild` must reproduce every read model row for row. The restored read models are
# first caught up with `referrals projections catch-up`, because a dump taken while the
# workers run contains read models some events behind the event store.
#
# Usage: scripts/backup-restore.sh SOURCE_URL [RESTORE_DATABASE]
#
#   SOURCE_URL        PostgreSQL URL of the database to back up.
#   RESTORE_DATABASE  name of the database to create on the same server; it must not
#                     exist. Default: the source name with _restore_<UTC time> appended.
#
# Environment:
#   REFERRALS_BIN       the referrals binary (default: `referrals` on PATH)
#   BACKUP_FILE         where to write the dump (default: a file in a temporary
#                       directory, removed at exit)
#   KEEP_RESTORED=1     keep the restored database; by default it is dropped at exit
#   PG_BIN              directory of pg_dump, pg_restore and psql (default: PATH)
#
# The dump is in pg_dump's custom format (-Fc), restored with --no-owner. Grants and
# row-level security policies name the referrals_bi role. Roles belong to the cluster,
# so pg_dump does not copy them. On a new server, create referrals_bi before restoring
# (`referrals migrate` on any empty database there creates it), and recreate each
# agency's BI login role with pg_dumpall --roles-only or by hand.
#
# A dump still contains the data keys of people erased after it was taken, so keep
# dumps for at most seven days (see the README's Backups section).
#
# Exits 0 when every check passes and 1 with a reason on standard error otherwise.
set -euo pipefail

fail() {
    printf 'backup-restore: %s\n' "$*" >&2
    exit 1
}

log() {
    printf 'backup-restore: %s\n' "$*" >&2
}

[[ $# -ge 1 && $# -le 2 ]] || fail "usage: $0 SOURCE_URL [RESTORE_DATABASE]"
source_url=$1
referrals=${REFERRALS_BIN:-referrals}
pg_bin=${PG_BIN:+$PG_BIN/}

command -v "$referrals" >/dev/null ||
    fail "the referrals binary $referrals was not found; set REFERRALS_BIN"
for program in pg_dump pg_restore psql; do
    command -v "${pg_bin}${program}" >/dev/null ||
        fail "${pg_bin}${program} was not found; install the PostgreSQL client or set PG_BIN"
done

# Split SOURCE_URL into the server part and the database name, dropping any query
# string from the name. The restored database lives on the same server.
server_url=${source_url%/*}
source_database=${source_url##*/}
source_database=${source_database%%\?*}
[[ -n $source_database && $server_url != "$source_url" ]] ||
    fail "SOURCE_URL $source_url does not end in /DATABASE"
query=""
[[ $source_url == *\?* ]] && query="?${source_url#*\?}"
restore_database=${2:-${source_database}_restore_$(date -u +%Y%m%d%H%M%S)}
[[ $restore_database =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] ||
    fail "RESTORE_DATABASE $restore_database is not a plain identifier; use letters, digits and _"
restore_url="${server_url}/${restore_database}${query}"
admin_url="${server_url}/postgres${query}"

work_dir=$(mktemp -d)
backup_file=${BACKUP_FILE:-$work_dir/referrals.dump}
created=0
cleanup() {
    if [[ $created == 1 && ${KEEP_RESTORED:-0} != 1 ]]; then
        "${pg_bin}psql" -q -X "$admin_url" \
            -c "DROP DATABASE IF EXISTS \"$restore_database\" WITH (FORCE)" >/dev/null ||
            log "dropping $restore_database failed; drop it by hand"
    fi
    rm -rf "$work_dir"
}
trap cleanup EXIT

# Prints "schema.table sha256" for every table in the read model schemas, hashing its
# rows as text in sorted order so that row order on disk does not matter.
hash_read_models() {
    local url=$1 table digest
    local tables
    tables=$("${pg_bin}psql" -X -At "$url" -c "
        SELECT format('%I.%I', table_schema, table_name)
          FROM information_schema.tables
         WHERE table_schema IN ('read_models', 'analytics') AND table_type = 'BASE TABLE'
         ORDER BY 1")
    [[ -n $tables ]] || fail "no tables in the read_models and analytics schemas of $url"
    while IFS= read -r table; do
        digest=$("${pg_bin}psql" -X -At "$url" \
            -c "COPY (SELECT t::text FROM $table AS t ORDER BY 1) TO STDOUT" |
            sha256sum | cut -d' ' -f1)
        printf '%s %s\n' "$table" "$digest"
    done <<<"$tables"
}

log "dumping $source_database to $backup_file"
"${pg_bin}pg_dump" -Fc --no-owner -f "$backup_file" "$source_url"

log "restoring into new database $restore_database"
"${pg_bin}psql" -q -X -v ON_ERROR_STOP=1 "$admin_url" \
    -c "CREATE DATABASE \"$restore_database\"" >/dev/null
created=1
"${pg_bin}pg_restore" --no-owner --exit-on-error -d "$restore_url" "$backup_file"

log "verifying the hash chain of the restored events"
DATABASE_URL=$restore_url "$referrals" audit verify --full ||
    fail "audit verify failed on the restored database $restore_database"

log "applying the events the restored read models had not reached at the dump"
DATABASE_URL=$restore_url "$referrals" projections catch-up >/dev/null ||
    fail "projections catch-up failed on the restored database $restore_database"
hash_read_models "$restore_url" >"$work_dir/before"
log "rebuilding every read model of the restored database"
DATABASE_URL=$restore_url "$referrals" projections rebuild >/dev/null
hash_read_models "$restore_url" >"$work_dir/after"

if ! diff -u "$work_dir/before" "$work_dir/after" >&2; then
    fail "the rebuilt read models differ from the restored and caught-up ones (tables marked above)"
fi
tables=$(wc -l <"$work_dir/before")
log "ok: audit verify passed and the rebuild reproduced all $tables read model tables"
