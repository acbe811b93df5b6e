#!/usr/bin/env bash
# The audit log's filesystem fills, empties, and fills again (a 64 KiB tmpfs and a
# file that takes its room). Each time it fills, the daemon's log says so, naming
# the file and the records lost, and says when writing works again; the sandbox is
# served throughout and /metrics counts every record lost. The daemon used to log
# only the first failed write of its life (then every 1000th): a disk that filled
# again later lost records with nothing in the log.
#
#   ap-adf-PID (sandbox)  --curl-->  authproxy serve --log $T/logfs/audit.jsonl
#                                      (tmpfs, 64 KiB)  --> fake upstream
. "$(dirname "$0")/lib.sh"
. "$SRC/tests/adversarial/adv_lib.sh"

start_upstream up
mkdir "$T/logfs"
mount -t tmpfs -o size=64k,mode=700 tmpfs "$T/logfs"
CLEANUP_HOOKS+=("umount -l '$T/logfs'")
LOG=$T/logfs/audit.jsonl
serve_start --log "$LOG"
ns=$(make_netns adf)
cat > "$T/cfg.json" <<EOF
{ "dns": { "remap": { "api.example.com": "127.0.0.1:$up_PORT" } } }
EOF
ctl attach box --netns "/var/run/netns/$ns" --config "$T/cfg.json" > /dev/null

# get N: N requests from the sandbox, each answered 200.
get() {
  local i code
  for ((i = 0; i < $1; i++)); do
    code=$(ip netns exec "$ns" curl -sS -o /dev/null -w '%{http_code}' \
      http://api.example.com/r)
    assert_eq "$code" "200" "a request while the audit log's disk is full or not"
  done
}
# The last page of the log may have room for a few records: 12 requests (24 records,
# about 6 KiB) overflow it.
fill() { dd if=/dev/zero of="$T/logfs/fill" bs=4k 2>/dev/null || true; }
failed() { grep -c "audit log $LOG: write failed: no space left on device" "$T/serve.log" || true; }
again() { grep -c "audit log $LOG: writing again" "$T/serve.log" || true; }

get 2
wait_for "[ \$(wc -l < '$LOG') -ge 4 ]"
fill
get 12
wait_for "[ \$(failed) -eq 1 ]"
rm "$T/logfs/fill"
get 2
wait_for "[ \$(again) -eq 1 ]"
pass "a full disk is logged, naming the file, and so is the end of it"

# A disk that keeps filling and emptying logs a new run of failures at most once a
# second: let that second pass (not a wait for readiness, which is polled).
sleep 1.1

fill
get 12
wait_for "[ \$(failed) -eq 2 ]"
rm "$T/logfs/fill"
get 2
wait_for "[ \$(again) -eq 2 ]"
grep "audit log $LOG" "$T/serve.log"
lost=$(ctl metrics | awk '$1 == "authproxy_audit_dropped_total" { print $2 }')
[ "$lost" -gt 0 ] || fail "authproxy_audit_dropped_total is $lost after two full disks"
pass "the disk filling again is logged again; $lost records lost, all counted"
