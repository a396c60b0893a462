#!/bin/bash
# vgpuctl metrics: the Prometheus text of a live region agrees with the
# region (vgpuctl status --json), printed and served over HTTP to curl;
# the server answers 404/405/431 as it should, outlives a client that
# hangs up, a client that sends too much and one that says nothing.
# Arguments: vgpuctl, region_hold helper.
set -u
ctl=$1 hold=$2
dir=$(mktemp -d /tmp/vgpuctl-metrics.XXXXXX)
trap 'kill $holder $server 2>/dev/null; exec 3>&- ; rm -rf "$dir"' EXIT
export CUDA_DEVICE_MEMORY_SHARED_CACHE=$dir/r.cache
export CUDA_DEVICE_SM_LIMIT=30
fail() { echo "FAIL: $*"; exit 1; }
command -v curl >/dev/null || fail "curl is missing (scripts/install-deps.sh installs it)"
server=
"$hold" 300 "$dir/ready" & holder=$!
for i in $(seq 1 100); do [ -e "$dir/ready" ] && break; sleep 0.05; done

# value NAME FILE: the value of the one series of NAME in a scrape.
value() { awk -v n="$1" 'index($0, n "{") == 1 {print $NF}' "$2"; }
check() { # scrape file: values against the region's own JSON
    used=$("$ctl" status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["devices"][0]["used"])')
    [ "$(value hami_vgpu_memory_used_bytes "$1")" = "$used" ] || fail "used = $used"
    [ "$used" = $((300 << 20)) ] || fail "the region holds 300 MiB"
    [ "$(value hami_vgpu_memory_limit_bytes "$1")" = $((1 << 30)) ] || fail "limit 1 GiB"
    [ "$(value hami_container_device_memory_bytes "$1")" = "$used" ] || fail "container memory = used"
    [ "$(value vgpu_processes "$1")" = 1 ] || fail "1 process"
    [ "$(value vgpu_region_up "$1")" = 1 ] || fail "region up"
    grep -q '^# TYPE hami_vgpu_memory_used_bytes gauge$' "$1" || fail "TYPE line"
    [ "$(value vgpu_compute_limit_percent "$1")" = 30 ] || fail "compute limit 30 %"
    [ "$(value vgpu_compute_charged_nanoseconds_total "$1")" = 0 ] || fail "no GPU time charged"
    grep -q '^# TYPE vgpu_compute_held_nanoseconds_total counter$' "$1" || fail "counter TYPE line"
    grep -q 'hami_vgpu_memory_used_bytes{vdevice_index="0",device_uuid="[^"]*",zone="vGPU"' "$1" ||
        fail "HAMi's labels"
}

"$ctl" metrics >"$dir/printed" || fail "vgpuctl metrics"
cat "$dir/printed"
check "$dir/printed"

"$ctl" metrics --listen 127.0.0.1:0 --label 'pod=train "0"' >"$dir/listen" 2>"$dir/server.err" &
server=$!
for i in $(seq 1 100); do grep -q "^listening on" "$dir/listen" && break; sleep 0.05; done
addr=$(sed -n 's/^listening on //p' "$dir/listen")
[ -n "$addr" ] || fail "server did not say where it listens: $(cat "$dir/server.err")"
url=http://$addr
curl -fsS --max-time 20 "$url/metrics" -o "$dir/scraped" -D "$dir/headers" || fail "curl /metrics"
check "$dir/scraped"
grep -qi '^content-type: text/plain; version=0.0.4' "$dir/headers" || fail "content type"
grep -q 'pod="train \\"0\\""}' "$dir/scraped" || fail "--label escaped"

code() { curl -s --max-time 20 -o /dev/null -w '%{http_code}' "$@"; }
[ "$(code "$url/")" = 404 ] || fail "/ is 404"
[ "$(code -X POST "$url/metrics")" = 405 ] || fail "POST is 405"
[ "$(code -H "X-Big: $(head -c 6000 /dev/zero | tr '\0' a)" "$url/metrics")" = 431 ] ||
    fail "a request over 4 KiB is 431"
[ "$(code -I "$url/metrics")" = 200 ] || fail "HEAD"
# A client that hangs up at once, and one that connects and says nothing:
# the next scrape is still served (the silent one is dropped after 5 s).
(exec 4<>/dev/tcp/${addr%:*}/${addr##*:}) 2>/dev/null
exec 3<>"/dev/tcp/${addr%:*}/${addr##*:}" || fail "connect"
curl -fsS --max-time 20 "$url/metrics" -o "$dir/again" || fail "scrape after a silent client"
check "$dir/again"
kill -0 $server || fail "server died"

# The region gone: served as down, not an error page.
kill $holder; wait $holder 2>/dev/null
rm -f "$CUDA_DEVICE_MEMORY_SHARED_CACHE"
curl -fsS --max-time 20 "$url/metrics" -o "$dir/down" || fail "scrape with no region"
[ "$(value vgpu_region_up "$dir/down")" = 0 ] || fail "region down"
"$ctl" metrics >/dev/null 2>&1 && fail "printing with no region exits 1"
"$ctl" metrics --listen 1.2.3 2>/dev/null; [ $? -eq 2 ] || fail "bad address: exit 2"
echo "vgpuctl_metrics: ok"
