# Starting and stopping the servers under test, for bench/run.sh and
# bench/curves.sh (sourced; not run by itself). Expects: root, work,
# target_dir, bench, and an array pids for helpers to stop at exit.
#
# Each start_* starts one server with a config written for the run and
# sets: pid, http, publish, and log (its log file, shown when a run fails).

wait_port() {
    for _ in $(seq 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listens on port $1" >&2
    return 1
}

start_cometbox() {
    cat >"$work/cometbox.conf" <<CONF
server.bind = "127.0.0.1"
server.port = 18080
server.workers = 2
server.max-connections = 16000
mailbox.backend-socket = "$work/cometbox.sock"
mailbox.max-messages = 100
CONF
    RUST_LOG=warn "$target_dir/release/cometbox" -c "$work/cometbox.conf" 2>"$work/cometbox.log" &
    pid=$! http=127.0.0.1:18080 publish=$work/cometbox.sock log=$work/cometbox.log
    wait_port 18080
    # The HTTP port listens before the backend socket is bound; and a port
    # held by another process (another run on this machine) would pass
    # wait_port while this gateway has exited.
    for _ in $(seq 100); do [ -S "$work/cometbox.sock" ] && break; sleep 0.05; done
    if ! kill -0 "$pid" 2>/dev/null || [ ! -S "$work/cometbox.sock" ]; then
        echo "cometbox did not start: $(tail -n 3 "$work/cometbox.log")" >&2
        return 1
    fi
}

start_nchan() {
    mkdir -p "$work/nginx"
    sed -e "s#@WORK@#$work/nginx#g" -e "s#@PORT@#18081#g" bench/peers/nginx-nchan.conf.in >"$work/nginx/nginx.conf"
    /usr/sbin/nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" -e "$work/nginx/nginx-error.log" &
    pid=$! http=127.0.0.1:18081 publish=127.0.0.1:18081 log=$work/nginx/nginx-error.log
    wait_port 18081
}

start_pushpin() {
    mkdir -p "$work/pushpin-run" "$work/pushpin-log"
    echo "* 127.0.0.1:18089" >"$work/pushpin-routes"
    sed -e "s#@WORK@#$work#g" -e "s#@PORT@#18082#g" -e "s#@PORT_PUSH_IN@#18085#g" \
        -e "s#@PORT_PUSH_SUB@#18086#g" -e "s#@PORT_PUBLISH@#18087#g" -e "s#@PORT_COMMAND@#18088#g" \
        bench/peers/pushpin.conf.in >"$work/pushpin.conf"
    "$bench" origin --port 18089 2>"$work/origin.log" &
    pids+=($!)
    pushpin --config "$work/pushpin.conf" >"$work/pushpin.out" 2>&1 &
    pid=$! http=127.0.0.1:18082 publish=127.0.0.1:18087 log=$work/pushpin.out
    wait_port 18082
    wait_port 18087
    sleep 1
}

start_floor() {
    # As many writer threads as cometbox has workers (server.workers above).
    "$bench" floor --port 18090 --control "$work/floor.sock" --threads 2 2>"$work/floor.log" &
    pid=$! http=127.0.0.1:18090 publish=$work/floor.sock log=$work/floor.log
    wait_port 18090
    for _ in $(seq 100); do [ -S "$work/floor.sock" ] && break; sleep 0.05; done
}

stop() {
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    sleep 1
}
