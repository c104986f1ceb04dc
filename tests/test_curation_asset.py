import dagster as dg

from assets import cleaned_chunks, raw_docs
from ml.catalog import Catalog
from tests.conftest import write_lines
from tests.helpers.curation import FOURTH_PROSE, OTHER_PROSE, PROSE, RESOURCES, THIRD_PROSE, doc_line


def _run(instance, selection=None):
    result = dg.materialize([raw_docs, cleaned_chunks], instance=instance, resources=RESOURCES, selection=selection)
    assert result.success
    mats = [e.event_specific_data.materialization for e in result.get_asset_materialization_events()]
    return {m.asset_key.to_user_string(): m for m in mats}


def test_cleaned_chunks_versions_cache_and_decisions(home):
    docs = [doc_line(0, PROSE), doc_line(1, OTHER_PROSE), doc_line(2, PROSE.upper()), doc_line(3, "Too short to keep.")]
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

        write_lines(home / "landing" / "a.jsonl", docs[:1] + [doc_line(1, OTHER_PROSE + " One more sentence here.")] + docs[2:])
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


def test_relation_triples_versioned_and_only_changed_chunks_parsed(home):
    from assets import relation_triples

    sentences = [
        "Python is a programming language.", "The parser returns a syntax tree.",
        "The archive contains compressed files.", "Dagster was created by Elementl.",
    ]
    fillers = [PROSE, OTHER_PROSE, THIRD_PROSE, FOURTH_PROSE]  # distinct: no doc is a near-duplicate
    docs = [doc_line(i, s + " " + fillers[i]) for i, s in enumerate(sentences)]
    write_lines(home / "landing" / "a.jsonl", docs)
    assets = [raw_docs, cleaned_chunks, relation_triples]
    with dg.instance_for_test() as instance:
        def run():
            result = dg.materialize(assets, instance=instance, resources=RESOURCES)
            assert result.success
            return {e.asset_key.to_user_string(): e.event_specific_data.materialization
                    for e in result.get_asset_materialization_events()}

        first = run()["relation_triples"].metadata
        assert first["chunks_parsed"].value == first["chunks"].value > 0
        assert first["per_relation"].value.get("returns", 0) >= 1
        assert first["per_relation"].value.get("created_by", 0) >= 1

        docs[0] = doc_line(0, "Rust is a systems language. " + PROSE)
        write_lines(home / "landing" / "a.jsonl", docs)
        second = run()["relation_triples"]
        md = second.metadata
        assert md["cache_hit"].value is False
        assert 0 < md["chunks_parsed"].value < md["chunks"].value  # only the changed doc's chunks
        assert md["chunks_cached"].value == md["chunks"].value - md["chunks_parsed"].value

    import polars as pl
    from ml.store import ArtifactStore

    v = ArtifactStore(home).get("relation_triples", second.tags["dagster/data_version"])
    triples = pl.read_parquet(v.path / "triples" / "*.parquet")
    assert ((triples["confidence"] >= 0.3) & (triples["confidence"] <= 1)).all()
    chunks_v = ArtifactStore(home).versions("cleaned_chunks")[-1]
    chunks = pl.read_parquet(chunks_v.path / "chunks" / "*.parquet").select("chunk_id", "text")
    joined = triples.join(chunks, on="chunk_id")
    assert joined.height == triples.height  # every triple points at a chunk of its upstream version
    for r in joined.iter_rows(named=True):
        assert r["text"][r["evidence_start"]:r["evidence_end"]] == r["evidence"]
    assert ("Rust", "is_a") in set(zip(triples["subject"], triples["relation"]))
