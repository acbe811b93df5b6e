#!/usr/bin/env bash
# Method-level egress policy against method-override headers: a POST carrying
# X-HTTP-Method-Override, X-HTTP-Method or X-Method-Override is handled as the method
# it names by Rails (Rack::MethodOverride, on by default), Symfony and Laravel,
# Express's method-override middleware and Google's APIs. A deny on DELETE must not
# be dodged by "POST + X-HTTP-Method-Override: DELETE", nor an allow list without
# DELETE (under default deny) widened by it: each such request is 403 and never
# forwarded. Two override fields that disagree, or a value that is no method, are
# 400 (which one a server obeys is not known). Overrides naming a method the policy
# lets through pass (controls).
# The same for a `_method` query parameter, which Symfony reads on a POST when
# parameter overrides are enabled, as Laravel always enables them, and Express's
# methodOverride('_method') too ("POST /keys/1?_method=DELETE" is routed as
# DELETE), under PHP's reading of the name
# (%-escapes decoded, leading spaces dropped, '.' and ' ' read as '_', a NUL ending it).
#
#   jail: client --nft--> authproxy (in $HNS) --remap--> fake upstream
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/adv_lib.sh"

host_ns_start
hupstream up
cat > "$T/config.json" <<EOF
{ "egress": { "default": "deny",
    "allow": [ "api.example.com", { "hosts": ["ro.example.com"], "methods": ["GET", "POST"] } ],
    "deny": [ { "hosts": ["api.example.com"], "paths": ["/keys/*"], "methods": ["DELETE", "PUT"] } ] },
  "dns": { "remap": { "api.example.com": "127.0.0.1:$up_PORT",
                      "ro.example.com": "127.0.0.1:$up_PORT" } } }
EOF

# CASE HOST METHOD PATH [FIELD VALUE]...: one request each, on its own connection.
deny=(
  "ctl_delete api.example.com DELETE /keys/1"
  "xhmo api.example.com POST /keys/1 X-HTTP-Method-Override DELETE"
  "xhmo_lower api.example.com POST /keys/1 x-http-method-override delete"
  "xhm api.example.com POST /keys/1 X-HTTP-Method DELETE"
  "xmo api.example.com POST /keys/1 X-Method-Override PUT"
  "xhmo_get api.example.com GET /keys/1 X-HTTP-Method-Override DELETE"
  "ro_xhmo ro.example.com POST /x X-HTTP-Method-Override DELETE"
  "ro_ctl_delete ro.example.com DELETE /x"
  "qm api.example.com POST /keys/1?_method=DELETE"
  "qm_lower api.example.com POST /keys/1?_method=delete"
  "qm_later api.example.com POST /keys/1?a=1&_method=PUT"
  "qm_escaped api.example.com POST /keys/1?%5Fmethod=DEL%45TE"
  "qm_php_dot api.example.com POST /keys/1?.method=DELETE"
  "qm_php_space api.example.com POST /keys/1?+%20_method=DELETE"
  "qm_php_nul api.example.com POST /keys/1?_method%00x=DELETE"
  "ro_qm ro.example.com POST /x?_method=DELETE"
)
bad=(
  "two_fields api.example.com POST /public X-HTTP-Method-Override GET X-HTTP-Method DELETE"
  "underscore_pair api.example.com POST /public X-HTTP-Method-Override GET X_HTTP_METHOD PUT"
  "not_a_token api.example.com POST /keys/1 X-HTTP-Method-Override DELETE,GET"
  "qm_two api.example.com POST /public?_method=GET&_method=DELETE"
  "qm_and_field api.example.com POST /public?_method=DELETE X-HTTP-Method-Override GET"
  "qm_not_a_token api.example.com POST /keys/1?_method=DELETE%2CGET"
  "qm_empty api.example.com POST /keys/1?_method="
  "qm_array api.example.com POST /keys/1?_method[]=DELETE"
)
allow=(
  "two_fields_agree api.example.com POST /public X-HTTP-Method-Override DELETE X-Method-Override delete"
  "ctl_post api.example.com POST /keys/1"
  "xhmo_patch api.example.com POST /keys/1 X-HTTP-Method-Override PATCH"
  "xhmo_other_path api.example.com POST /public X-HTTP-Method-Override DELETE"
  "ro_ctl_post ro.example.com POST /x"
  "ro_xhmo_get ro.example.com POST /x X-HTTP-Method-Override GET"
  "qm_patch api.example.com POST /keys/1?_method=PATCH"
  "qm_other_path api.example.com POST /public?_method=DELETE"
  "qm_lookalikes api.example.com POST /keys/1?x_method=DELETE&_methods=PUT&a=_method"
  "qm_agrees api.example.com POST /public?_method=delete X-HTTP-Method-Override DELETE"
)
lines() { local l; for l in "$@"; do echo "$l"; done; }
{ lines "${deny[@]}" "${bad[@]}" "${allow[@]}"; } > "$T/cases.txt"

cat > "$T/client.py" <<'PYEOF'
import socket, sys
sys.path.insert(0, sys.argv[1])
import advlib
for line in open(sys.argv[2]):
    f = line.split()
    case, host, method, path = f[:4]
    extra = "".join("%s: %s\r\n" % (f[i], f[i + 1]) for i in range(4, len(f), 2))
    data = ("%s %s HTTP/1.1\r\nHost: %s\r\nX-Case: %s\r\n%sContent-Length: 0\r\n"
            "Connection: close\r\n\r\n" % (method, path, host, case, extra)).encode()
    advlib.emit(case, **advlib.exchange(socket.gethostbyname(host), 80, data))
PYEOF

hjail --config "$T/config.json" --user nobody -- "$PY" "$T/client.py" "$TOOLS" "$T/cases.txt" > "$T/out.jsonl"
load_results "$T/out.jsonl"

seen() { upq up "len([r for r in reqs if hdr(r, 'X-Case') == ['$1']])"; }

for l in "${deny[@]}"; do
  set -- $l
  assert_contains "$(result "$T/out.jsonl" "$1" status)" " 403 " "$1 ($*): status"
  assert_eq "$(seen "$1")" "0" "$1 ($*): forwarded"
done
pass "${#deny[@]} denied methods, named or overridden, refused and never forwarded"
for l in "${bad[@]}"; do
  set -- $l
  assert_contains "$(result "$T/out.jsonl" "$1" status)" " 400 " "$1 ($*): status"
  assert_eq "$(seen "$1")" "0" "$1 ($*): forwarded"
done
pass "${#bad[@]} ambiguous or malformed overrides refused"
for l in "${allow[@]}"; do
  set -- $l
  assert_contains "$(result "$T/out.jsonl" "$1" status)" " 200 " "$1 ($*): the allowed control"
  assert_eq "$(seen "$1")" "1" "$1 ($*): forwarded"
done
pass "${#allow[@]} allowed requests forwarded"
