#!/usr/bin/env bash
# A jail inside a jail: the outer jail's CMD (root, --user root) runs another jail.
#
#   outer jail netns                 inner jail netns
#   +--------------------------+     +----------------------------------+
#   | inner authproxy --dial-> | <-- | curl http://api.example.com (nobody)
#   +--------------------------+     +----------------------------------+
#        | outer authproxy (host netns): dns.remap -> fake upstream 127.0.0.1:$up_PORT
#
# In the outer jail's mount namespace /etc/resolv.conf, /etc/nsswitch.conf and the CA
# bundle are binds of files removed once its CMD started; the kernel refuses to mount
# over such a file (ENOENT). The inner jail used to fail there, status 125, saying
# "cannot replace /etc/nsswitch.conf: No such file or directory" of a file that is
# there. It must either work or say why; it works: the outer's rule applies to what
# the inner sends. The inner proxy dials the outer's synthetic addresses
# (198.18.0.0/15), which a proxy never dials unless its config allows them.
. "$(dirname "$0")/lib.sh"

export TMPDIR=$T/jailtmp
mkdir -p "$TMPDIR"
start_upstream up
cat > "$T/outer.json" <<EOF2
{ "rules": [ { "name": "api", "allow_plain_http": true, "match_hosts": ["api.example.com"],
    "headers": [ { "name": "X-Outer", "type": "plaintext", "value": "yes" } ] } ],
  "dns": { "remap": { "api.example.com": "127.0.0.1:$up_PORT" } } }
EOF2
echo '{ "egress": { "allow": ["198.18.0.0/15"] } }' > "$T/inner.json"

rc=0
out=$(jail --user root --config "$T/outer.json" -- "$AUTHPROXY" jail --user nobody \
  --config "$T/inner.json" -- \
  sh -c 'curl -sS -o /dev/null -w "%{http_code}\n" http://api.example.com/nested; exit 4' \
  2> "$T/nested.log") || rc=$?
assert_eq "$rc" 4 "status of the inner jail's CMD, through both jails ($(cat "$T/nested.log"))"
assert_eq "$out" 200 "HTTP status the inner CMD got"
assert_eq "$(upq up 'hdr(reqs[-1], "X-Outer")')" "$(jlist yes)" "the outer jail's header"

# Without that allow entry the inner proxy refuses, and its answer names the range
# and the way to open it (it used to list loopback, link-local and multicast only).
body=$(jail --user root --config "$T/outer.json" -- "$AUTHPROXY" jail --user nobody -- \
  curl -sS http://api.example.com/nested 2> "$T/nested2.log") || true
assert_contains "$body" '"blocked_address"' "the inner proxy's refusal ($(cat "$T/nested2.log"))"
assert_contains "$body" '198.18.0.0/15' "the refusal names the synthetic range"
assert_contains "$body" 'egress allow entry' "the refusal says what opens it"
assert_eq "$(ls -A "$TMPDIR")" "" "files the jails left"
pass "a jail inside a jail runs, and the outer jail's rules apply to it"
