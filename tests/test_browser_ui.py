"""End to end through the browser: `dagster dev`, headless Chromium, a person's clicks.

Start `dagster dev -w workspace.yaml` on a temporary home, switch the sensors off in the UI,
drop a small corpus into the landing zone, open the asset graph, materialize raw_docs with its
"Materialize" button, wait for the run page to say Success, then read raw_docs' metadata and
check results on its asset page. Screenshots go to ``<tmp_path>/screenshots`` and, when
``$LINEAGE_TEST_ARTIFACTS`` is set, to ``$LINEAGE_TEST_ARTIFACTS/test_browser_ui/`` as well.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import warnings
from pathlib import Path

import pytest

from ml.fsutil import atomic_write_bytes
from ml.sample_corpus import write_sample_corpus
from tests.browser import Browser, require_browser
from tests.dagster_dev import DagsterDev

pytestmark = pytest.mark.slow

DOCS = 200
BAD_LINE = '{"title": "cut off", "content": '  # a JSON object cut short: quarantined with a reason
RUN_TIMEOUT = 240  # seconds for the run to finish; 15-50 s on 2 cores
# Sensors tick at most once an hour (they are also switched off in the UI before any data lands).
QUIET_SENSORS = {name: "3600" for name in (
    "LINEAGE_SENSOR_INTERVAL", "LINEAGE_LANDING_INTERVAL", "LINEAGE_RETRAIN_INTERVAL", "LINEAGE_FAILURE_INTERVAL")}
RUN_ID = re.compile(r"/runs/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})")


def _definitions() -> tuple[list[str], list[str]]:
    """(sensor and schedule names, names of raw_docs' asset checks), from the Definitions object."""
    import dagster as dg

    from definitions import defs

    automations = sorted(a.name for a in [*(defs.sensors or []), *(defs.schedules or [])])
    graph = defs.resolve_asset_graph()
    checks = sorted(k.name for k in graph.get_check_keys_for_assets({dg.AssetKey("raw_docs")}))
    return automations, checks


def _stage_corpus(incoming: Path) -> int:
    """The embedded sample corpus plus one broken line, outside the landing zone; the good docs' count."""
    written = write_sample_corpus(incoming, limit=DOCS)
    atomic_write_bytes(incoming / "handmade" / "broken.jsonl", (BAD_LINE + "\n").encode())
    return sum(n for _, n in written.values())


def _land(incoming: Path, landing: Path) -> None:
    """Move the finished files in (README: download elsewhere, then move), one rename per folder."""
    for folder in sorted(incoming.iterdir()):
        os.replace(folder, landing / folder.name)


def _switched_on(ui: Browser) -> list:
    from selenium.webdriver.common.by import By

    return [box for box in ui.driver.find_elements(By.XPATH, "//input[@type='checkbox']") if box.is_selected()]


def _stop_automations(ui: Browser, names: list[str]) -> None:
    """Switch every running sensor/schedule off on the Automation page, as a person would."""
    from selenium.webdriver.common.by import By

    def rendered() -> bool:  # each row has a select box and an on/off switch
        return all(ui.visible(f"//*[normalize-space(text())='{n}']") for n in names) and \
            len(ui.driver.find_elements(By.XPATH, "//input[@type='checkbox']")) >= 2 * len(names)

    ui.open("/automation")
    ui.dismiss_nux(wait=3)
    ui.wait("the automation list with its switches", rendered)
    for _ in range(50):  # one switch per pass: the list re-renders after each
        on = ui.wait("the switches", lambda: (_switched_on(ui),))[0]  # (list,): truthy even when empty
        if not on:
            break
        ui.click(on[0].find_element(By.XPATH, "./ancestor::label[1]"))  # the switch is the label around it
        ui.wait("the switch to turn off", lambda: len(_switched_on(ui)) < len(on))
    ui.driver.refresh()  # the switches show the stored state, not just what we clicked
    ui.wait("the automation list with its switches", rendered)
    assert not _switched_on(ui), "a sensor is still running after being switched off"
    ui.screenshot("sensors_stopped")


def _launch_from_asset_page(ui: Browser, asset: str) -> str:
    """Click "Materialize" on the asset's page (confirming a launchpad if one opens); return the run id."""
    from selenium.webdriver.common.by import By

    def run_ids() -> set[str]:
        return {m.group(1) for a in ui.driver.find_elements(By.XPATH, "//a[contains(@href, '/runs/')]")
                if (m := RUN_ID.search(a.get_attribute("href") or ""))}

    ui.open(f"/assets/{asset}")
    ui.wait_exact(asset)
    button = ui.button("Materialize")
    before = run_ids()
    ui.click(button)

    launchpad = "//*[@role='dialog'][.//*[contains(normalize-space(text()), 'Launchpad')]]"

    def launched() -> str | None:
        if ui.visible(launchpad):  # config without defaults: Dagster asks first, then opens the run
            ui.click(ui.button("Materialize", within=launchpad))
            ui.wait("the launchpad to close", lambda: not ui.visible(launchpad))
        if m := RUN_ID.search(ui.driver.current_url):
            return m.group(1)
        new = run_ids() - before  # the "Launched run … View" notice links to the new run
        return next(iter(new), None) if len(new) == 1 else None

    run_id = ui.wait("the 'Launched run' notice", launched, timeout=60, poll=0.25)
    if run_id not in ui.driver.current_url:
        ui.wait_text(f"Launched run {run_id[:8]}")
    ui.screenshot(f"{asset}_launched")
    return run_id


def _wait_for_run(ui: Browser, dev: DagsterDev, run_id: str) -> None:
    ui.open(f"/runs/{run_id}")
    ui.wait_text(run_id[:8])
    outcomes = [f"//*[normalize-space(text())='{s}']" for s in ("Success", "Failure", "Canceled")]
    status = ui.wait("the run to finish", lambda: next(
        (el.text.strip() for x in outcomes for el in ui.visible(x)), None), timeout=RUN_TIMEOUT, poll=1)
    ui.screenshot(f"run_{status.lower()}")
    assert status == "Success", f"run {run_id} ended as {status}; dagster dev log:\n{dev.log_text()[-4000:]}"


def _look_at_the_asset_graph(ui: Browser) -> None:
    """The whole lineage, then the data group, where raw_docs has never been materialized."""
    ui.open("/asset-groups")
    ui.dismiss_nux(wait=3)
    ui.button("Materialize all")
    ui.wait_exact("data")
    ui.screenshot("asset_graph")
    ui.open("/locations/lineage_forge/asset-groups/data")
    ui.wait_exact("raw_docs")
    ui.wait_text("Never materialized")
    ui.screenshot("data_group")


def _read_metadata(ui: Browser, asset: str, accounting: str) -> str:
    """The asset page shows the latest materialization's metadata; return the page's text."""
    ui.open(f"/assets/{asset}")
    ui.wait_exact("lines_read")
    for key in ("path", "data_version", "cache_hit", "rows", "kept", "quarantined", "accounting"):
        ui.wait_exact(key, timeout=10)
    row = ui.wait_exact(accounting, timeout=10)
    ui.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", row)
    page = ui.text()
    ui.screenshot(f"{asset}_metadata")
    return page


def _read_check_results(ui: Browser, check_names: list[str]) -> None:
    """The Checks tab: every registered check of the asset shows a result of this run."""
    ui.click(ui.wait_exact("Checks"))
    ui.wait("the checks view", lambda: "checks" in ui.driver.current_url)
    if check_names:
        for name in check_names:
            ui.wait(f"a result of check {name!r}", lambda: any(
                f"{name}\n{status}" in ui.text() for status in ("Succeeded", "Failed")), timeout=30)
        ui.wait_text("Evaluation result")
        assert "Not evaluated" not in ui.text()
    else:
        ui.wait_text("No checks defined for this asset")
        warnings.warn("no asset checks are registered for raw_docs: check results not verified")
    ui.screenshot("checks")


def _publish(paths: list[Path]) -> None:
    target = os.environ.get("LINEAGE_TEST_ARTIFACTS")
    if not target:
        return
    out = Path(target) / "test_browser_ui"
    out.mkdir(parents=True, exist_ok=True)
    for p in paths:
        if p.is_file():
            shutil.copy2(p, out / p.name)


def test_materialize_raw_docs_from_the_ui_and_read_metadata_and_checks(home, tmp_path):
    require_browser()
    shots, log, incoming = tmp_path / "screenshots", tmp_path / "dagster_dev.log", tmp_path / "incoming"
    try:
        with DagsterDev(home, log, env=QUIET_SENSORS) as dev:
            # while dagster dev starts: what the Definitions hold, and the corpus, ready to move in
            automations, check_names = _definitions()
            docs = _stage_corpus(incoming)
            with Browser(dev.url, shots, tmp_path / "chromium-profile") as ui:
                dev.wait_loaded(timeout=180)
                if automations:  # before any data lands, so no sensor starts an ingest of its own
                    _stop_automations(ui, automations)
                _land(incoming, home / "landing")
                _look_at_the_asset_graph(ui)
                run_id = _launch_from_asset_page(ui, "raw_docs")
                _wait_for_run(ui, dev, run_id)
                page = _read_metadata(ui, "raw_docs", f"{docs + 1} lines read = {docs} kept + 1 quarantined")
                _read_check_results(ui, check_names)
    finally:
        _publish(sorted(shots.glob("*.png")) + [log])

    # the backend agrees, read straight from the store (no Dagster API)
    manifests = sorted((home / "artifacts" / "raw_docs").glob("*/manifest.json"))
    assert len(manifests) == 1, manifests
    manifest = json.loads(manifests[0].read_text())
    assert manifest["run_id"] == run_id
    stats = manifest["stats"]
    assert (stats["lines_read"], stats["kept"], stats["quarantined"]) == (docs + 1, docs, 1)
    assert manifest["data_version"] in page  # the UI showed this very version
    assert len(ui.shots) >= 6 and all(p.stat().st_size > 10_000 for p in ui.shots)
