"""The quality suites as Dagster asset checks: a failed blocking check stops what depends on its
asset in the same run, results go to check_results, and the gate refuses the version later.

Stand-in assets carry the real asset keys and publish versions built by
tests/helpers/quality_versions.py (clean, or violating every blocking expectation of the suite at
once); the checks are the real ones from assets/quality_checks.py. One more test runs the real corpus
assets with their checks.
"""

import json

import dagster as dg

from assets.quality_checks import QUALITY_CHECKS
from ml.catalog import Catalog
from ml.quality.gate import failed_blocking_checks
from ml.quality.suites import SUITES
from ml.store import ArtifactStore
from resources import ArtifactStoreResource, CatalogResource, LandingZone
from tests.conftest import write_lines
from tests.helpers.quality_versions import EXCLUSIVE, Versions, violate_all

RESOURCES = {"store": ArtifactStoreResource(), "catalog": CatalogResource(), "landing": LandingZone()}
BLOCKING = {a: sorted(c.name for c in s.checks if c.blocking and c.name not in EXCLUSIVE) for a, s in SUITES.items()}


def _stand_in(versions: Versions, asset: str, mutate) -> list:
    """An asset with ``asset``'s key that publishes a built version, and a sink downstream of it."""
    @dg.asset(name=asset)
    def stand_in() -> dg.MaterializeResult:
        v = versions.build(asset, mutate)
        return dg.MaterializeResult(data_version=dg.DataVersion(v.data_version))

    @dg.asset(name=f"after_{asset}", deps=[asset])
    def sink() -> None:
        return None

    return [stand_in, sink]


def _graph(versions: Versions, mutate_for) -> list:
    return [d for asset in SUITES for d in _stand_in(versions, asset, mutate_for(asset))]


def _run(instance, defs, run_config=None):
    result = dg.materialize([*defs, *QUALITY_CHECKS], instance=instance, resources=RESOURCES,
                            raise_on_error=False, run_config=run_config)
    mats = {e.asset_key.to_user_string(): e.event_specific_data.materialization
            for e in result.get_asset_materialization_events()}
    evals = {(e.asset_key.to_user_string(), e.check_name): e for e in result.get_asset_check_evaluations()}
    return result, mats, evals


def test_failed_blocking_checks_stop_downstream_and_block_later(home):
    versions = Versions(ArtifactStore(home))
    catalog = Catalog(home)
    with dg.DagsterInstance.ephemeral() as instance:  # in memory: no SQLite fsync per event
        # clean versions: every check passes, every downstream asset is materialized
        result, mats, evals = _run(instance, _graph(versions, lambda a: None))
        assert result.success
        assert set(mats) == set(SUITES) | {f"after_{a}" for a in SUITES}
        assert len(evals) == sum(len(s.checks) for s in SUITES.values())
        assert all(e.passed for e in evals.values())
        clean = {a: mats[a].tags["dagster/data_version"] for a in SUITES}

        # violating versions: every blocking check fails, no downstream asset runs in that run
        config = {"ops": {"raw_docs_quality": {"config": {"quarantine_rate_max": 0.5}}}}
        result, mats, evals = _run(instance, _graph(versions, violate_all), run_config=config)
        assert not result.success
        assert set(mats) == set(SUITES)  # the stand-ins only: every sink was blocked
        failed_steps = {e.step_key for e in result.get_step_failure_events()}
        assert failed_steps == {f"{a}_quality" for a in SUITES}  # by its failed blocking checks
        for asset, names in BLOCKING.items():
            for name in names:
                e = evals[(asset, name)]
                assert not e.passed and e.severity == dg.AssetCheckSeverity.ERROR, (asset, name)
        # the ceiling comes from run config: 1 quarantined line of 5 is under 0.5
        assert evals[("raw_docs", "quarantine_rate")].passed
        md = evals[("relation_triples", "relation_in_label_set")].metadata
        assert md["unexpected_count"].value == 1
        assert md["expectation"].value["type"] == "expect_column_values_to_be_in_set"
        assert [r.data["relation"] for r in md["failing_rows"].value.records] == ["likes"]
        bad = {a: mats[a].tags["dagster/data_version"] for a in SUITES}

    # check_results: both runs recorded; the gate refuses exactly the violating versions
    for asset in SUITES:
        assert failed_blocking_checks(catalog, asset, clean[asset]) == []
        failed = failed_blocking_checks(catalog, asset, bad[asset])
        assert sorted(f["check_name"] for f in failed) == BLOCKING[asset]
        assert all(json.loads(f["details"])["data_version"] == bad[asset] for f in failed)
    n = catalog.query("SELECT count(*) FROM check_results").item()
    assert n == 2 * sum(len(s.checks) for s in SUITES.values())


def test_checks_beside_their_assets_in_the_code_location():
    from definitions import defs

    graph = defs.resolve_asset_graph()
    keys = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    for asset, suite in SUITES.items():
        for c in suite.checks:
            assert (asset, c.name) in keys
            spec = graph.get_check_spec(dg.AssetCheckKey(dg.AssetKey(asset), c.name))
            assert spec.blocking is c.blocking


def test_real_corpus_assets_pass_their_checks(home):
    from assets import cleaned_chunks, raw_docs, relation_triples
    from tests.helpers.curation import OTHER_PROSE, PROSE, THIRD_PROSE

    texts = ["Python is a programming language. " + PROSE, "The parser returns a syntax tree. " + OTHER_PROSE,
             THIRD_PROSE]
    docs = [json.dumps({"title": f"doc {i}", "content": t, "url": f"https://example.org/{i}"})
            for i, t in enumerate(texts)]
    write_lines(home / "landing" / "a.jsonl", [*docs, "{not json"])
    checks = [c for c in QUALITY_CHECKS if {k.asset_key.to_user_string() for k in c.check_keys}
              <= {"raw_docs", "cleaned_chunks", "relation_triples"}]
    with dg.DagsterInstance.ephemeral() as instance:  # in memory: no SQLite fsync per event
        result = dg.materialize([raw_docs, cleaned_chunks, relation_triples, *checks], instance=instance,
                                resources=RESOURCES, raise_on_error=False)
        evals = {(e.asset_key.to_user_string(), e.check_name): e for e in result.get_asset_check_evaluations()}
        mats = {e.asset_key.to_user_string(): e.event_specific_data.materialization
                for e in result.get_asset_materialization_events()}
    assert result.success and set(mats) == {"raw_docs", "cleaned_chunks", "relation_triples"}
    assert mats["relation_triples"].metadata["triples"].value >= 2
    assert len(evals) == sum(len(SUITES[a].checks) for a in mats)
    failed = {k: e.metadata.get("error") for k, e in evals.items() if not e.passed}
    assert failed == {("raw_docs", "quarantine_rate"): None}  # 1 of 4 lines quarantined: a warning only
    assert evals[("raw_docs", "quarantine_rate")].severity == dg.AssetCheckSeverity.WARN
    catalog = Catalog(home)
    for asset, m in mats.items():
        version = m.tags["dagster/data_version"]
        assert evals[(asset, SUITES[asset].checks[0].name)].metadata["data_version"].value == version
        assert failed_blocking_checks(catalog, asset, version) == []
        rows = catalog.query("SELECT count(*) FROM check_results WHERE asset = ? AND data_version = ?",
                             [asset, version]).item()
        assert rows == len(SUITES[asset].checks)
