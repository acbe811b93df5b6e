#!/usr/bin/env bash
# How fast can an intercepted download be? authproxy opens every record of it with
# the upstream's keys and seals it again with the sandbox's, in mbedTLS 2.28; the
# direct path's ends (nginx, wrk, curl) use OpenSSL. This seals 16 KiB records (TLS's
# largest) with each AEAD both offer for TLS 1.2, in both libraries, on PROXY_CPU
# (default 0) as run.sh pins the proxy. Rounds repeat the set; medians are printed,
# with mbedTLS's speed as a ratio to OpenSSL's and the ceiling it puts on an
# intercepted download through one core (each byte opened and sealed once: half the
# sealing speed, opening being the same work). Needs a C compiler, libmbedtls-dev and
# libssl-dev (installed when missing, as run.sh does).
#
#   scripts/bench/aead.sh [ROUNDS [RECORDS]]   (defaults 5 rounds of 4000 records each)
set -euo pipefail

bench=$(cd "$(dirname "$0")" && pwd)
ROUNDS=${1:-5}
RECORDS=${2:-4000}
PROXY_CPU=${PROXY_CPU:-0}

if [ ! -f /usr/include/openssl/evp.h ] || [ ! -f /usr/include/mbedtls/gcm.h ]; then
  [ "$(id -u)" = 0 ] || { echo "aead.sh: install libssl-dev and libmbedtls-dev" >&2; exit 1; }
  apt-get install -y --no-install-recommends libssl-dev libmbedtls-dev >/dev/null
fi
T=$(mktemp -d /tmp/authproxy-aead.XXXXXX)
trap 'rm -rf "$T"' EXIT
cc -O2 -Wall -o "$T/aeadbench" "$bench/aeadbench.c" -lmbedcrypto -lcrypto
for ((r = 0; r < ROUNDS; r++)); do
  taskset -c "$PROXY_CPU" "$T/aeadbench" "$RECORDS" >> "$T/out"
done

python3 - "$T/out" "$ROUNDS" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    name, lib, mbs = line.split()
    runs.setdefault(name, {}).setdefault(lib, []).append(float(mbs))
print("Sealing 16 KiB records, median MB/s of %s rounds:" % sys.argv[2])
print("  %-18s %9s %9s %8s  %s" % ("AEAD", "mbedTLS", "OpenSSL", "ratio",
                                   "intercepted ceiling, one core"))
for name, libs in runs.items():
    m, o = statistics.median(libs["mbedtls"]), statistics.median(libs["openssl"])
    print("  %-18s %9.0f %9.0f %7.2fx  %.0f MB/s" % (name, m, o, m / o, m / 2))
PY
