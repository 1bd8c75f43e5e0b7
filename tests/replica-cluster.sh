#!/usr/bin/env bash
# Starts or stops a private primary and streaming standby on loopback, for the read
# replica test (api/tests/replica.rs) and for trying DATABASE_READ_URL by hand. It never
# touches any other cluster.
#
# Usage:
#   tests/replica-cluster.sh start DIR   create both clusters under DIR (which must not
#                                        exist) and print PRIMARY_URL=... and
#                                        STANDBY_URL=... on standard output
#   tests/replica-cluster.sh stop DIR    stop both clusters and delete DIR
#
# The primary runs with wal_level=replica. The standby is a pg_basebackup of it with
# standby.signal and primary_conninfo (pg_basebackup -R), on the next free port. Ports
# are searched from REPLICA_TEST_PORT (default 54320) upwards. When run as root, the
# clusters run as the postgres system user, because postgres refuses to run as root.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/postgres.sh
source "$REPO_ROOT/scripts/postgres.sh"

readonly MAX_PORT_TRIES=50
readonly READY_TIMEOUT_SECONDS=30

# Prints the first port from $1 upwards that nothing listens on, trying at most
# MAX_PORT_TRIES ports.
free_port() {
    local port=$1 tries
    for ((tries = 0; tries < MAX_PORT_TRIES; tries++)); do
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            printf '%s\n' "$port"
            return 0
        fi
        port=$((port + 1))
    done
    pg_fail "no free port in $1..$port on 127.0.0.1; set REPLICA_TEST_PORT to another range"
}

# Runs pg_ctl for the cluster in data directory $1 with the remaining arguments.
cluster_ctl() {
    local data=$1
    shift
    pg_as_owner "$PG_BIN_DIR/pg_ctl" -D "$data" "$@"
}

start() {
    local dir=$1 primary_port standby_port
    [[ ! -e $dir ]] || pg_fail "$dir already exists; give a new directory"
    PG_BIN_DIR=$(pg_server_bin_dir) ||
        pg_fail "initdb was not found; install the postgresql package"

    mkdir -p "$dir/socket"
    if ((EUID == 0)); then
        chown -R postgres: "$dir"
    fi

    primary_port=$(free_port "${REPLICA_TEST_PORT:-54320}")
    pg_as_owner "$PG_BIN_DIR/initdb" -D "$dir/primary" -U postgres --auth=trust \
        >"$dir/initdb.log" 2>&1 || pg_fail "initdb failed; see $dir/initdb.log"
    cat >>"$dir/primary/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $primary_port
unix_socket_directories = '$dir/socket'
wal_level = replica
max_wal_senders = 4
EOF
    cluster_ctl "$dir/primary" -l "$dir/primary.log" -w -t "$READY_TIMEOUT_SECONDS" start \
        >/dev/null || pg_fail "the primary did not start; see $dir/primary.log"

    standby_port=$(free_port $((primary_port + 1)))
    pg_as_owner "$PG_BIN_DIR/pg_basebackup" -h 127.0.0.1 -p "$primary_port" -U postgres \
        -D "$dir/standby" -R -X stream >"$dir/basebackup.log" 2>&1 ||
        pg_fail "pg_basebackup failed; see $dir/basebackup.log"
    printf 'port = %s\n' "$standby_port" >>"$dir/standby/postgresql.conf"
    cluster_ctl "$dir/standby" -l "$dir/standby.log" -w -t "$READY_TIMEOUT_SECONDS" start \
        >/dev/null || pg_fail "the standby did not start; see $dir/standby.log"

    printf 'PRIMARY_URL=postgres://postgres@127.0.0.1:%s/postgres\n' "$primary_port"
    printf 'STANDBY_URL=postgres://postgres@127.0.0.1:%s/postgres\n' "$standby_port"
}

stop() {
    local dir=$1 cluster
    [[ -d $dir ]] || pg_fail "$dir does not exist"
    PG_BIN_DIR=$(pg_server_bin_dir) ||
        pg_fail "pg_ctl was not found; install the postgresql package"
    # The standby first, so that it does not log the primary's disappearance.
    for cluster in standby primary; do
        if [[ -f $dir/$cluster/postmaster.pid ]]; then
            cluster_ctl "$dir/$cluster" -m fast -w stop >/dev/null ||
                pg_log "stopping the $cluster in $dir failed; see $dir/$cluster.log"
        fi
    done
    rm -rf "$dir"
}

case ${1:-} in
start | stop)
    [[ $# -eq 2 ]] || pg_fail "usage: $0 start|stop DIR"
    "$1" "$(realpath -m "$2")"
    ;;
*)
    pg_fail "usage: $0 start|stop DIR"
    ;;
esac
