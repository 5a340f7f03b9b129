#!/bin/sh
# The speed table in the README: entrepot beside CNCF distribution's proxy mode and nginx
# sendfile, all on 127.0.0.1 (benches/compare). Installs its Debian packages first; run as root.
#   scripts/bench.sh            the table (about 3 minutes), ending in Markdown for the README
#   scripts/bench.sh client     why a client's way of reading changes the cold figure
#   scripts/bench.sh manifests  the warm manifest rate beside nginx serving the same bytes
#   scripts/bench.sh auth       warm manifest rate without and with [auth]
#   scripts/bench.sh shared     a shared-tier hit (Garage) against a local hit
#   scripts/bench.sh scale      caches of 10k, 100k and 1M blobs (ENTREPOT_SCALE=10000,100000 for fewer)
#   scripts/bench.sh micro      the Criterion micro-benchmarks of the hot paths (benches/hot.rs)
set -eu
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
if ! command -v wrk >/dev/null || ! command -v nginx >/dev/null || ! command -v docker-registry >/dev/null \
    || ! command -v skopeo >/dev/null || ! command -v curl >/dev/null || ! command -v htpasswd >/dev/null; then
    apt-get update
    apt-get install -y docker-registry skopeo nginx wrk curl apache2-utils
fi
if [ "${1:-}" = micro ]; then
    exec cargo bench --bench hot
fi
if [ "${1:-}" = shared ] && ! command -v garage >/dev/null; then
    cargo install garage --locked --no-default-features --features bundled-libs,sqlite
fi
exec cargo bench --bench compare -- "$@"
