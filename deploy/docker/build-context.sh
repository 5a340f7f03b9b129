#!/usr/bin/env bash
# Makes the build context for deploy/docker/Dockerfile from a built entrepot binary: the binary,
# every shared library it links (as ldd lists them) with the dynamic loader, the system's CA
# bundle (for the upstreams' TLS), a passwd entry for the non-root user, and the shipped
# config.toml with its cache in /var/cache/entrepot.
#   usage: build-context.sh BINARY OUT_DIR
set -euo pipefail
binary=$1
out=$2
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

rm -rf "$out"
mkdir -p "$out/rootfs/usr/local/bin" "$out/rootfs/etc/entrepot" "$out/rootfs/etc/ssl/certs" \
  "$out/rootfs/tmp" "$out/cache"
cp "$binary" "$out/rootfs/usr/local/bin/entrepot"
cp "$here/Dockerfile" "$out/Dockerfile"

# Shared libraries and the loader, at the paths the binary expects them.
ldd "$binary" | grep -o '/[^ ]*' | sort -u | while read -r lib; do
  mkdir -p "$out/rootfs$(dirname "$lib")"
  cp -L "$lib" "$out/rootfs$lib"
done

cp -L /etc/ssl/certs/ca-certificates.crt "$out/rootfs/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/:/nonexistent\nentrepot:x:65532:65532:entrepot:/var/cache/entrepot:/nonexistent\n' \
  > "$out/rootfs/etc/passwd"
printf 'root:x:0:\nentrepot:x:65532:\n' > "$out/rootfs/etc/group"
sed 's|^dir = .*|dir = "/var/cache/entrepot"   # the image'"'"'s volume|' "$repo/config.toml" \
  > "$out/rootfs/etc/entrepot/config.toml"
echo "build context in $out: docker build -t entrepot -f $out/Dockerfile $out"
