# shellcheck shell=bash
#
# PostgreSQL for ./dev, which sources this file after `set -euo pipefail` and
# sets REPO_ROOT. `pg_ensure test|demo` finds a server and exports
# DATABASE_URL, in this order:
#   1. DATABASE_URL as given, if a server accepts connections there.
#   2. The local server on 127.0.0.1:5432, if user postgres can log in
#      without a password (trust authentication).
#   3. A private cluster under .data/ on 127.0.0.1:$REFERRALS_PG_PORT
#      (default 5433), created and started on demand. When the PostgreSQL
#      server programs are missing, they are installed with apt-get.
# Every message goes to stderr, so that `./dev env` prints only exports.

PG_PRIVATE_PORT_DEFAULT=5433
PG_LOCAL_SERVER_URL="postgres://postgres@127.0.0.1:5432"
PG_PRIVATE_HOST="127.0.0.1"
PG_CHECK_TIMEOUT_SECONDS=3
PG_START_TIMEOUT_SECONDS=60

pg_log() {
    printf '%s\n' "$*" >&2
}

pg_fail() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# Prints URL with the password, if any, replaced by ***.
pg_redact_url() {
    sed -E 's#^([A-Za-z][A-Za-z0-9+.-]*://[^:/@]*):[^@/]*@#\1:***@#' <<<"$1"
}

# Prints the newest /usr/lib/postgresql/<version>/bin directory that contains
# PROGRAM (the Debian and Ubuntu layout), or returns 1 when there is none.
pg_debian_bin_dir() {
    local program=$1 path newest=""

    while IFS= read -r path; do
        if [[ -x $path ]]; then
            newest=${path%/*}
        fi
    done < <(printf '%s\n' /usr/lib/postgresql/*/bin/"$program" | sort -V)

    [[ -n $newest ]] || return 1
    printf '%s\n' "$newest"
}

# Appends the Debian directory of psql and pg_isready to PATH when either is
# missing from PATH.
pg_add_client_tools_to_path() {
    local dir

    if command -v psql >/dev/null && command -v pg_isready >/dev/null; then
        return 0
    fi
    if dir=$(pg_debian_bin_dir psql); then
        export PATH="$PATH:$dir"
    fi
}

# Succeeds when a server accepts connections at URL. Stores the first line of
# the check's output in PG_CHECK_OUTPUT for messages.
pg_is_reachable() {
    local url=$1 output

    if command -v pg_isready >/dev/null; then
        if output=$(pg_isready -t "$PG_CHECK_TIMEOUT_SECONDS" -d "$url" 2>&1); then
            PG_CHECK_OUTPUT=${output%%$'\n'*}
            return 0
        fi
        PG_CHECK_OUTPUT="pg_isready: ${output%%$'\n'*}"
        return 1
    fi

    if command -v psql >/dev/null; then
        pg_can_log_in "$url"
        return
    fi

    PG_CHECK_OUTPUT="neither pg_isready nor psql is installed"
    return 1
}

# Succeeds when psql can log in at URL and run a query without a password
# prompt. Stores the first line of psql's error in PG_CHECK_OUTPUT.
pg_can_log_in() {
    local url=$1 output

    if output=$(PGCONNECT_TIMEOUT=$PG_CHECK_TIMEOUT_SECONDS \
        psql -X -w -q -d "$url" -c 'select 1' 2>&1 >/dev/null); then
        PG_CHECK_OUTPUT=""
        return 0
    fi
    PG_CHECK_OUTPUT=${output%%$'\n'*}
    return 1
}

# Sets PG_SERVER_URL to the local server on port 5432 when user postgres can
# use it without a password, or returns 1.
pg_use_local_server() {
    local url="$PG_LOCAL_SERVER_URL/postgres"

    if ! pg_is_reachable "$url"; then
        return 1
    fi

    # A server that accepts connections may still demand a password, as the
    # Debian package's own cluster does for TCP connections. The tests would
    # then fail to log in, so check a real login when psql is available.
    if command -v psql >/dev/null && ! pg_can_log_in "$url"; then
        pg_log "The PostgreSQL server on 127.0.0.1:5432 accepts connections, but user" \
            "postgres could not log in without a password ($PG_CHECK_OUTPUT);" \
            "using a private cluster instead."
        return 1
    fi

    pg_log "Using the PostgreSQL server on 127.0.0.1:5432."
    PG_SERVER_URL=$PG_LOCAL_SERVER_URL
}

# Prints the private cluster's port: REFERRALS_PG_PORT, or 5433 when unset.
pg_private_port() {
    local port=${REFERRALS_PG_PORT:-$PG_PRIVATE_PORT_DEFAULT}

    if [[ ! $port =~ ^[0-9]+$ ]] || ((10#$port < 1 || 10#$port > 65535)); then
        pg_fail "invalid REFERRALS_PG_PORT=$port: expected a TCP port from 1 to 65535." \
            "Set it to a free port or unset it to use $PG_PRIVATE_PORT_DEFAULT."
    fi
    printf '%s\n' "$((10#$port))"
}

# Runs a command as the owner of the private cluster: the current user, or
# the postgres system user when running as root, because initdb and postgres
# exit with an error when run as root. The command runs in / so that an unreadable current
# directory does not stop it.
pg_as_owner() {
    if ((EUID != 0)); then
        (cd / && "$@")
    elif command -v runuser >/dev/null; then
        (cd / && runuser -u postgres -- "$@")
    else
        (cd / && su -s /bin/bash postgres -c "$(printf '%q ' "$@")")
    fi
}

# Runs a command as root, through sudo when the current user is not root.
pg_as_root() {
    if ((EUID == 0)); then
        "$@"
    else
        sudo "$@"
    fi
}

# Installs the Debian or Ubuntu postgresql package, which contains initdb,
# pg_ctl, postgres and the client tools, and creates the postgres system user.
pg_install_server() {
    local missing="the PostgreSQL server programs (initdb, pg_ctl, postgres) were not found"

    if ! command -v apt-get >/dev/null; then
        pg_fail "$missing, and apt-get is not available to install them." \
            "Install the PostgreSQL server with your package manager," \
            "or set DATABASE_URL to a running server, then run this command again."
    fi
    if ((EUID != 0)) && ! command -v sudo >/dev/null; then
        pg_fail "$missing, and installing them needs root but sudo is not available." \
            "Run 'apt-get update && apt-get install -y postgresql' as root," \
            "or set DATABASE_URL to a running server, then run this command again."
    fi

    pg_log "Installing the postgresql package with apt-get because $missing."
    if ! pg_as_root env DEBIAN_FRONTEND=noninteractive apt-get update >&2 ||
        ! pg_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql >&2; then
        pg_fail "apt-get failed to install postgresql (see its output above)." \
            "Install the package yourself, or set DATABASE_URL to a running server."
    fi
}

# Prints the directory of initdb, pg_ctl and postgres, or returns 1 when
# initdb is neither on PATH nor in /usr/lib/postgresql/*/bin. pg_ctl is taken
# from the directory of initdb so that both come from the same version.
pg_server_bin_dir() {
    local initdb_path

    if initdb_path=$(command -v initdb); then
        initdb_path=$(readlink -f "$initdb_path")
        printf '%s\n' "${initdb_path%/*}"
        return 0
    fi
    pg_debian_bin_dir initdb
}

# Sets PG_BASE_DIR, the directory for the private cluster's data directory,
# socket directory and log: .data/ in the repository when the server can use
# it, else a directory in /var/tmp named after the user id and repository path.
pg_choose_base_dir() {
    local repo_base="$REPO_ROOT/.data" reason="" path_hash
    # Unix socket paths are limited to 107 bytes on Linux, and the socket
    # adds "/socket/.s.PGSQL.<port>" (at most 22 bytes) to the base.
    local max_base_length=$((107 - 22))

    if [[ ! $repo_base =~ ^[A-Za-z0-9_./-]+$ ]]; then
        reason="the path $repo_base contains characters other than letters, digits, '_', '.', '/' and '-'"
    elif ((${#repo_base} > max_base_length)); then
        reason="the path $repo_base is longer than $max_base_length bytes, too long for the server's Unix socket"
    elif ((EUID == 0)) && ! pg_as_owner test -x "$REPO_ROOT"; then
        reason="user postgres cannot enter $REPO_ROOT"
    fi

    if [[ -z $reason ]]; then
        PG_BASE_DIR=$repo_base
        return 0
    fi

    path_hash=$(printf '%s' "$REPO_ROOT" | cksum | cut -d' ' -f1)
    PG_BASE_DIR="/var/tmp/referrals-postgres-$(id -u)-$path_hash"
    pg_log "Keeping the private PostgreSQL cluster in $PG_BASE_DIR because $reason."
}

# Creates the directories and log file of the private cluster and gives them
# to the cluster owner.
pg_prepare_dirs() {
    mkdir -p "$PG_BASE_DIR" "$PG_DATA_DIR" "$PG_SOCKET_DIR"
    touch "$PG_LOG_FILE"

    if ((EUID == 0)); then
        # User postgres must be able to enter the base directory even under a
        # restrictive umask.
        chmod a+x "$PG_BASE_DIR"
        chown postgres: "$PG_DATA_DIR" "$PG_SOCKET_DIR" "$PG_LOG_FILE"
    fi
    chmod 700 "$PG_DATA_DIR"

    if ! pg_as_owner test -w "$PG_SOCKET_DIR"; then
        pg_fail "user $PG_OWNER cannot write to $PG_SOCKET_DIR." \
            "Make every parent directory of $PG_BASE_DIR enterable by $PG_OWNER (chmod a+x)."
    fi
}

# Fails when the data directory belongs to another user or contains files
# but no cluster.
pg_check_data_dir() {
    local dir_owner

    if [[ ! -d $PG_DATA_DIR ]]; then
        return 0
    fi

    dir_owner=$(stat -c %U "$PG_DATA_DIR")
    if [[ $dir_owner != "$PG_OWNER" ]]; then
        pg_fail "the private cluster $PG_DATA_DIR belongs to user $dir_owner, but ./dev" \
            "runs the server as $PG_OWNER. Run ./dev as the user that created the cluster," \
            "or stop that cluster and delete $PG_DATA_DIR to create a new one."
    fi

    if [[ ! -f $PG_DATA_DIR/PG_VERSION ]] && [[ -n $(ls -A "$PG_DATA_DIR") ]]; then
        pg_fail "$PG_DATA_DIR is not empty but contains no PostgreSQL cluster (PG_VERSION is missing)," \
            "probably from an interrupted initdb. Delete $PG_DATA_DIR and run this command again."
    fi
}

# Creates the private cluster with trust authentication and superuser
# postgres, so that the URL postgres://postgres@127.0.0.1:<port> works for
# every local user.
pg_init_cluster() {
    pg_log "Creating a private PostgreSQL cluster in $PG_DATA_DIR (log: $PG_LOG_FILE)."
    if ! pg_as_owner "$PG_BIN_DIR/initdb" -D "$PG_DATA_DIR" -U postgres \
        --auth=trust --encoding=UTF8 --no-locale >>"$PG_LOG_FILE" 2>&1; then
        pg_log "Last lines of $PG_LOG_FILE:"
        tail -n 20 "$PG_LOG_FILE" >&2
        pg_fail "initdb failed to create $PG_DATA_DIR (see the log lines above)." \
            "Delete $PG_DATA_DIR and run this command again."
    fi
}

# Starts the stopped private cluster on 127.0.0.1:PORT, with its socket in
# PG_SOCKET_DIR so that it does not use the system's socket directory.
pg_start_cluster() {
    local port=$1

    if pg_is_reachable "postgres://$PG_PRIVATE_HOST:$port"; then
        pg_fail "another server already listens on $PG_PRIVATE_HOST:$port, so the private" \
            "cluster cannot start there. Set REFERRALS_PG_PORT to a free port."
    fi

    pg_log "Starting a private PostgreSQL cluster in $PG_DATA_DIR on $PG_PRIVATE_HOST:$port (log: $PG_LOG_FILE)."
    # pg_ctl passes -o through a shell. That is safe because the base
    # directory contains only [A-Za-z0-9_./-] (see pg_choose_base_dir).
    if ! pg_as_owner "$PG_BIN_DIR/pg_ctl" -D "$PG_DATA_DIR" -l "$PG_LOG_FILE" \
        -w -t "$PG_START_TIMEOUT_SECONDS" \
        -o "-h $PG_PRIVATE_HOST -p $port -k $PG_SOCKET_DIR" start >&2; then
        pg_log "Last lines of $PG_LOG_FILE:"
        tail -n 20 "$PG_LOG_FILE" >&2
        pg_fail "the private PostgreSQL cluster in $PG_DATA_DIR failed to start (see the log lines above)."
    fi

    pg_log "Stop it with: $PG_STOP_COMMAND"
}

# Creates, starts or reuses the private cluster and sets PG_SERVER_URL.
pg_use_private_cluster() {
    local port running_port

    port=$(pg_private_port)

    if ! PG_BIN_DIR=$(pg_server_bin_dir); then
        pg_install_server
        pg_add_client_tools_to_path
        if ! PG_BIN_DIR=$(pg_server_bin_dir); then
            pg_fail "initdb is still missing after installing postgresql." \
                "Add the directory of initdb and pg_ctl to PATH, then run this command again."
        fi
    fi
    if [[ ! -x $PG_BIN_DIR/pg_ctl ]]; then
        pg_fail "pg_ctl was not found next to initdb in $PG_BIN_DIR." \
            "Install the complete PostgreSQL server package."
    fi

    PG_OWNER=$(id -un)
    if ((EUID == 0)); then
        if ! id postgres >/dev/null 2>&1; then
            pg_fail "running as root, but the system user postgres, which would own the" \
                "private cluster, does not exist. Create it (useradd --system postgres)" \
                "or run ./dev as a non-root user."
        fi
        PG_OWNER=postgres
    fi

    pg_choose_base_dir
    PG_DATA_DIR="$PG_BASE_DIR/postgres"
    PG_SOCKET_DIR="$PG_BASE_DIR/socket"
    PG_LOG_FILE="$PG_BASE_DIR/postgres.log"
    PG_STOP_COMMAND="$PG_BIN_DIR/pg_ctl -D $PG_DATA_DIR stop"
    if ((EUID == 0)); then
        PG_STOP_COMMAND="runuser -u postgres -- $PG_STOP_COMMAND"
    fi

    pg_check_data_dir
    pg_prepare_dirs
    if [[ ! -f $PG_DATA_DIR/PG_VERSION ]]; then
        pg_init_cluster
    fi

    # pg_ctl status exits with 0 when the server is running.
    if pg_as_owner "$PG_BIN_DIR/pg_ctl" -D "$PG_DATA_DIR" status >/dev/null 2>&1; then
        # Line 4 of postmaster.pid is the port of the running server.
        running_port=$(sed -n 4p "$PG_DATA_DIR/postmaster.pid")
        if [[ $running_port != "$port" ]]; then
            pg_fail "the private cluster in $PG_DATA_DIR is running on port $running_port," \
                "not on REFERRALS_PG_PORT=$port. Stop it ($PG_STOP_COMMAND)" \
                "or set REFERRALS_PG_PORT=$running_port."
        fi
        pg_log "Using the private PostgreSQL cluster in $PG_DATA_DIR on $PG_PRIVATE_HOST:$port."
    else
        pg_start_cluster "$port"
    fi

    PG_SERVER_URL="postgres://postgres@$PG_PRIVATE_HOST:$port"
    if ! pg_is_reachable "$PG_SERVER_URL/postgres"; then
        pg_fail "the private cluster in $PG_DATA_DIR is running but does not accept" \
            "connections on $PG_PRIVATE_HOST:$port ($PG_CHECK_OUTPUT). See $PG_LOG_FILE."
    fi
}

# Ensures a PostgreSQL server for PURPOSE and exports DATABASE_URL. For
# "test" the URL names the postgres database, from which each test creates
# its own database. For "demo" it names the referrals database, which the
# demo creates when it is missing. A DATABASE_URL that is already set and
# reachable is used as is for both.
pg_ensure() {
    local purpose=$1 database

    case $purpose in
    test) database=postgres ;;
    demo) database=referrals ;;
    *) pg_fail "invalid purpose '$purpose' for pg_ensure: expected test or demo." ;;
    esac

    pg_add_client_tools_to_path

    if [[ -n ${DATABASE_URL:-} ]]; then
        if pg_is_reachable "$DATABASE_URL"; then
            pg_log "Using DATABASE_URL=$(pg_redact_url "$DATABASE_URL")."
            export DATABASE_URL
            return 0
        fi
        pg_log "DATABASE_URL=$(pg_redact_url "$DATABASE_URL") is not reachable" \
            "($PG_CHECK_OUTPUT); using a private cluster instead." \
            "Unset DATABASE_URL or point it to a running server to avoid this."
        pg_use_private_cluster
    elif ! pg_use_local_server; then
        pg_use_private_cluster
    fi

    export DATABASE_URL="$PG_SERVER_URL/$database"
}
