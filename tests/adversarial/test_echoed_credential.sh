#!/usr/bin/env bash
# An upstream that quotes an injected credential in its answer does not hand it to the
# sandbox (invariant I3, defense in depth): not the header value as injected
# ("Bearer sk-..."), and not the credential alone either, as an API's error page
# quotes a token it refuses ("invalid token: sk-..."). Every copy is masked with '*'
# of the same length, so the framing holds.
#
#   jail: curl --nft--> authproxy (in-process) --remap--> fake upstream /echo-token
. "$(dirname "$0")/../integration/lib.sh"

start_upstream up
SECRET="sk-echoed-$$-0123456789"
api_config "$SECRET"

out=$(jail --config "$T/config.json" --secrets-dir "$T/secrets" --user nobody -- \
  sh -c 'curl -sS http://api.example.com/echo-token; curl -sS http://api.example.com/echo')
assert_eq "$(upq up 'hdr(reqs[0], "Authorization")')" "$(jlist "Bearer $SECRET")" \
  "the credential the upstream received"
assert_not_contains "$out" "$SECRET" "the secret in the answers"
assert_contains "$out" "invalid token: $(printf '%*s' ${#SECRET} '' | tr ' ' '*')\"" \
  "the quoted credential masked, same length"
assert_contains "$out" "\"Authorization\", \"$(printf '%*s' $((${#SECRET} + 7)) '' | tr ' ' '*')\"" \
  "the echoed header value masked whole"
pass "a credential quoted without its scheme is masked too"
