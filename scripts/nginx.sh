#!/usr/bin/env bash
# A throwaway nginx for tests and benchmarks: a round-robin load balancer on
# 127.0.0.1:PORT in front of app instances on 127.0.0.1:UPSTREAM_PORT..., set up for the
# app's Server-Sent Events (nothing buffered, long reads). Its config, pid, logs and temp
# files all live in DIR. Debian's nginx package (scripts/setup.sh --test).
#   scripts/nginx.sh start DIR PORT UPSTREAM_PORT...   write DIR/nginx.conf, start nginx and
#                                                      wait until PORT accepts connections;
#                                                      prints the URL on stdout (logs to stderr)
#   scripts/nginx.sh stop DIR                          stop nginx and delete DIR
# The upstreams need not be up yet: a request meanwhile gets 502 from nginx.
set -euo pipefail

NGINX=${NGINX:-/usr/sbin/nginx}
if [ ! -x "$NGINX" ]; then
  echo "nginx.sh: nginx is not installed (run scripts/setup.sh --test)" >&2
  exit 1
fi

usage() {
  echo "usage: scripts/nginx.sh start DIR PORT UPSTREAM_PORT... | stop DIR" >&2
  exit 2
}

is_port() { [[ $1 =~ ^[0-9]+$ ]] && [ "$1" -ge 1 ] && [ "$1" -le 65535 ]; }

# Whether process $1 still runs. A daemon's parent is init, and an init that is slow to
# reap (as in some containers) leaves the exited process a zombie that `kill -0` still
# finds for a second or two: a zombie counts as gone.
running() {
  local state
  state=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
  [[ $state != Z* ]]
}

# Stops the nginx whose master pid is in DIR/nginx.pid, if it still runs. SIGTERM, the
# fast stop: a graceful one (SIGQUIT, `nginx -s quit`) would wait for every open event
# stream to end, and there is nothing here worth waiting for. SIGKILL after 10 s.
stop_server() {
  local pidfile=$1/nginx.pid pid workers
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 100); do
    running "$pid" || return 0
    sleep 0.1
  done
  echo "nginx.sh: nginx $pid did not stop in 10 s; killing it and its workers" >&2
  # Workers outlive a killed master: find them while they are still its children.
  workers=$(pgrep -P "$pid" || true)
  # shellcheck disable=SC2086 # one pid per word
  kill -KILL "$pid" $workers 2>/dev/null || true
}

write_config() {
  local dir=$1 port=$2 worker_connections=$3
  shift 3
  {
    echo "# Written by scripts/nginx.sh; deleted by \`scripts/nginx.sh stop $dir\`."
    if [ "$(id -u)" -eq 0 ]; then
      # Started as root, nginx runs its workers as `nobody`, which cannot enter DIR
      # (0700, and maybe under other private directories). With the config below that
      # goes unnoticed, since nothing is buffered to disk; but turn buffering on (say, to
      # compare in a benchmark) and every request body larger than the memory buffer is
      # answered 500 ("Permission denied" on DIR/tmp/client_body). This nginx only
      # listens on loopback in front of our own test servers: its workers stay root.
      echo "user root root;"
    fi
    cat <<EOF
worker_processes auto;
daemon on;
pid $dir/nginx.pid;
error_log $dir/error.log warn;

events {
    worker_connections $worker_connections;
}

http {
    log_format upstream '\$remote_addr [\$time_local] "\$request" \$status \$body_bytes_sent '
                        'upstream=\$upstream_addr upstream_status=\$upstream_status '
                        'time=\$request_time';
    access_log $dir/access.log upstream;

    client_body_temp_path $dir/tmp/client_body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;

    # Round robin, nginx's default method: no ip_hash, no sticky sessions, so consecutive
    # requests of one client land on different instances. max_fails=0: an instance that
    # refused a connection (not started yet, restarting) is not benched for 10 s (the
    # default), so the rotation stays predictable once all instances are up; a refused
    # connection still moves the request on to the next instance. The zone puts the
    # rotation in shared memory: without it each worker process keeps its own, and
    # consecutive requests (taken by different workers) may hit the same instance.
    upstream streamai {
        zone streamai 64k;
EOF
    local upstream
    for upstream in "$@"; do
      echo "        server 127.0.0.1:$upstream max_fails=0;"
    done
    cat <<EOF
        # Idle HTTP/1.1 connections kept open to the instances, per worker.
        keepalive 32;
        keepalive_timeout 30s;
    }

    server {
        listen 127.0.0.1:$port;

        # The app enforces its own body limit (max_body_bytes in Leptos.toml) with its
        # own error answer; nginx's 1 MiB default must not cut in before it.
        client_max_body_size 16m;

        location / {
            proxy_pass http://streamai;

            # HTTP/1.1 with an empty Connection header: keepalive to the upstreams, and
            # chunked event streams pass through.
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # The client's Host, port included: the app checks Origin against it.
            proxy_set_header Host \$http_host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;

            # Server-Sent Events: every byte goes on as it comes, both ways, and a quiet
            # stream is not cut after nginx's default 60 s.
            proxy_buffering off;
            proxy_cache off;
            proxy_request_buffering off;
            proxy_read_timeout 300s;
            proxy_send_timeout 300s;
            proxy_connect_timeout 5s;

            # nginx's default, spelled out: on a connection error or timeout the request
            # moves on to the next instance, but a POST already sent is never retried
            # (no non_idempotent), so a message is never submitted twice.
            proxy_next_upstream error timeout;
        }
    }
}
EOF
  } >"$dir/nginx.conf"
}

case "${1:-}" in
  start)
    [ $# -ge 4 ] || usage
    dir=$(realpath -m "$2")
    port=$3
    shift 3
    for p in "$port" "$@"; do
      is_port "$p" || { echo "nginx.sh: not a port: $p" >&2; exit 2; }
    done
    if [ -e "$dir" ]; then
      echo "nginx.sh: $dir already exists; stop it first (scripts/nginx.sh stop $dir)" >&2
      exit 1
    fi
    mkdir -p "$dir/tmp"
    chmod 700 "$dir"

    # Many open event streams: two descriptors each (client + upstream). Raise the
    # descriptor limit to the hard limit (inherited by nginx) and size the workers to it.
    hard=$(ulimit -Hn)
    if [ "$hard" = unlimited ]; then hard=65536; fi
    ulimit -n "$hard" 2>/dev/null || true
    nofile=$(ulimit -n)
    worker_connections=$((nofile > 8256 ? 8192 : nofile - 64))
    if [ "$worker_connections" -lt 256 ]; then worker_connections=256; fi

    write_config "$dir" "$port" "$worker_connections" "$@"
    # -e: the log for what goes wrong before nginx.conf is read.
    if ! "$NGINX" -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" >&2; then
      # (nginx has already said why on stderr.)
      echo "nginx.sh: nginx did not start" >&2
      stop_server "$dir"
      rm -rf "$dir"
      exit 1
    fi
    # With `daemon on` the command returns once the port is bound, but the daemon writes
    # its pid file a moment later: wait (up to 10 s) for both the pid file (which `stop`
    # needs) and a connection.
    for _ in $(seq 100); do
      if [ -s "$dir/nginx.pid" ] && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "http://127.0.0.1:$port"
        exit 0
      fi
      sleep 0.1
    done
    echo "nginx.sh: nginx did not accept connections on 127.0.0.1:$port within 10 s; its log:" >&2
    cat "$dir/error.log" >&2 || true
    stop_server "$dir"
    rm -rf "$dir"
    exit 1
    ;;
  stop)
    [ $# -eq 2 ] || usage
    dir=$(realpath -m "$2")
    stop_server "$dir"
    rm -rf "$dir"
    ;;
  *) usage ;;
esac
