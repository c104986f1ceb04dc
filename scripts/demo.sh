#!/usr/bin/env bash
# The whole pipeline end to end on the embedded default: local files, SQLite Dagster instance,
# DuckDB catalog, CPU. sample corpus -> raw_docs -> ... -> onnx_bundle package, verified.
# Safe to run again: unchanged inputs are cache hits.
set -euo pipefail
source "$(dirname "$0")/env.sh"
start=$(date +%s)
step() { echo; echo "== [$(( $(date +%s) - start ))s] $*"; }
q() { echo "-- $1"; lineage stats "$2" --max-rows "${3:-40}"; }

step "LINEAGE_HOME=$LINEAGE_HOME  DAGSTER_HOME=$DAGSTER_HOME"
step "1/4 sample corpus into the landing zone"
lineage sample-corpus

step "2/4 dagster job execute full_pipeline (configs/debug.yaml): every asset and its checks"
# Dagster's full event log goes to demo.log; progress (steps, checks) is shown here as it happens.
log="$LINEAGE_HOME/demo.log"
set +o pipefail
dagster job execute -m definitions -j full_pipeline -c configs/debug.yaml 2>&1 | tee "$log" \
  | grep --line-buffered -E "STEP_START |STEP_SUCCESS|STEP_FAILURE|ASSET_CHECK_EVALUATION|RUN_SUCCESS|RUN_FAILURE" \
  | sed -u -E 's/^([0-9-]+ )?([0-9:]+) .* - full_pipeline - [0-9a-f-]+ - [0-9]+ - /\2 /' | cut -c1-160
set -o pipefail
if ! grep -q "RUN_SUCCESS" "$log"; then
  echo "full_pipeline failed; the last lines of $log:" >&2
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
