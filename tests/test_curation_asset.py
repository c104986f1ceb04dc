import json

import dagster as dg

from assets import cleaned_chunks, raw_docs
from ml.catalog import Catalog
from resources import ArtifactStoreResource, CatalogResource, LandingZone
from tests.conftest import write_lines
from tests.test_curation import OTHER_PROSE, PROSE

RESOURCES = {"store": ArtifactStoreResource(), "catalog": CatalogResource(), "landing": LandingZone()}


def _run(instance, selection=None):
    result = dg.materialize([raw_docs, cleaned_chunks], instance=instance, resources=RESOURCES, selection=selection)
    assert result.success
    mats = [e.event_specific_data.materialization for e in result.get_asset_materialization_events()]
    return {m.asset_key.to_user_string(): m for m in mats}


def _doc(i, text):
    return json.dumps({"title": f"doc {i}", "content": text, "url": f"https://example.org/{i}"})


def test_cleaned_chunks_versions_cache_and_decisions(home):
    docs = [_doc(0, PROSE), _doc(1, OTHER_PROSE), _doc(2, PROSE.upper()), _doc(3, "Too short to keep.")]
    write_lines(home / "landing" / "a.jsonl", docs)
    with dg.instance_for_test() as instance:
        first = _run(instance)
        chunks_v = first["cleaned_chunks"].tags["dagster/data_version"]
        md = first["cleaned_chunks"].metadata
        assert md["docs_in"].value == 4 and md["docs_out"].value == 2
        assert md["decisions"].value == {"kept": 2, "exact_duplicate": 1, "near_duplicate": 0, "filtered": 1}

        again = _run(instance, selection=["cleaned_chunks"])  # unchanged raw_docs: cache hit
        assert again["cleaned_chunks"].metadata["cache_hit"].value is True
        assert again["cleaned_chunks"].tags["dagster/data_version"] == chunks_v

        write_lines(home / "landing" / "a.jsonl", docs[:1] + [_doc(1, OTHER_PROSE + " One more sentence here.")] + docs[2:])
        changed = _run(instance)
        assert changed["raw_docs"].metadata["cache_hit"].value is False
        assert changed["cleaned_chunks"].metadata["cache_hit"].value is False
        assert changed["cleaned_chunks"].tags["dagster/data_version"] != chunks_v

    cat = Catalog(home)
    per_version = cat.query("""
        SELECT d.data_version, count(*) AS decisions, any_value(s.value) AS docs_in
        FROM doc_decisions d JOIN dataset_stats s
          ON s.asset = 'cleaned_chunks' AND s.data_version = d.data_version AND s.stat = 'docs_in'
        GROUP BY 1""").rows()
    assert len(per_version) == 2 and all(n == docs_in == 4 for _, n, docs_in in per_version)
    edges = cat.query("SELECT DISTINCT upstream_asset FROM lineage_edges WHERE asset = 'cleaned_chunks'")
    assert edges["upstream_asset"].to_list() == ["raw_docs"]
    dup = cat.query("SELECT duplicate_of FROM doc_decisions WHERE decision = 'exact_duplicate' AND data_version = ?",
                    [chunks_v]).item()
    kept = cat.query("SELECT doc_id FROM doc_decisions WHERE decision = 'kept' AND data_version = ?", [chunks_v])
    assert dup in kept["doc_id"].to_list()
