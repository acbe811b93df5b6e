#!/usr/bin/env bash
# SSH is relayed, whatever its client's identification string says. An SSH client
# speaks first ("SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u6": the software version, a
# space, a comment, RFC 4253 4.2), and a token followed by a space is what the sniffer
# takes for an HTTP request line: Debian's and Ubuntu's OpenSSH, whose banners carry
# such a comment, got "HTTP/1.1 400 Bad Request" (missing_version) from the proxy,
# and `ssh` / `git clone git@github.com:...` failed with "kex_exchange_identification:
# Connection closed by remote host", with no config at all. An identification string
# is now opaque bytes like any protocol but TLS and HTTP: relayed (a host whose rule
# injects headers too), refused where request-level egress policy applies.
#
#   jail: client (Debian's SSH banner) -> authproxy -> fake SSH server (banner, echo)
. "$(dirname "$0")/lib.sh"

cat > "$T/sshd.py" <<'PYEOF'
import os, socket, sys, threading
ls = socket.socket()
ls.bind(("127.0.0.1", 0))
ls.listen(16)
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(ls.getsockname()[1]))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
def serve(c):
    try:
        c.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")
        c.sendall(b"got " + c.recv(4096))
    except OSError:
        pass
    c.close()
while True:
    threading.Thread(target=serve, args=(ls.accept()[0],), daemon=True).start()
PYEOF
"$PY" "$T/sshd.py" "$T/sshd.port" 2> "$T/sshd.log" &
PIDS+=($!)
wait_for "[ -s '$T/sshd.port' ]"
port=$(cat "$T/sshd.port")
cat > "$T/config.json" <<EOF
{ "rules": [ { "name": "gh", "match_hosts": ["github.com"],
    "headers": [ { "name": "Authorization", "type": "plaintext", "value": "Bearer x" } ] } ],
  "egress": { "deny": [ { "hosts": ["ro.example.com"], "methods": ["POST"] } ] },
  "dns": { "remap": { "github.com": "127.0.0.1:$port", "plain.example.com": "127.0.0.1:$port",
                      "ro.example.com": "127.0.0.1:$port" } } }
EOF
out=$(jail --config "$T/config.json" --log "$T/audit.jsonl" --user nobody -- "$PY" -c '
import socket
for host in ("plain.example.com", "github.com", "ro.example.com"):
    s = socket.create_connection((host, 22), timeout=10)
    try:
        s.sendall(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u6\r\n")
        got = b""
        while got.count(b"\r\n") < 2:
            d = s.recv(4096)
            if not d:
                break
            got += d
        print(host, got.decode(errors="replace").replace("\r\n", " | ").strip())
    except OSError as e:
        print(host, "failed:", type(e).__name__)' 2> "$T/jail.log")
assert_eq "$out" "plain.example.com SSH-2.0-OpenSSH_9.6 | got SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u6 |
github.com SSH-2.0-OpenSSH_9.6 | got SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u6 |
ro.example.com failed: ConnectionResetError" "what the SSH clients got"
assert_eq "$("$PY" -c '
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
print(" ".join("%s:%s:%s" % (r["name"], r["action"], r.get("reason", "-"))
               for r in sorted(recs, key=lambda r: r["conn"]) if r.get("event") == "conn"))' "$T/audit.jsonl")" \
  "plain.example.com:tunnel:- github.com:tunnel:- ro.example.com:deny:uninspectable_protocol" \
  "the connections' records"
pass "an SSH banner with a comment is relayed; refused where request-level policy applies"
