"""gnn_dataset / ner_dataset builders, the GNN and NER metrics, their parity criteria, and both models
trained by the one loop on tiny data (the export of both is covered by tests/test_export_asset.py)."""

import json

import numpy as np
import polars as pl
import pytest
import torch

from ml.datasets.gnn import GnnConfig, MENTIONS, build_gnn, entity_key, query_text
from ml.datasets.mixing import plan_docs
from ml.datasets.ner import NerConfig, bio_tags, build_ner, decode_entities, entity_type
from ml.export import parity
from ml.gnn.data import baseline_scores, ranking_metrics, ranks
from ml.train.tasks import entity_prf

SEED, RATIO = 7, 0.3


def _corpus(n_docs: int = 24):
    """Doc i has two chunks: 'tool{i} uses lib{i%3}' and 'tool{i} has attr{i}'; each lib entity is
    shared by documents of both splits."""
    chunks, triples = [], []
    for i in range(n_docs):
        for k, (rel, obj) in enumerate((("uses", f"lib{i % 3}"), ("has", f"attr{i}"))):
            cid, text = f"d{i}c{k}", f"The tool{i} {rel} {obj} in document {i}."
            chunks.append({"chunk_id": cid, "doc_id": f"d{i}", "text": text})
            triples.append({"chunk_id": cid, "subject": f"tool{i}", "relation": rel, "object": obj,
                            "confidence": 0.5 + 0.01 * i, "evidence_start": 0, "evidence_end": len(text),
                            "evidence": text, "extractor": "test"})
    docs = pl.DataFrame({"doc_id": [f"d{i}" for i in range(n_docs)], "source": ["a.jsonl"] * n_docs})
    return pl.DataFrame(triples), pl.DataFrame(chunks), docs


def test_gnn_dataset_candidates_stay_in_their_split_and_correct_answers_are_never_negatives():
    triples, chunks, docs = _corpus()
    parts, nodes, edges, stats = build_gnn(triples, chunks, docs, GnnConfig(seed=SEED, val_ratio=RATIO, negatives=3,
                                                                                 test_ratio=RATIO))
    split_of = dict(plan_docs(docs, SEED, RATIO, {}, test_ratio=RATIO).table.select("doc_id", "split").iter_rows())
    doc_of = dict(chunks.select("chunk_id", "doc_id").iter_rows())
    assert parts["train"].height and parts["val"].height and parts["test"].height
    for split, frame in parts.items():
        for row in frame.iter_rows(named=True):
            cands = [row["positive"], *row["negatives"]]
            assert len(set(cands)) == 4 and row["candidate_doc_ids"] == [doc_of[c] for c in cands]
            assert {split_of[doc_of[c]] for c in cands} == {split}  # no chunk of the other split
            answers = set(triples.filter((pl.col("subject") == row["subject"]) & (pl.col("relation") == row["relation"]))
                          ["chunk_id"])
            assert not answers & set(row["negatives"])  # another chunk saying the same is not a negative
            assert row["query"] == query_text(row["subject"], row["relation"]) and row["object"] not in row["query"]
    # hard negatives come first: the chunk mentioning the query's subject, then chunks mentioning its object
    row = parts["train"].filter(pl.col("relation") == "uses").row(0, named=True)
    assert row["hard_negatives"] == 3 and row["negatives"][0] == row["doc_id"] + "c1"
    text = dict(chunks.select("chunk_id", "text").iter_rows())
    assert all(row["object"] in text[c] for c in row["negatives"][1:])
    assert set(parts["val"]["query"]).isdisjoint(parts["train"]["query"])
    # the graph: chunk + entity nodes, typed relation edges and mentions, each edge tagged with its doc's split
    assert stats["nodes.chunk"] == chunks.height and stats["nodes.entity"] == 3 + 2 * 24
    assert entity_key(" Lib0 ") == "lib0"
    assert set(edges["type"]) == {"uses", "has", MENTIONS} and set(edges["split"]) == {"train", "val", "test"}
    assert stats["edges"] == edges.height and stats["degree.entity.max"] > stats["degree.entity.p50"]
    assert stats["train.examples"] + stats["val.examples"] == parts["train"].height + parts["val"].height


def test_gnn_subgraphs_of_train_examples_see_train_edges_only(tmp_path):
    from ml.datasets import write_splits
    from ml.datasets.gnn import write_graph
    from ml.gnn.data import GraphData

    triples, chunks, docs = _corpus()
    parts, nodes, edges, _ = build_gnn(triples, chunks, docs, GnnConfig(seed=SEED, val_ratio=RATIO, negatives=3))
    write_splits(tmp_path, parts)
    write_graph(tmp_path, nodes, edges)
    data = GraphData(tmp_path, lambda texts: torch.nn.functional.normalize(torch.randn(len(texts), 8), dim=-1))
    val_nodes = set(nodes.filter(pl.col("split") == "val")["node"].to_list())
    for it in data.items["train"]:
        assert not val_nodes & set(it["nodes"].tolist())
    assert any(val_nodes & set(it["nodes"].tolist()) for it in data.items["val"])


def test_ranking_metrics_count_ties_against_the_positive():
    scores = torch.tensor([[2.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 1.0, 2.0]])
    r = ranks(scores)
    assert r.tolist() == [1, 2, 3]
    m = ranking_metrics(r)
    assert m["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)
    assert m["ndcg_at_10"] == pytest.approx((1 + 1 / np.log2(3) + 1 / np.log2(4)) / 3)
    assert m["hit_at_1"] == pytest.approx(1 / 3)
    assert ranking_metrics(torch.tensor([11]))["ndcg_at_10"] == 0.0  # rank 11 is outside the top 10
    assert ranking_metrics(torch.tensor([10]))["ndcg_at_10"] == pytest.approx(1 / np.log2(11))
    batch = {"x": torch.eye(3), "query": torch.tensor([[0.0, 1.0, 0.0]]), "candidates": torch.tensor([[1, 0, 2]])}
    assert baseline_scores(batch).tolist() == [[1.0, 0.0, 0.0]]


def test_ner_types_tags_and_entity_decoding():
    assert entity_type("ValueError", "raises", "object") == "EXCEPTION"
    assert entity_type("KeyError", "is_a", "subject") == "EXCEPTION"
    assert entity_type("json.dumps", "returns", "subject") == "CODE"
    assert entity_type("a string", "returns", "object") == "VALUE"
    assert entity_type("file objects", "is_a", "subject") == "CONCEPT"
    text = "The json.dumps call returns a string."
    offsets = [(0, 3), (3, 8), (8, 9), (9, 14), (14, 19), (19, 27), (27, 29), (29, 36), (36, 37)]
    ents = [{"start": 4, "end": 14, "type": "CODE"}, {"start": 28, "end": 36, "type": "VALUE"}]
    tags = bio_tags(offsets, text, ents)
    assert tags == ["O", "B-CODE", "I-CODE", "I-CODE", "O", "O", "B-VALUE", "I-VALUE", "O"]
    assert decode_entities(tags) == {(1, 4, "CODE"), (6, 8, "VALUE")}
    assert decode_entities(["I-CODE", "B-CODE", "I-VALUE"]) == {(0, 1, "CODE"), (1, 2, "CODE"), (2, 3, "VALUE")}


def test_entity_f1_is_exact_span_per_type_and_micro():
    gold = [["B-CODE", "I-CODE", "O", "B-VALUE"], ["B-CONCEPT", "O"]]
    pred = [["B-CODE", "I-CODE", "O", "B-CODE"], ["B-CONCEPT", "I-CONCEPT"]]  # one boundary off: no credit
    m = entity_prf(gold, pred, ["CODE", "VALUE", "CONCEPT", "AGENT"])
    assert m["precision.CODE"] == 0.5 and m["recall.CODE"] == 1.0 and m["f1.CODE"] == pytest.approx(2 / 3)
    assert m["recall.VALUE"] == 0.0 and m["precision.CONCEPT"] == 0.0
    assert m["precision"] == pytest.approx(1 / 3) and m["recall"] == pytest.approx(1 / 3)
    assert "f1.AGENT" not in m and m["support.AGENT"] == 0  # no gold, no prediction: support only


def test_ner_dataset_is_aligned_to_the_tokenizer_and_split_by_document(tmp_path):
    from tests.helpers.export_models import train_tokenizer

    tok = train_tokenizer(tmp_path / "tok")
    triples, chunks, docs = _corpus()
    parts, stats = build_ner(triples, chunks.select("chunk_id", "doc_id"), docs,
                             NerConfig(seed=SEED, val_ratio=RATIO, test_ratio=RATIO), tok)
    split_of = dict(plan_docs(docs, SEED, RATIO, {}, test_ratio=RATIO).table.select("doc_id", "split").iter_rows())
    for split, frame in parts.items():
        assert frame.height and {split_of[d] for d in frame["doc_id"]} == {split}
        for row in frame.iter_rows(named=True):
            assert row["input_ids"] == tok(row["text"], add_special_tokens=False)["input_ids"]
            assert len(row["tags"]) == len(row["input_ids"])
            spans = decode_entities(row["tags"])
            assert len(spans) == len(row["entities"]) == 2
            for a, b, ty in spans:
                assert tok.decode(row["input_ids"][a:b]).strip() in {e["text"] for e in row["entities"] if e["type"] == ty}
    assert stats["train.examples"] == parts["train"].height and stats["train.entity.CONCEPT"] > 0


def test_ranker_and_token_parity_criteria_at_their_thresholds():
    t = parity.Thresholds()
    ref = np.array([[3.0, 2.0, 1.0, 0.0]] * 20, dtype=np.float32)
    swapped = ref.copy()
    swapped[0] = [2.0, 3.0, 1.0, 0.0]  # one query of 20 changes its top candidate: 0.95 agreement
    r = parity.compare("ranker", "int8", ref, swapped, t)
    assert r["passed"] and r["metrics"]["argmax_agreement"] == pytest.approx(0.95)
    swapped[1] = [2.0, 3.0, 1.0, 0.0]
    assert not parity.compare("ranker", "int8", ref, swapped, t)["passed"]  # 0.90
    assert parity.rank_correlation(ref, -ref) == pytest.approx(-1.0) and parity.rank_correlation(ref, ref) == pytest.approx(1.0)
    assert r["metrics"]["rank_correlation_mean"] == pytest.approx((19 + 0.8) / 20)  # one adjacent swap of 4: 0.8
    assert [c[0] for c in t.criteria("token_classifier", "int8")] == ["argmax_agreement"]


def test_token_classifier_parity_ignores_padding(tmp_path, monkeypatch):
    ref = np.zeros((2, 3, 2), dtype=np.float32)
    ref[..., 0] = 1.0
    out = ref.copy()
    out[1, 2] = [0.0, 1.0]  # the padded position of row 1 disagrees: not counted
    samples = {"input_ids": np.ones((2, 3), dtype=np.int64), "attention_mask": np.array([[1, 1, 1], [1, 1, 0]]),
               "reference": ref}
    monkeypatch.setattr(parity, "ort_session", lambda path, threads=0: None)
    monkeypatch.setattr(parity, "ort_outputs", lambda session, ids, mask: out)
    res = parity.check_onnx(tmp_path / "m.onnx", "token_classifier", "int8", samples, parity.Thresholds())
    assert res["passed"] and res["samples"] == 5 and res["metrics"]["argmax_agreement"] == 1.0
    out[0, 1] = [0.0, 1.0]  # a real token disagrees: 4/5
    assert not parity.check_onnx(tmp_path / "m.onnx", "token_classifier", "int8", samples, parity.Thresholds())["passed"]


@pytest.mark.parametrize("asset", ["gnn_checkpoint", "ner_checkpoint"])
def test_both_models_train_in_the_one_loop(tmp_path, asset):
    from ml.datasets import write_splits
    from ml.datasets.gnn import write_graph
    from ml.datasets.ner import write_labels
    from ml.train.checkpoint_checks import read_metrics
    from ml.train.run import TrainSpec, run_training
    from tests.helpers.export_models import build_checkpoints, train_tokenizer

    triples, chunks, docs = _corpus()
    ds = tmp_path / "ds"
    ds.mkdir()
    loop = {"max_steps": 40, "batch_size": 8, "lr": 0.005, "warmup_steps": 4, "eval_every": 20, "eval_batches": 4,
            "save_every": 20, "log_every": 5}
    if asset == "gnn_checkpoint":
        parts, nodes, edges, _ = build_gnn(triples, chunks, docs, GnnConfig(seed=SEED, val_ratio=RATIO, negatives=3))
        write_splits(ds, parts)
        write_graph(ds, nodes, edges)
        emb = build_checkpoints(tmp_path_factory_root(tmp_path))["embedding_checkpoint"]
        inputs = {"gnn_dataset": str(ds), "embedding_checkpoint": str(emb)}
        settings = {"model": {"hidden_size": 16, "num_layers": 2, "feature_max_len": 32}, "train": loop}
    else:
        tok = train_tokenizer(tmp_path / "tok")
        parts, _ = build_ner(triples, chunks.select("chunk_id", "doc_id"), docs, NerConfig(seed=SEED, val_ratio=RATIO), tok)
        write_splits(ds, parts)
        write_labels(ds)
        inputs = {"ner_dataset": str(ds), "tokenizer": str(tmp_path / "tok")}
        settings = {"model": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "max_len": 32}, "train": loop}
    out = tmp_path / "out"
    summary = run_training(TrainSpec(asset=asset, settings=settings, inputs=inputs, out_dir=str(out),
                                     work_dir=str(tmp_path / "work"), device={"device": "cpu", "threads": 1}),
                           log=lambda m: None)
    assert summary["final_train_loss"] < summary["first_train_loss"]
    val = summary["val"]
    if asset == "gnn_checkpoint":
        assert {"mrr", "ndcg_at_10", "baseline_mrr", "baseline_ndcg_at_10", "mrr_gain"} <= set(val)
        assert val["queries"] == parts["val"].height and val["mrr_gain"] == pytest.approx(val["mrr"] - val["baseline_mrr"])
        from ml.gnn.model import load_gnn

        model, conf = load_gnn(out)
        assert conf["features"]["from"] == "embedding_checkpoint" and (out / "tokenizer").is_dir()
    else:
        assert {"precision", "recall", "f1", "f1.CONCEPT", "token_accuracy"} <= set(val)
        from ml.train.models import load_ner

        model, tok = load_ner(out)
        assert model.config.id2label[1] == "B-EXCEPTION"
    assert all(np.isfinite(v) for v in val.values())
    rows = read_metrics(out)
    assert any(r["split"] == "val" and r["metric"] == ("mrr" if asset == "gnn_checkpoint" else "f1") for r in rows)
    assert (out / "loss_curve.png").stat().st_size > 0
    assert json.loads((out / "summary.json").read_text())["steps"] == 40
    assert sorted(p.name for p in (tmp_path / "work").rglob("step-*"))  # resumable checkpoints were written


def tmp_path_factory_root(tmp_path):
    return tmp_path.parent / "shared-checkpoints"


def test_gnn_kill_and_resume_gives_identical_weights(tmp_path):
    """The GNN's subgraph items go through the loop's sampler like any other: a run SIGKILLed at step 15
    resumes from its step-10 checkpoint and ends with exactly the weights of an uninterrupted run."""
    import os
    import subprocess
    import sys

    from safetensors.torch import load_file

    from ml.datasets import write_splits
    from ml.datasets.gnn import write_graph
    from ml.train import checkpointing as ckpt
    from ml.train.loop import KILL_ENV
    from ml.train.run import TrainSpec, run_training
    from tests.conftest import REPO
    from tests.helpers.export_models import build_checkpoints

    triples, chunks, docs = _corpus()
    ds = tmp_path / "ds"
    ds.mkdir()
    parts, nodes, edges, _ = build_gnn(triples, chunks, docs, GnnConfig(seed=SEED, val_ratio=RATIO, negatives=3))
    write_splits(ds, parts)
    write_graph(ds, nodes, edges)
    emb = build_checkpoints(tmp_path_factory_root(tmp_path))["embedding_checkpoint"]
    settings = {"model": {"hidden_size": 16, "num_layers": 2, "feature_max_len": 32, "dropout": 0.1},
                "train": {"max_steps": 30, "batch_size": 4, "grad_accum_steps": 2, "lr": 0.005, "warmup_steps": 3,
                          "eval_every": 10, "eval_batches": 2, "save_every": 10, "log_every": 5, "keep_last": 1}}
    inputs = {"gnn_dataset": str(ds), "embedding_checkpoint": str(emb)}
    device = {"device": "cpu", "seed": 3, "threads": 1}

    def spec(name):
        return TrainSpec(asset="gnn_checkpoint", settings=settings, inputs=inputs, out_dir=str(tmp_path / name),
                         work_dir=str(tmp_path / f"{name}_work"), device=device)

    ref = run_training(spec("ref"), log=lambda m: None)
    assert ref["resumed_from_step"] is None
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(spec("out").model_dump_json())
    proc = subprocess.run([sys.executable, "-m", "ml.train", str(spec_file)], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, KILL_ENV: "15", "PYTHONPATH": str(REPO)}, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert [s for s, _ in ckpt.step_dirs(tmp_path / "out_work")] == [10]
    resumed = run_training(spec("out"), log=lambda m: None)
    assert resumed["resumed_from_step"] == 10 and resumed["steps"] == 30
    a = load_file(str(tmp_path / "ref" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "out" / "model" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["val"] == ref["val"]
