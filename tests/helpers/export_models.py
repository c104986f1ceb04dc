"""Tiny trained checkpoints in the ml/FORMATS.md layout, shared by the export tests (no tests here).

Random tiny models have near-tied logits, where INT8 top-1 agreement means nothing; these are
trained for a few dozen steps on a small real-text corpus so their outputs are well separated.
Built once per test session (about 10 s on two cores).
"""

from __future__ import annotations

import json
from pathlib import Path

TEXTS = [
    "The orchestra rehearsed every evening in the old hall, where the wooden floor creaked under the chairs. "
    "Its conductor insisted on long pauses between movements, so the players could hear the silence settle. "
    "On the night of the concert the audience arrived early, and many stood along the walls to listen.",
    "Bees communicate the location of flowers through a dance performed on the vertical comb inside the hive. "
    "The angle of the dance relative to gravity points toward the food, measured from the direction of the sun. "
    "Its duration tells the other workers how far they must fly to reach the source.",
    "A lighthouse keeper climbed the spiral stairs twice each night to trim the wick and polish the great lens. "
    "Ships far out at sea counted the flashes to learn which coast they were approaching in the dark. "
    "When storms came, the keeper stayed awake until the morning light returned over the water.",
    "The river carried silt from the mountains down to the plain, where farmers planted rice in the flooded fields. "
    "Each spring the water rose and spread a fresh layer of soil across the land. "
    "Villages were built on low hills so that the houses stayed dry when the floods arrived.",
    "Python is a programming language that lets you work quickly and integrate systems more effectively. "
    "Its standard library provides modules for files, networking, text processing and many other tasks. "
    "The interpreter reads a script line by line and raises an exception when something goes wrong. "
    "Many people learn it as their first language.",
    "The baker rose before dawn to knead the dough and light the wood fired oven at the back of the shop. "
    "By the time the first customers arrived, the shelves were full of warm bread and sweet rolls. "
    "Children pressed their faces to the window to watch the loaves come out of the fire.",
]
SPECIAL = ["<|pad|>", "<|unk|>", "<|bos|>", "<|eos|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>",
           "<e1>", "</e1>", "<e2>", "</e2>"]
LABELS = ["no_relation", "is_a", "part_of"]

_CACHE: dict[str, dict[str, Path]] = {}


def train_tokenizer(out: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE(unk_token="<|unk|>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=420, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(TEXTS, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|bos|>", eos_token="<|eos|>",
                                  pad_token="<|pad|>", unk_token="<|unk|>")
    tok.save_pretrained(str(out))
    return tok


def _batch(tok, texts, max_length=160):
    import torch

    enc = tok(texts, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def _train(model, loss_fn, steps: int, lr: float) -> float:
    import torch

    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    loss = None
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
    model.eval()
    return float(loss.detach())


def _layout(root: Path, name: str, tok) -> Path:
    d = root / name
    (d / "tokenizer").mkdir(parents=True)
    tok.save_pretrained(str(d / "tokenizer"))
    return d


def build_checkpoints(root: Path) -> dict[str, Path]:
    """lm_checkpoint, lora_adapter, embedding_checkpoint, relation_checkpoint directories under root."""
    key = str(root)
    if key in _CACHE:
        return _CACHE[key]
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: a second thread only spins (and CI has two cores)
    try:
        out = _build(root, torch)
    finally:
        torch.set_num_threads(threads)
    _CACHE[key] = out
    return out


def _build(root: Path, torch) -> dict[str, Path]:
    from peft import LoraConfig, get_peft_model
    from transformers import BertConfig, BertForSequenceClassification, BertModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    root.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer(root / "tokenizer")
    ids, mask = _batch(tok, TEXTS)
    vocab = len(tok)
    out = {}

    # causal LM from scratch, then a LoRA adapter on it
    lm = LlamaForCausalLM(LlamaConfig(
        vocab_size=vocab, hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, pad_token_id=0, bos_token_id=2, eos_token_id=3))
    labels = ids.masked_fill(mask == 0, -100)
    _train(lm, lambda: lm(input_ids=ids, attention_mask=mask, labels=labels).loss, steps=80, lr=1e-2)
    d = out["lm_checkpoint"] = _layout(root, "lm_checkpoint", tok)
    lm.save_pretrained(str(d / "model"))
    peft_model = get_peft_model(lm, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    _train(peft_model, lambda: peft_model(input_ids=ids, attention_mask=mask, labels=labels).loss, steps=5, lr=5e-3)
    d = out["lora_adapter"] = _layout(root, "lora_adapter", tok)
    peft_model.save_pretrained(str(d / "adapter"))

    bert = dict(vocab_size=vocab, hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                max_position_embeddings=256, pad_token_id=0)
    # bi-encoder: first half of each text close to its second half (in-batch negatives)
    enc = BertModel(BertConfig(**bert))
    halves = [t.split(". ", 1) for t in TEXTS]
    a_ids, a_mask = _batch(tok, [h[0] for h in halves])
    p_ids, p_mask = _batch(tok, [h[1] for h in halves])

    def embed(i, m):
        h = enc(input_ids=i, attention_mask=m).last_hidden_state
        e = (h * m.unsqueeze(-1)).sum(1) / m.sum(1, keepdim=True)
        return torch.nn.functional.normalize(e, dim=-1)

    def contrastive():
        sim = embed(a_ids, a_mask) @ embed(p_ids, p_mask).T / 0.05
        return torch.nn.functional.cross_entropy(sim, torch.arange(len(TEXTS)))

    _train(enc, contrastive, steps=10, lr=3e-3)
    d = out["embedding_checkpoint"] = _layout(root, "embedding_checkpoint", tok)
    enc.save_pretrained(str(d / "model"))
    (d / "pooling.json").write_text(json.dumps({"mode": "mean", "normalize": True}))

    # relation classifier
    clf = BertForSequenceClassification(BertConfig(
        **bert, num_labels=len(LABELS), id2label=dict(enumerate(LABELS)), label2id={l: i for i, l in enumerate(LABELS)}))
    y = torch.tensor([i % len(LABELS) for i in range(len(TEXTS))])
    _train(clf, lambda: clf(input_ids=ids, attention_mask=mask, labels=y).loss, steps=20, lr=3e-3)
    d = out["relation_checkpoint"] = _layout(root, "relation_checkpoint", tok)
    clf.save_pretrained(str(d / "model"))
    return out


NER_TAGS = ["O", "B-CONCEPT", "I-CONCEPT", "B-CODE", "I-CODE"]


def gnn_inputs(root: Path):
    """A gnn_dataset built by ml.datasets.gnn from the TEXTS (one document each, one chunk per sentence,
    a triple per sentence: its first capitalised word -> a later word), val_ratio 0.5."""
    import polars as pl

    from ml.datasets import write_splits
    from ml.datasets.gnn import GnnConfig, build_gnn, write_graph

    chunks, triples = [], []
    for d, text in enumerate(TEXTS):
        for i, sent in enumerate(s for s in text.split(". ") if s):
            words = [w.strip(".,") for w in sent.split() if len(w.strip(".,")) > 3]
            cid = f"c{d}-{i}"
            chunks.append({"chunk_id": cid, "doc_id": f"d{d}", "text": sent})
            if len(words) >= 2:
                triples.append({"chunk_id": cid, "subject": words[0], "relation": "uses", "object": words[-1],
                                "confidence": 0.9, "evidence_start": 0, "evidence_end": len(sent), "evidence": sent,
                                "extractor": "test"})
    docs = pl.DataFrame({"doc_id": [f"d{d}" for d in range(len(TEXTS))], "source": ["docs.jsonl"] * len(TEXTS)})
    parts, nodes, edges, _ = build_gnn(pl.DataFrame(triples), pl.DataFrame(chunks), docs,
                                       GnnConfig(val_ratio=0.5, negatives=2))
    d = root / "gnn_dataset"
    d.mkdir(parents=True)
    write_splits(d, parts)
    write_graph(d, nodes, edges)
    return d


def build_graph_models(root: Path, dirs: dict[str, Path]) -> dict[str, Path]:
    """gnn_dataset, gnn_checkpoint (trained on the fixture embedding's features) and ner_checkpoint."""
    key = str(root) + ":graph"
    if key in _CACHE:
        return _CACHE[key]
    import torch
    from transformers import BertConfig, BertForTokenClassification

    from ml.gnn import model as gnn_model
    from ml.gnn.data import EDGE_DIM, GraphData, collate, inputs
    from ml.train.models import encode, load_embedding

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        out = {"gnn_dataset": gnn_inputs(root)}
        emb, etok = load_embedding(dirs["embedding_checkpoint"])
        data = GraphData(out["gnn_dataset"], lambda t: encode(emb, etok, t))
        ranker = gnn_model.build({"feature_dim": int(data.x.shape[1]), "edge_dim": EDGE_DIM, "hidden_size": 16, "num_layers": 2})
        batch = collate(data.x, data.q)(data.items["train"])
        zero = torch.zeros(len(data.items["train"]), dtype=torch.long)
        _train(ranker, lambda: torch.nn.functional.cross_entropy(ranker(*inputs(batch)), zero), steps=30, lr=1e-2)
        d = out["gnn_checkpoint"] = _layout(root, "gnn_checkpoint", etok)
        gnn_model.save(ranker, d / "model", {"features": {"from": "embedding_checkpoint", "max_len": 128}})

        tok = train_tokenizer(root / "ner_tokenizer")
        ids, mask = _batch(tok, TEXTS)
        caps = torch.tensor([[1 if tok.convert_ids_to_tokens(int(i)).lstrip("Ġ")[:1].isupper() else 0 for i in row]
                             for row in ids]).masked_fill(mask == 0, -100)
        ner = BertForTokenClassification(BertConfig(
            vocab_size=len(tok), hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=256, pad_token_id=0, num_labels=len(NER_TAGS), id2label=dict(enumerate(NER_TAGS)),
            label2id={t: i for i, t in enumerate(NER_TAGS)}))
        _train(ner, lambda: ner(input_ids=ids, attention_mask=mask, labels=caps).loss, steps=30, lr=3e-3)
        d = out["ner_checkpoint"] = _layout(root, "ner_checkpoint", tok)
        ner.save_pretrained(str(d / "model"))
    finally:
        torch.set_num_threads(threads)
    _CACHE[key] = out
    return out


def sources(dirs: dict[str, Path]):
    """ModelSources for the three bundle components, with sample texts drawn from TEXTS.

    The LM's samples are the texts it learned, each cut at four different points (a next token
    inside text it knows); the encoders get the texts and word windows of them.
    """
    from ml.export.to_onnx import ModelSource

    words = " ".join(TEXTS).split()
    texts = list(TEXTS) + [" ".join(words[i: i + 8 + i % 13]) for i in range(0, 18 * 9, 9)]
    lm_dir = dirs["lm_checkpoint"]
    return [
        ModelSource("lm", "causal_lm", lm_dir / "model", dirs["lora_adapter"] / "tokenizer",
                    adapter_dir=dirs["lora_adapter"] / "adapter", texts=TEXTS * 4, cut_samples=True,
                    provenance={"asset": "lora_adapter"}),
        ModelSource("embedding", "embedding", dirs["embedding_checkpoint"] / "model",
                    dirs["embedding_checkpoint"] / "tokenizer", pooling={"mode": "mean", "normalize": True},
                    texts=texts, provenance={"asset": "embedding_checkpoint"}),
        ModelSource("relation", "classifier", dirs["relation_checkpoint"] / "model",
                    dirs["relation_checkpoint"] / "tokenizer", texts=texts, provenance={"asset": "relation_checkpoint"}),
    ]


def perturb_largest_weight(path):
    """The same graph with its largest weight scaled by 1.05 (a wrong model that still loads)."""
    import numpy as np
    import onnx

    model = onnx.load(str(path))
    init = max(model.graph.initializer, key=lambda t: np.prod(t.dims))
    arr = onnx.numpy_helper.to_array(init) * np.float32(1.05)
    init.CopyFrom(onnx.numpy_helper.from_array(arr.astype(np.float32), init.name))
    return model.SerializeToString()
