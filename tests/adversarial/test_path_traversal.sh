#!/usr/bin/env bash
# Path tricks against match_paths and path-level egress denies: dot-segments plain and
# percent-encoded (%2e%2e, .%2e, %2E%2E), encoded slashes and backslashes (%2F, %5C),
# a literal backslash, ";" parameters that Java servers strip ("..;/", "/admin;x"),
# double slashes that nginx merges before resolving dot-segments ("/repos//../x"),
# encoded unreserved letters (/%61dmin), encoded reserved characters that servers
# decode before routing (%3A), a '%' encoded for servers that decode twice (%2561),
# NUL, the query, and letter case and a trailing slash for denies (Express, ASP.NET
# Core and IIS route /ADMIN to /admin; Express and Spring MVC before 6 route /x/ to
# /x). Two directions:
#   - a credential scoped to /repos/* must not be sent with a path that some server
#     resolves outside /repos/ (it is forwarded, but without the header);
#   - a deny on /admin and /admin/* must not be dodged by a spelling that some server
#     resolves to /admin (403, never forwarded).
# Spellings every server resolves inside /repos/ still get the credential (controls).
# Any dot-segment makes a path ambiguous (servers such as Express route before they
# remove them), so even /./repos/x, which RFC 3986 puts inside /repos/, gets none:
# clients remove dot-segments before they send.
#
#   jail: client --nft--> authproxy (in $HNS) --remap--> fake upstream
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/adv_lib.sh"

host_ns_start
hupstream up
SECRET="repo-token-$$"
cat > "$T/config.json" <<EOF
{ "rules": [ { "name": "repos", "allow_plain_http": true, "match_hosts": ["git.example.com"], "match_paths": ["/repos/*"],
    "headers": [ { "name": "Authorization", "type": "plaintext", "value": "token $SECRET" } ] } ],
  "egress": { "default": "allow",
    "deny": [ { "hosts": ["git.example.com"], "paths": ["/admin", "/admin/*", "/models/*:delete"] } ] },
  "dns": { "remap": { "git.example.com": "127.0.0.1:$up_PORT" } } }
EOF

# Request targets, one per line: NAME TARGET. Each is sent on its own connection.
inject=(
  "ctl_plain /repos/x"
  "ctl_unreserved /repos/%78"
  "ctl_query /repos/x?path=../../secret"
)
no_inject=(
  "dot_lead /./repos/x"
  "dotdot /repos/../secret"
  "enc_dotdot /repos/%2e%2e/secret"
  "enc_dotdot_upper /repos/%2E%2E/secret"
  "half_enc_dotdot /repos/.%2e/secret"
  "deep_dotdot /repos/x/../../secret"
  "enc_slash /repos%2F..%2Fsecret"
  "enc_slash_lower /repos/..%2fsecret"
  "backslash /repos/..\\secret"
  "enc_backslash /repos/..%5Csecret"
  "semicolon_dotdot /repos/..;/secret"
  "double_slash_dotdot /repos//../secret"
  "double_slash_lead //repos/x"
  "nul /repos/x%00/../../secret"
)
deny=(
  "deny_plain /admin"
  "deny_sub /admin/users"
  "deny_dotdot /public/../admin"
  "deny_enc_dotdot /public/%2e%2e/admin/users"
  "deny_enc_letter /%61dmin"
  "deny_enc_letter_mid /ad%6Din/users"
  "deny_dot /admin/./users"
  "deny_dotdot_out /admin/../public/x"
  "deny_enc_slash /admin%2Fusers"
  "deny_enc_slash_dotdot /public/..%2Fadmin"
  "deny_semicolon_dotdot /public/..;/admin"
  "deny_double_slash //admin/users"
  "deny_double_slash_mid /public//../admin"
  "deny_semicolon_param /admin;jsessionid=1"
  "deny_semicolon_segment /admin;x/users"
  "deny_nul /admin%00"
  "deny_absolute http://git.example.com/admin/users"
  "deny_colon /models/m:delete"
  "deny_enc_colon /models/m%3Adelete"
  "deny_enc_colon_lower /models/m%3adelete"
  "deny_double_enc /%2561dmin"
  "deny_double_enc_digits /%25%36%31dmin/users"
  "deny_upper /ADMIN"
  "deny_mixed_case_sub /Admin/users"
  "deny_colon_trailing_slash /models/m:delete/"
)
allow=(
  "ctl_public /public/x"
  "ctl_models /models/m:get"
  "ctl_models_enc /models/m%3Aget"
)

lines() { local l; for l in "$@"; do echo "$l"; done; }
{ lines "${inject[@]}" "${no_inject[@]}" "${deny[@]}" "${allow[@]}"; } > "$T/cases.txt"

cat > "$T/client.py" <<'PYEOF'
import socket, sys
sys.path.insert(0, sys.argv[1])
import advlib
addr = socket.gethostbyname("git.example.com")
for line in open(sys.argv[2]):
    case, target = line.split()
    data = ("GET %s HTTP/1.1\r\nHost: git.example.com\r\nX-Case: %s\r\nConnection: close\r\n\r\n"
            % (target, case)).encode()
    advlib.emit(case, **advlib.exchange(addr, 80, data))
PYEOF

hjail --config "$T/config.json" --user nobody -- "$PY" "$T/client.py" "$TOOLS" "$T/cases.txt" > "$T/out.jsonl"
load_results "$T/out.jsonl"

# The Authorization values the upstream received for a case (found by X-Case).
auth() { upq up "[hdr(r, 'Authorization') for r in reqs if hdr(r, 'X-Case') == ['$1']]"; }

for l in "${inject[@]}"; do
  set -- $l
  assert_eq "$(auth "$1")" "[[\"token $SECRET\"]]" "$1 ($2): the credential at the upstream"
done
pass "${#inject[@]} spellings of /repos/x get the credential"

for l in "${no_inject[@]}"; do
  set -- $l
  case "$(auth "$1")" in
    "[[]]") ;;                                   # forwarded without the credential
    "[]")                                        # refused: ambiguous or malformed
      case "$(result "$T/out.jsonl" "$1" status)" in
        *" 400 "*|*" 403 "*) ;;
        *) fail "$1 ($2): not forwarded, yet answered '$(result "$T/out.jsonl" "$1" status)'" ;;
      esac ;;
    *) fail "$1 ($2): the upstream received the credential: $(auth "$1")" ;;
  esac
done
pass "${#no_inject[@]} traversal spellings: never sent with the credential"

for l in "${deny[@]}"; do
  set -- $l
  assert_contains "$(result "$T/out.jsonl" "$1" status)" " 403 " "$1 ($2): status"
  assert_eq "$(auth "$1")" "[]" "$1 ($2): forwarded"
done
for l in "${allow[@]}"; do
  set -- $l
  assert_contains "$(result "$T/out.jsonl" "$1" status)" " 200 " "$1 ($2): the allowed control"
done
pass "${#deny[@]} spellings of /admin denied, none forwarded"
