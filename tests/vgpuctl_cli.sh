#!/bin/bash
# vgpuctl against a live region: status (text and JSON) shows the limit, the
# bytes used, the compute limit and its budget, and each process; reclaim frees a SIGKILLed process's slot and
# bytes; reset refuses while a process is attached, recounts with --force,
# and zeroes a region nobody uses. Arguments: vgpuctl, region_hold helper.
set -u
ctl=$1 hold=$2
dir=$(mktemp -d /tmp/vgpuctl-test.XXXXXX)
trap 'kill $live $dead 2>/dev/null; rm -rf "$dir"' EXIT
export CUDA_DEVICE_MEMORY_SHARED_CACHE=$dir/r.cache
export CUDA_DEVICE_SM_LIMIT=40
fail() { echo "FAIL: $*"; exit 1; }

"$hold" 100 "$dir/live.ready" & live=$!
"$hold" 200 "$dir/dead.ready" & dead=$!
for i in $(seq 1 100); do [ -e "$dir/live.ready" ] && [ -e "$dir/dead.ready" ] && break; sleep 0.05; done

out=$("$ctl" status) || fail "status"
echo "$out"
echo "$out" | grep -q "^0 .*1024.0 .*300.0" || fail "device 0: limit 1024 MiB, 300 MiB used"
echo "$out" | grep -Eq " $live +[0-9]+ +yes +0:100.0" || fail "live process listed"
echo "$out" | grep -q "^dev 0 compute limit 40%: 0.000 s of GPU time charged" || fail "compute limit shown"
json=$("$ctl" status --json) || fail "status --json"
echo "$json" | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["devices"][0]["used"]==300<<20 and d["devices"][0]["sm_limit"]==40 and len(d["processes"])==2' ||
    fail "JSON"

kill -9 $dead; wait $dead 2>/dev/null
"$ctl" status | grep -Eq " $dead +[0-9]+ +no " || fail "killed process shown dead"
"$ctl" reclaim | grep -q "reclaimed 1 slot" || fail "reclaim"
"$ctl" status --json | grep -q '"used":104857600,' || fail "killed process's 200 MiB returned"

"$ctl" reset && fail "reset must refuse while a process is attached"
"$ctl" reset --force | grep -q "reset done" || fail "reset --force"
"$ctl" status --json | grep -q '"used":104857600,' || fail "--force recounts from live slots"

kill $live; wait $live 2>/dev/null
"$ctl" reset | grep -q "reset done" || fail "reset with nobody attached"
"$ctl" status --json | grep -q '"used":0,' || fail "zero after reset"
"$ctl" --file "$dir/none.cache" status 2>&1 && fail "a missing file is an error"
# Command-line conventions: --help/-h on stdout, exit 0; anything unknown
# is one line on stderr and exit 2.
for h in --help -h "status --help" "--file x -h"; do
    "$ctl" $h >"$dir/out" 2>"$dir/err"; rc=$?
    [ $rc -eq 0 ] && grep -q "^usage: vgpuctl" "$dir/out" && [ ! -s "$dir/err" ] ||
        fail "vgpuctl $h: usage on stdout, exit 0 (rc $rc)"
done
for bad in "" bogus "status --bogus" "--bogus status" "reset --json" \
           "watch --interval" "watch --interval 0" "metrics --label =x" "--file"; do
    "$ctl" $bad >"$dir/out" 2>"$dir/err"; rc=$?
    [ $rc -eq 2 ] && [ "$(wc -l <"$dir/err")" -eq 1 ] && [ ! -s "$dir/out" ] ||
        fail "vgpuctl $bad: one line on stderr, exit 2 (rc $rc: $(cat "$dir/err"))"
done
env=$(CUDA_VISIBLE_DEVICES=1,0 CUDA_DEVICE_MEMORY_LIMIT=lots CUDA_DEVICE_MEMORY_LIMIT_2=2g "$ctl" env 2>/dev/null) ||
    fail "vgpuctl env"
echo "$env"
echo "$env" | grep -Eq "^CUDA_VISIBLE_DEVICES +1,0 " || fail "env: CUDA_VISIBLE_DEVICES as read"
echo "$env" | grep -Eq "^CUDA_DEVICE_MEMORY_LIMIT +lots \(invalid: ignored\)" || fail "env: invalid value marked"
echo "$env" | grep -Eq "^CUDA_DEVICE_MEMORY_LIMIT_2 +2g " || fail "env: per-device limit"
echo "$env" | grep -Eq "^VGPU_REGION_MODE +default \(default\)" || fail "env: default shown"
echo "vgpuctl_cli: ok"
