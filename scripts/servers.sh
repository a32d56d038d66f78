# shellcheck shell=bash
# Throwaway Redis, Redis Cluster, Redis Sentinel, MariaDB and PostgreSQL servers for
# the stickypool tests.
#
# Usage (by hand, from the repository root):
#
#     source scripts/servers.sh        # installs packages if needed, starts servers
#     cargo test --all-features        # tests read the STICKYPOOL_* variables below
#     exit                             # (or stickypool_servers_stop) stops everything
#
# This file must be *sourced* by bash, not executed: it exports variables into the
# calling shell. scripts/test sources it before running the tests.
#
# What it does:
#   * Installs, with apt-get, those of redis-server, redis-tools, mariadb-server,
#     mariadb-client, postgresql, postgresql-client, libpq-dev, libssl-dev, pkg-config,
#     openssl, prometheus and pgbouncer whose binaries (or libpq's and OpenSSL's
#     headers, or the postgres user) are missing (root only; otherwise it fails
#     with a message naming them). Installed packages are left alone (not
#     upgraded). libpq-dev, libssl-dev and pkg-config are for the build, not the
#     servers: diesel's PostgreSQL backend links libpq and the `tls` feature
#     OpenSSL, so scripts/test sources this file before clippy. openssl makes the
#     test certificates. prometheus is for its promtool,
#     which checks the metrics exposition in tests/metrics.rs.
#   * Creates a temporary directory (mktemp -d) holding all data, logs, pid files
#     and sockets, picks free loopback ports (never fixed ones), and starts, bound
#     to 127.0.0.1 only and without persistence:
#       - one plain redis-server, also serving TLS on a second port,
#       - a Redis Cluster of three masters (no replicas), waiting for
#         cluster_state:ok on every node,
#       - a Redis Sentinel setup: one master, one replica of it and three
#         sentinels (redis-server --sentinel) monitoring it as `stickypool`, quorum
#         2, down-after-milliseconds 1000, failover-timeout 10000, parallel-syncs
#         1; waiting until the replica's link is up and every sentinel knows the
#         master, its replica and the two other sentinels,
#       - a MariaDB server with database `stickypool` and user `stickypool`
#         (password `stickypool-secret`, host 127.0.0.1 and localhost) that has all
#         privileges on stickypool.* plus PROCESS; max_connections is 500,
#         default character set utf8mb4, TLS on (clients may still use plain text),
#       - a PostgreSQL server (the newest /usr/lib/postgresql/*/bin) with database
#         `stickypool` owned by role `stickypool` (password `stickypool-secret`,
#         member of pg_read_all_stats, so it sees every row of pg_stat_activity);
#         scram-sha-256 over TCP (a wrong password is rejected), trust on its unix
#         socket (in <dir>/postgres) for the setup; max_connections is 300, fsync,
#         synchronous_commit and full_page_writes are off; TLS is on, and a role
#         `stickypool_cert` logs in over TLS with its client certificate alone.
#         PostgreSQL refuses to run as root: as root it runs as the `postgres` user
#         of the Debian package (which then may traverse <dir>, mode 711),
#         otherwise as yourself.
#       - a second, separate PostgreSQL pair for the failover test only: a primary
#         (wal_level=replica, role `replicator` allowed to replicate over TCP) and
#         a streaming standby made from it with `pg_basebackup -R`, with the same
#         role, password and database as the server above (logs in
#         <dir>/pgpair/node-<port>/log),
#       - two PgBouncers in front of that first PostgreSQL server (run as the same
#         user; scram-sha-256 with the test user's password), each with databases
#         stickypool_session (pool_mode=session) and stickypool_transaction
#         (pool_mode=transaction, pool_size=2), both the server's `stickypool`:
#         one with PgBouncer's defaults, one with ignore_startup_parameters=options
#         (logs in <dir>/pgbouncer-<port>/log),
#   * Exports:
#       STICKYPOOL_REDIS_URL           redis://127.0.0.1:<port>/
#       STICKYPOOL_REDIS_TLS_URL       rediss://localhost:<tls port>/ (the same server over
#                                      TLS; it asks every client for a certificate)
#       STICKYPOOL_TLS_CA_FILE         <dir>/tls/ca.pem, the test CA that signed the
#                                      servers' certificate (made at start, for the
#                                      name localhost only) and the client's
#       STICKYPOOL_TLS_CERT_FILE,      <dir>/tls/client.pem and client.key: a client
#       STICKYPOOL_TLS_KEY_FILE        certificate for PostgreSQL's role stickypool_cert
#                                      (which logs in by certificate alone) and Redis
#       STICKYPOOL_REDIS_CLUSTER_URLS  redis://127.0.0.1:<p1>/,redis://127.0.0.1:<p2>/,redis://127.0.0.1:<p3>/
#       STICKYPOOL_MYSQL_URL           mysql://stickypool:stickypool-secret@127.0.0.1:<port>/stickypool
#       STICKYPOOL_POSTGRES_URL        postgres://stickypool:stickypool-secret@127.0.0.1:<port>/stickypool
#       STICKYPOOL_SENTINEL_URLS       redis://127.0.0.1:<s1>/,redis://127.0.0.1:<s2>/,redis://127.0.0.1:<s3>/
#       STICKYPOOL_SENTINEL_SERVICE    stickypool (the master name the sentinels monitor)
#       STICKYPOOL_PGBOUNCER_SESSION_URL      postgres://stickypool:stickypool-secret@127.0.0.1:<b1>/stickypool_session
#       STICKYPOOL_PGBOUNCER_TRANSACTION_URL  postgres://stickypool:stickypool-secret@127.0.0.1:<b1>/stickypool_transaction
#       STICKYPOOL_PGBOUNCER_IGNORE_OPTIONS_SESSION_URL,
#       STICKYPOOL_PGBOUNCER_IGNORE_OPTIONS_TRANSACTION_URL
#                                      the same through the second PgBouncer (<b2>)
#       STICKYPOOL_PG_FAILOVER_URL     postgres://stickypool:stickypool-secret@127.0.0.1:<p1>,127.0.0.1:<p2>/stickypool?target_session_attrs=read-write
#                                      (the pair; p1 starts as the primary)
#       STICKYPOOL_PG_FAILOVER_NODES   postgres://...@127.0.0.1:<p1>/stickypool,postgres://...@127.0.0.1:<p2>/stickypool
#       STICKYPOOL_SERVER_CTL          <dir>/ctl, a script tests run to break servers:
#                                        ctl kill S     SIGKILL, wait until gone (S is
#                                                       redis, mysql or postgres;
#                                                       postgres: the postmaster, then
#                                                       wait for its children to exit)
#                                        ctl start S    restart on the same port and
#                                                       data, wait until up
#                                        ctl pause S    SIGSTOP (a hung server)
#                                        ctl resume S   SIGCONT
#                                        ctl kill sentinel-master
#                                                       SIGKILL the Sentinel setup's
#                                                       current master; prints its port
#                                        ctl start sentinel-nodes
#                                                       restart the killed data node;
#                                                       the sentinels make it a replica
#                                        ctl wait sentinel-healthy
#                                                       wait (up to 60 s) until the
#                                                       setup can fail over again
#                                        ctl start postgres-pair
#                                                       make the pair whole: rebuild a
#                                                       stopped node (the old primary
#                                                       after a failover) as a streaming
#                                                       standby of the primary
#                                        ctl failover postgres-pair
#                                                       the same, then stop the primary
#                                                       (fast shutdown), promote the
#                                                       standby, wait until it accepts
#                                                       writes; prints its port
#                                        ctl stop-all   stop every server
#                                      (details in scripts/servers-ctl)
#       STICKYPOOL_SERVERS_DIR         <dir> (logs: <dir>/redis/log, <dir>/mysql/log,
#                                      <dir>/postgres/log, <dir>/sentinel/*/log, ...)
#     The cluster nodes are not covered by `ctl kill/start`.
#   * Each shell gets its own ports and directory, so concurrent runs do not clash.
#     Sourcing it again in the same shell stops the previous servers first.
#   * Stops every server and removes the directory when the shell exits (EXIT trap,
#     appended to any EXIT trap already set), or earlier by calling
#     `stickypool_servers_stop`. If you set your own EXIT trap afterwards, call
#     stickypool_servers_stop from it. A background watchdog also cleans up (within
#     about a second) if the shell dies without running its traps, e.g. on SIGKILL.
#
# Prints one line per server; on failure prints the server's log tail and returns
# non-zero (with `set -e` in the caller, the caller exits and the trap cleans up).
# The servers' own logic lives in scripts/servers-ctl (copied to <dir>/ctl).

_STICKYPOOL_SCRIPTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# Stop the servers started by this shell and remove their directory. Always
# returns 0, so it is safe in an EXIT trap under `set -e`.
stickypool_servers_stop() {
  local dir=${_STICKYPOOL_SERVERS_OWNED_DIR:-}
  _STICKYPOOL_SERVERS_OWNED_DIR=
  if [[ -n $dir && -d $dir ]]; then
    # The watchdog first, so it does not race us; it leads its own process group.
    if [[ -f $dir/watchdog.pid ]]; then
      kill -TERM -- "-$(cat "$dir/watchdog.pid")" 2>/dev/null || true
    fi
    "$dir/ctl" stop-all || true
    rm -rf -- "$dir"
    unset STICKYPOOL_REDIS_URL STICKYPOOL_REDIS_TLS_URL STICKYPOOL_TLS_CA_FILE \
      STICKYPOOL_TLS_CERT_FILE STICKYPOOL_TLS_KEY_FILE STICKYPOOL_REDIS_CLUSTER_URLS STICKYPOOL_MYSQL_URL \
      STICKYPOOL_POSTGRES_URL STICKYPOOL_SENTINEL_URLS STICKYPOOL_SENTINEL_SERVICE \
      STICKYPOOL_SERVER_CTL STICKYPOOL_SERVERS_DIR STICKYPOOL_PG_FAILOVER_URL \
      STICKYPOOL_PG_FAILOVER_NODES STICKYPOOL_PGBOUNCER_SESSION_URL \
      STICKYPOOL_PGBOUNCER_TRANSACTION_URL STICKYPOOL_PGBOUNCER_IGNORE_OPTIONS_SESSION_URL \
      STICKYPOOL_PGBOUNCER_IGNORE_OPTIONS_TRANSACTION_URL
  fi
  return 0
}

# Run apt-get, retrying while another apt/dpkg process holds its locks.
_stickypool_apt_get() {
  local out deadline=$((SECONDS + 600)) said=
  out=$(mktemp)
  # DPkg::Lock::Timeout makes install wait for the dpkg lock; `update` still fails
  # at once on the lists lock, hence the retry loop.
  until DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=600 "$@" >"$out" 2>&1; do
    if ! grep -qiE 'could not get lock|unable to lock|unable to acquire' "$out" ||
      ((SECONDS >= deadline)); then
      echo "stickypool servers: apt-get $* failed:" >&2
      tail -n 30 "$out" >&2
      rm -f "$out"
      return 1
    fi
    [[ -n $said ]] || echo "stickypool servers: waiting for another apt-get to finish" >&2
    said=1
    sleep 0.1
  done
  rm -f "$out"
}

# True if the PostgreSQL server binaries are there: in /usr/lib/postgresql/<version>/bin
# (Debian keeps them off PATH), else on PATH. servers-ctl looks for them the same way.
_stickypool_have_postgres() {
  local dir
  for dir in /usr/lib/postgresql/*/bin; do
    [[ -x $dir/initdb && -x $dir/postgres ]] && return 0
  done
  command -v initdb >/dev/null && command -v postgres >/dev/null
}

# Prints what the servers (and the build: libpq) need and is missing, one
# "WHAT:PACKAGES" a line.
_stickypool_servers_missing() {
  # Local PATH: the server binaries live in /usr/sbin, not on every user's PATH.
  local PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin" bin_package
  for bin_package in redis-server:redis-server redis-cli:redis-tools \
    mariadbd:mariadb-server mariadb-install-db:mariadb-server \
    mariadb:mariadb-client mariadb-admin:mariadb-client \
    psql:postgresql-client pkg-config:pkg-config promtool:prometheus pgbouncer:pgbouncer \
    openssl:openssl; do
    command -v "${bin_package%%:*}" >/dev/null || echo "$bin_package"
  done
  _stickypool_have_postgres || echo "initdb/postgres:postgresql postgresql-client"
  [[ -e /usr/include/postgresql/libpq-fe.h ]] || pkg-config --exists libpq 2>/dev/null ||
    echo "libpq:libpq-dev pkg-config"
  # The `tls` feature builds native-tls, which links OpenSSL.
  pkg-config --exists openssl 2>/dev/null || echo "libssl:libssl-dev pkg-config"
  # PostgreSQL refuses to run as root; as root, servers-ctl runs it as this user.
  ((EUID != 0)) || id -u postgres >/dev/null 2>&1 || echo "user postgres:postgresql"
}

# Installs the packages for what is missing, only those: `apt-get install` would
# also upgrade an installed package it is given.
_stickypool_servers_install() {
  local lines=() line missing=() packages=() package made_policy='' rc=0
  mapfile -t lines < <(_stickypool_servers_missing)
  ((${#lines[@]} > 0)) || return 0
  for line in "${lines[@]}"; do
    missing+=("${line%%:*}")
    read -ra line <<<"${line#*:}"
    for package in "${line[@]}"; do
      [[ " ${packages[*]} " == *" $package "* ]] || packages+=("$package")
    done
  done

  if ((EUID != 0)); then
    echo "stickypool servers: missing ${missing[*]}; install them as root:" >&2
    echo "  apt-get install ${packages[*]}" >&2
    return 1
  fi
  echo "stickypool servers: installing ${packages[*]} (missing: ${missing[*]})" >&2
  # Keep the packages from starting their system-wide services (ports 6379, 3306,
  # 5432): we only need the binaries. policy-rc.d is honoured by invoke-rc.d and
  # deb-systemd-invoke; an existing one (Docker images ship one) is left as is.
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d &&
      made_policy=1
  fi
  _stickypool_apt_get update &&
    _stickypool_apt_get install -y --no-install-recommends "${packages[@]}" || rc=1
  [[ -z $made_policy ]] || rm -f /usr/sbin/policy-rc.d
  ((rc == 0)) || return 1

  mapfile -t lines < <(_stickypool_servers_missing)
  if ((${#lines[@]} > 0)); then
    echo "stickypool servers: still missing after apt-get install: ${lines[*]%%:*}" >&2
    return 1
  fi
}

# Append stickypool_servers_stop to the current EXIT trap (once). It goes last so
# that an existing trap still sees the shell's real exit status in $?.
_stickypool_servers_trap() {
  local current=()
  eval "current=($(trap -p EXIT))" # trap -p prints: trap -- 'COMMANDS' EXIT
  local cmds=${current[2]:-}
  [[ $cmds == *stickypool_servers_stop* ]] && return 0
  # shellcheck disable=SC2064 # expand the previous trap's commands now
  trap "${cmds:+$cmds
}stickypool_servers_stop" EXIT
}

_stickypool_servers_start() {
  local dir shell_pid=$BASHPID

  # Sourced again in the same shell: replace the previous servers.
  stickypool_servers_stop

  _stickypool_servers_install || return 1
  dir=$(mktemp -d "${TMPDIR:-/tmp}/stickypool-servers.XXXXXX") || return 1
  _STICKYPOOL_SERVERS_OWNED_DIR=$dir
  _stickypool_servers_trap
  cp "$_STICKYPOOL_SCRIPTS_DIR/servers-ctl" "$dir/ctl" && chmod 755 "$dir/ctl" || return 1

  # Watchdog: cleans up if this shell dies without running its EXIT trap. Started
  # from a subshell so it is not a job of this shell (a plain `wait` in the caller
  # must not wait for it), in its own session so terminal signals do not reach it.
  (setsid "$dir/ctl" watch "$shell_pid" </dev/null >"$dir/watchdog.log" 2>&1 &)

  "$dir/ctl" start-all || return 1
  # shellcheck source=/dev/null
  source "$dir/env"
}

if _stickypool_servers_start; then
  true
else
  echo "stickypool servers: start failed; stopping what was started" >&2
  stickypool_servers_stop
  false
fi
