"""A check result belongs to a data version and a check version: a second run on the same versions
reports the recorded results (and says so) without validating again; new thresholds or new check
code validate again; recorded failures still block."""

import dagster as dg
import pytest

import ml.quality.engine as engine
import ml.quality.validate as validate
from ml.catalog import Catalog
from ml.store import ArtifactStore
from ml.quality.suites import SUITES
from assets.quality_checks import QUALITY_CHECKS
from resources import ArtifactStoreResource, CatalogResource, LandingZone
from tests.helpers.quality_versions import Versions, violate_all

# three suites (one of them cross-asset: cleaned_chunks reads the raw_docs version it was made from)
ASSETS = ("raw_docs", "cleaned_chunks", "relation_triples")
N_CHECKS = sum(len(SUITES[a].checks) for a in ASSETS)
CHECKS = [c for c in QUALITY_CHECKS if {k.asset_key.to_user_string() for k in c.check_keys} <= set(ASSETS)]
RESOURCES = {"store": ArtifactStoreResource(), "catalog": CatalogResource(), "landing": LandingZone()}


def _run(instance, defs, run_config=None):
    result = dg.materialize([*defs, *CHECKS], instance=instance, resources=RESOURCES, raise_on_error=False,
                            run_config=run_config)
    mats = {e.asset_key.to_user_string(): e.event_specific_data.materialization
            for e in result.get_asset_materialization_events()}
    evals = {(e.asset_key.to_user_string(), e.check_name): e for e in result.get_asset_check_evaluations()}
    return result, mats, evals


@pytest.fixture
def gx_calls(monkeypatch):
    """Counts the expectation runs (every validation goes through engine.run_expectations)."""
    calls = []
    real = engine.run_expectations

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(validate, "run_expectations", counting)
    return calls


def _published(versions: Versions, mutate_for) -> list:
    """Stand-ins with the real asset keys that publish one version built once (so every run
    checks the same data versions), each with a sink downstream."""
    built = {asset: versions.build(asset, mutate_for(asset)).data_version for asset in ASSETS}
    return [d for asset, data_version in built.items() for d in _stand_in(asset, data_version)]


def _stand_in(asset: str, data_version: str) -> list:
    @dg.asset(name=asset)
    def stand_in() -> dg.MaterializeResult:
        return dg.MaterializeResult(data_version=dg.DataVersion(data_version))

    @dg.asset(name=f"after_{asset}", deps=[asset])
    def sink() -> None:
        return None

    return [stand_in, sink]


def _rows(catalog: Catalog) -> int:
    return catalog.query("SELECT count(*) FROM check_results").item()


def test_second_run_reuses_recorded_results(home, gx_calls, monkeypatch):
    versions, catalog = Versions(ArtifactStore(home)), Catalog(home)
    graph = _published(versions, lambda a: None)
    with dg.DagsterInstance.ephemeral() as instance:
        first, _, evals1 = _run(instance, graph)
        assert first.success and len(gx_calls) == len(ASSETS)
        assert _rows(catalog) == N_CHECKS
        assert not any(e.metadata["reused"].value for e in evals1.values())
        assert {e.metadata["validated_in_run"].value for e in evals1.values()} == {first.run_id}

        # same versions, same check code and thresholds: recorded results, no validation, no new rows
        second, mats, evals2 = _run(instance, graph)
        assert second.success and len(gx_calls) == len(ASSETS)
        assert len(evals2) == N_CHECKS
        for key, e in evals2.items():
            assert e.metadata["reused"].value is True, key
            assert e.metadata["validated_in_run"].value == first.run_id
            assert e.metadata["check_version"].value == evals1[key].metadata["check_version"].value
            assert e.passed == evals1[key].passed
            assert e.metadata["unexpected_count"].value == evals1[key].metadata["unexpected_count"].value
        assert _rows(catalog) == N_CHECKS
        assert set(mats) == set(ASSETS) | {f"after_{a}" for a in ASSETS}

        # one threshold changed: that suite's check version changes and it validates again
        config = {"ops": {"raw_docs_quality": {"config": {"quarantine_rate_max": 0.06}}}}
        third, _, evals3 = _run(instance, graph, run_config=config)
        assert third.success and len(gx_calls) == len(ASSETS) + 1
        assert all(not e.metadata["reused"].value for (a, _), e in evals3.items() if a == "raw_docs")
        assert all(e.metadata["reused"].value for (a, _), e in evals3.items() if a != "raw_docs")

        # new check code: every suite validates again
        monkeypatch.setattr(validate, "CODE_VERSION", "changed-code")
        fourth, _, evals4 = _run(instance, graph)
        assert fourth.success and len(gx_calls) == 2 * len(ASSETS) + 1
        assert not any(e.metadata["reused"].value for e in evals4.values())


def test_reused_failures_still_block(home, gx_calls):
    graph = _published(Versions(ArtifactStore(home)), violate_all)
    config = {"ops": {"raw_docs_quality": {"config": {"quarantine_rate_max": 0.5}}}}
    with dg.DagsterInstance.ephemeral() as instance:
        first, mats1, evals1 = _run(instance, graph, run_config=config)
        second, mats2, evals2 = _run(instance, graph, run_config=config)
    assert len(gx_calls) == len(ASSETS)  # the second run validated nothing
    failed1 = {e.step_key for e in first.get_step_failure_events()}
    assert not first.success and failed1 == {f"{a}_quality" for a in ASSETS}
    # the second run: the same checks fail from their records and block the same sinks
    assert not second.success and {e.step_key for e in second.get_step_failure_events()} == failed1
    assert set(mats2) == set(mats1)
    assert not {f"after_{step.removesuffix('_quality')}" for step in failed1} & set(mats2)
    assert {k: e.passed for k, e in evals2.items()} == {k: e.passed for k, e in evals1.items()}
    assert all(e.metadata["reused"].value for e in evals2.values())


def test_partial_record_validates_again(home):
    """Results for only some of the selected checks are not enough: the suite runs again."""
    versions, catalog = Versions(ArtifactStore(home)), Catalog(home)
    v = versions.build("raw_docs", None)
    cv = validate.check_version("raw_docs")
    names = [c.name for c in SUITES["raw_docs"].checks]
    results = validate.validate_version(ArtifactStore(home), "raw_docs", v.data_version, checks=names[:1])
    for r in results:
        r["check_version"] = cv
    validate.record_results(catalog, "raw_docs", v.data_version, results, "run-1")
    assert validate.recorded_results(catalog, "raw_docs", v.data_version, cv, names[:1])[0]["reused_from_run"] == "run-1"
    assert validate.recorded_results(catalog, "raw_docs", v.data_version, cv, names) is None
    assert validate.recorded_results(catalog, "raw_docs", v.data_version, "other", names[:1]) is None
