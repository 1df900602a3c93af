#!/usr/bin/env bash
# Set up (scripts/setup.sh: the project's virtual environment, ./.venv), build a sample image
# with real tools (umoci builds it, skopeo saves it as a `docker save`-style archive), then do
# layerdb's main job on it: ingest, query, extract the entrypoint and run it. Everything goes
# under ./sample; the catalog is ./sample/catalog. To query it afterwards from your own shell:
#   . .venv/bin/activate && export LAYERDB_HOME=$PWD/sample/catalog && layerdb images
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. scripts/_venv.sh
out=$PWD/sample
rm -rf "$out" && mkdir -p "$out"
export LAYERDB_HOME=$out/catalog
bash scripts/make_sample_image.sh "$out"

set -x
layerdb ingest "$out/film36exp-api.tar"
layerdb images
layerdb sql "select image, path, size from fs where path like '%/app'"
layerdb inspect film36exp-api:latest --format table
layerdb ls film36exp-api:latest /home/app -l
layerdb extract --entrypoint --image film36exp-api:latest -o "$out/app"
"$out/app"
{ set +x; } 2>/dev/null
cat <<DONE

The demo's catalog is $LAYERDB_HOME. To query it from your own shell:
  . $VENV/bin/activate                      # puts layerdb on PATH (or: ln -s $VENV/bin/layerdb ~/.local/bin/)
  export LAYERDB_HOME=$LAYERDB_HOME         # or: layerdb --catalog sample/catalog images
  layerdb images
DONE
