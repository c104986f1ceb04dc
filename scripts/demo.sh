#!/usr/bin/env bash
# The whole pipeline end to end on the embedded default: local files, SQLite Dagster instance,
# DuckDB catalog, CPU. sample corpus -> raw_docs -> ... -> onnx_bundle package, verified.
# Safe to run again: unchanged inputs are cache hits.
set -euo pipefail
cd "$(dirname "$0")/.."  # the repo root (env.sh leaves the directory alone)
source scripts/env.sh
start=$(date +%s)
step() { echo; echo "== [$(( $(date +%s) - start ))s] $*"; }
q() { echo "-- $1"; lineage stats "$2" --max-rows "${3:-40}"; }

step "LINEAGE_HOME=$LINEAGE_HOME  DAGSTER_HOME=$DAGSTER_HOME"
step "1/4 sample corpus into the landing zone"
lineage sample-corpus

step "2/4 dagster job execute full_pipeline (configs/debug.yaml): every asset and its checks"
# Dagster's console output goes to demo.log. The progress shown here (each step, each asset:
# computed or cache hit with its version, each check) is read from Dagster's event log, the
# record of the run: a filter over the console can miss the last lines of a step (DESIGN.md).
log="$LINEAGE_HOME/demo.log"
# The job and the progress reader start together: create the instance's storage first, or on an
# empty home both create the same SQLite tables at once and one fails ("table already exists").
dagster instance migrate > /dev/null
launch="demo-$(date +%s)-$$"
dagster job execute -m definitions -j full_pipeline -c configs/debug.yaml \
  --tags "{\"lineage/launch\": \"$launch\"}" > "$log" 2>&1 &
job=$!
trap 'kill -INT "$job" 2>/dev/null; wait "$job"; exit 130' INT TERM
progress=0; python -m jobs.progress --tag "lineage/launch=$launch" --pid "$job" || progress=$?
rc=0; wait "$job" || rc=$?
trap - INT TERM
if [ "$rc" -ne 0 ] || [ "$progress" -ne 0 ]; then
  echo "full_pipeline failed (exit $rc); the last lines of $log:" >&2
  tail -40 "$log" >&2
  exit 1
fi

step "3/4 what the catalog says"
q "versions made (latest per asset)" \
  "select asset, data_version, rows, bytes, cache_hit from (select *, row_number() over (partition by asset order by created_at desc) rn from asset_versions) where rn = 1 order by created_at"
q "doc decisions of the latest cleaned_chunks version" \
  "select decision, reason, count(*) as docs from doc_decisions where data_version = (select data_version from asset_versions where asset = 'cleaned_chunks' order by created_at desc limit 1) group by all order by docs desc"
q "final validation metrics of the latest version of each model" \
  "select asset, data_version, metric, round(value, 4) as value, step from (select *, row_number() over (partition by asset, data_version, metric order by step desc) rn from training_metrics where split = 'val') join (select asset, data_version from (select *, row_number() over (partition by asset order by created_at desc) r from asset_versions) where r = 1) using (asset, data_version) where rn = 1 order by asset, metric"
q "held-out test metrics of each model (model_evaluation, eval_results)" \
  "select model_asset, metric, round(value, 4) as value, n from eval_results where data_version = (select data_version from asset_versions where asset = 'model_evaluation' order by created_at desc limit 1) order by model_asset, metric" 60
q "parity of the bundle (ORT vs PyTorch)" \
  "select regexp_extract(stat, 'parity\.(\w+)\.(\w+)\.(\w+)', 1) as model, regexp_extract(stat, 'parity\.(\w+)\.(\w+)\.(\w+)', 2) as precision, regexp_extract(stat, 'parity\.(\w+)\.(\w+)\.(\w+)', 3) as metric, round(value, 5) as value from dataset_stats where asset = 'onnx_bundle' and data_version = (select data_version from asset_versions where asset = 'onnx_bundle' order by created_at desc limit 1) and regexp_matches(stat, '^parity\.\w+\.\w+\.(max_abs_diff|argmax_agreement|cosine_mean|passed)$') order by 1, 2, 3"
q "blocking checks that did not pass (empty: all clear)" \
  "select asset, check_name, severity from check_results where not passed and severity = 'ERROR'"

step "4/4 the bundle"
bundle_version=$(lineage stats "select data_version from asset_versions where asset = 'onnx_bundle' order by created_at desc limit 1" --format csv | tail -1)
bundle="$LINEAGE_HOME/artifacts/onnx_bundle/$bundle_version/bundle.tar.gz"
echo "bundle: $bundle ($(du -h "$bundle" | cut -f1))"
lineage verify "$bundle"
lineage trace "onnx_bundle@$bundle_version"

step "done in $(( $(date +%s) - start ))s"
echo "UI: source scripts/env.sh && dagster dev -w workspace.yaml   (http://127.0.0.1:3000)"
