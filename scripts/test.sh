#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine, as root: installs the real registry and
# clients the tests run, then format, lint and every test.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(docker-registry skopeo umoci podman containerd docker.io prometheus apache2-utils openssl ca-certificates curl systemd python3-yaml nginx)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi

# Licences, banned crates and crate sources (deny.toml); built once, then reused.
if ! command -v cargo-deny >/dev/null 2>&1; then
  cargo install cargo-deny --locked
fi

# Garage, an S3-compatible object store, for the shared-tier tests (about 9 minutes to build,
# once).
if ! command -v garage >/dev/null 2>&1 && [ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/garage" ]; then
  cargo install garage --locked --no-default-features --features bundled-libs,sqlite
fi

cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
cargo deny check bans licenses sources
# Benchmarks (benches/) are compiled by clippy above and run with `cargo bench`, not here.
cargo test --lib --bins --tests
