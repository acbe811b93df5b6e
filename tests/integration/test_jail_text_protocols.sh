#!/usr/bin/env bash
# Protocols whose client opens with a line of text are relayed, not answered as HTTP.
# The sniffer took any token followed by a space for an HTTP request line:
# - SSH: an SSH client speaks first ("SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u6": the
#   software version, a space, a comment, RFC 4253 4.2). Debian's and Ubuntu's
#   OpenSSH, whose banners carry such a comment, got "HTTP/1.1 400 Bad Request"
#   (missing_version), and `ssh` / `git clone git@github.com:...` failed with
#   "kex_exchange_identification: Connection closed by remote host", with no config;
# - git's daemon protocol (git://, "0032git-upload-pack /repo.git\0host=...\0");
# - memcached's text commands ("get key").
# An HTTP method is capitals, '-' and '_' (the only ones the HTTP engine knows); any
# other first token is opaque bytes like any protocol but TLS and HTTP: relayed (a host
# whose rule injects headers too), refused where request-level egress policy applies.
#
#   jail: client (first line) -> authproxy -> fake server (banner, then "got " + echo)
. "$(dirname "$0")/lib.sh"

start_tcp_server sshd --banner 'SSH-2.0-OpenSSH_9.6\r\n' --reply got
port=$sshd_PORT
cat > "$T/config.json" <<EOF
{ "rules": [ { "name": "gh", "match_hosts": ["github.com"],
    "headers": [ { "name": "Authorization", "type": "plaintext", "value": "Bearer x" } ] } ],
  "egress": { "deny": [ { "hosts": ["ro.example.com"], "methods": ["POST"] } ] },
  "dns": { "remap": { "github.com": "127.0.0.1:$port", "plain.example.com": "127.0.0.1:$port",
                      "ro.example.com": "127.0.0.1:$port" } } }
EOF
out=$(jail --config "$T/config.json" --log "$T/audit.jsonl" --user nobody -- "$PY" -c '
import socket
cases = (("plain.example.com", 22, b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u6\r\n"),
         ("github.com", 22, b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u6\r\n"),
         ("ro.example.com", 22, b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u6\r\n"),
         ("plain.example.com", 9418, b"0032git-upload-pack /repo.git\0host=plain.example.com\0\r\n"),
         ("github.com", 11211, b"get key\r\n"),
         ("ro.example.com", 11211, b"get key\r\n"))
for host, port, first in cases:
    s = socket.create_connection((host, port), timeout=10)
    try:
        s.sendall(first)
        got = b""
        while got.count(b"\r\n") < 2:
            d = s.recv(4096)
            if not d:
                break
            got += d
        print(host, port, got.decode(errors="replace").replace("\r\n", " | ").replace("\0", "~").strip())
    except OSError as e:
        print(host, port, "failed:", type(e).__name__)' 2> "$T/jail.log")
assert_eq "$out" "plain.example.com 22 SSH-2.0-OpenSSH_9.6 | got SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u6 |
github.com 22 SSH-2.0-OpenSSH_9.6 | got SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u6 |
ro.example.com 22 failed: ConnectionResetError
plain.example.com 9418 SSH-2.0-OpenSSH_9.6 | got 0032git-upload-pack /repo.git~host=plain.example.com~ |
github.com 11211 SSH-2.0-OpenSSH_9.6 | got get key |
ro.example.com 11211 failed: ConnectionResetError" "what the clients got"
assert_eq "$("$PY" -c '
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
print(" ".join("%s:%s:%s" % (r["name"], r["action"], r.get("reason", "-"))
               for r in sorted(recs, key=lambda r: r["conn"]) if r.get("event") == "conn"))' "$T/audit.jsonl")" \
  "plain.example.com:tunnel:- github.com:tunnel:- ro.example.com:deny:uninspectable_protocol plain.example.com:tunnel:- github.com:tunnel:- ro.example.com:deny:uninspectable_protocol" \
  "the connections' records"
pass "SSH, git and memcached first lines are relayed; refused where request-level policy applies"
