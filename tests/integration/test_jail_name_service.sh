#!/usr/bin/env bash
# Name lookups in `authproxy jail` reach the proxy's responder, whatever the host's
# name service says. glibc asks nscd (the socket /var/run/nscd/socket) before
# anything else, and then the NSS modules of /etc/nsswitch.conf's hosts line, some of
# which resolve on the host over a Unix socket (Fedora's "resolve", systemd-resolved;
# "mdns4", avahi): CMD shares the host's files, so its lookups went there, got real
# addresses, and carried its names out in the host's DNS. The jail replaced
# resolv.conf only.
#
#   private mount namespace (the "host" the jail runs on)
#     /var/run/nscd/socket  fake nscd: logs each name asked, answers 192.0.2.99
#     /etc/nsswitch.conf    hosts: files resolve [!UNAVAIL=return]   (no dns)
#   jail: getent ahosts NAME   -> must be a synthetic address, nscd never asked
. "$(dirname "$0")/lib.sh"

# The mount point for the fake nscd's directory; only this test's private mount
# namespace mounts anything on it.
created=""
if [ ! -d /run/nscd ]; then
  mkdir /run/nscd
  created=1
fi
CLEANUP_HOOKS+=('[ -n "$created" ] && rmdir /run/nscd 2>/dev/null')

printf 'passwd: files\nhosts: files resolve [!UNAVAIL=return]\nnetworks: files\n' \
  > "$T/nsswitch.conf"
NAME="leak-$$.example"
: > "$T/nscd.jsonl"

out=$(unshare -m --propagation private env T="$T" PY="$PY" TOOLS="$TOOLS" \
  AUTHPROXY="$AUTHPROXY" NAME="$NAME" bash -c '
set -eu
mount -t tmpfs authproxy-test /run/nscd
mount --bind "$T/nsswitch.conf" /etc/nsswitch.conf
"$PY" "$TOOLS/fake_nscd.py" /run/nscd/socket "$T/nscd.jsonl" 192.0.2.99 \
  2> "$T/nscd.log" &
nscd=$!
trap "kill $nscd" EXIT
for i in $(seq 100); do grep -q ready "$T/nscd.jsonl" && break; sleep 0.05; done
grep -q ready "$T/nscd.jsonl"
# The host itself asks the fake nscd: it stands in for one.
getent ahosts "host-$NAME" | head -n 1
"$AUTHPROXY" jail -- sh -c "getent ahosts $NAME | head -n 1; grep -E \"^(hosts|passwd):\" /etc/nsswitch.conf"
' 2> "$T/jail.log")
echo "$out"

assert_contains "$out" "192.0.2.99      STREAM host-$NAME" "the fake nscd answers the host"
case "$out" in
  *"198.1"[89].*" STREAM $NAME"*) ;;
  *) fail "the jail's lookup did not get a synthetic address from the responder: $out" ;;
esac
assert_not_contains "$(cat "$T/nscd.jsonl")" "\"$NAME\"" "the jail's name reached the host's nscd"
pass "a lookup in the jail is answered by the responder, not the host's nscd"
assert_contains "$out" "hosts: files dns" "the jail's hosts line"
assert_contains "$out" "passwd: files" "the host's other lines are kept"
pass "the jail's nsswitch.conf sends host lookups to DNS only"
