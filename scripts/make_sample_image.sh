#!/usr/bin/env bash
# make_sample_image.sh OUTDIR: builds film36exp-api:latest, a three-layer image, with umoci
# (base files; the app under /home/app with Cmd ["./app"] and WorkingDir /home/app/; a layer
# that deletes a file) and writes it with skopeo as OUTDIR/film36exp-api.tar (docker-archive).
set -euo pipefail
out=${1:?usage: make_sample_image.sh OUTDIR}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
img="$work/oci:film36exp-api"
umoci init --layout "$work/oci"
umoci new --image "$img"
umoci config --image "$img" --config.env PATH=/usr/local/bin:/usr/bin:/bin \
  --os linux --architecture amd64
umoci unpack --rootless --image "$img" "$work/b"
r="$work/b/rootfs"
mkdir -p "$r/etc" "$r/usr/bin" "$r/bin" "$r/tmp"
printf 'NAME="sample"\nID=sample\n' > "$r/etc/os-release"
printf 'welcome to the sample image\n' > "$r/etc/motd"
cp /bin/sh "$r/bin/sh"
umoci repack --refresh-bundle --image "$img" "$work/b"
mkdir -p "$r/home/app"
cat > "$r/home/app/app" <<'APP'
#!/bin/sh
echo "film36exp-api: ok (extracted by layerdb)"
APP
chmod 755 "$r/home/app/app"
printf 'port=8036\n' > "$r/home/app/config.ini"
umoci repack --refresh-bundle --image "$img" "$work/b"
rm "$r/etc/motd"
umoci repack --refresh-bundle --image "$img" "$work/b"
umoci config --image "$img" --config.workingdir /home/app/ --config.cmd ./app
skopeo copy -q "oci:$work/oci:film36exp-api" \
  "docker-archive:$out/film36exp-api.tar:film36exp-api:latest"
echo "built $out/film36exp-api.tar"
