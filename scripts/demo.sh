#!/usr/bin/env bash
# Set up, build a sample image with real tools (umoci builds it, skopeo saves it as a
# `docker save`-style archive), then do layerdb's main job on it: ingest, query, extract the
# entrypoint and run it. Everything goes under ./sample (the catalog in ./sample/catalog).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
out=$PWD/sample
rm -rf "$out" && mkdir -p "$out"
export LAYERDB_HOME=$out/catalog
bash scripts/make_sample_image.sh "$out"

set -x
layerdb ingest "$out/film36exp-api.tar"
layerdb images
layerdb sql "select image, path, size from fs where path like '%/app'"
layerdb extract --entrypoint --image film36exp-api:latest -o "$out/app"
"$out/app"
