"""Relation dataset: entity-marked evidence sentences -> relation label, plus ``no_relation``.

``labels.json`` fixes the label ids (``RELATIONS`` in order, then ``no_relation``), and every triple is
accounted for in the stats (used or ``skipped.<reason>``). Positives and negatives: DESIGN.md, "Module notes".
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from ml.datasets import split_counts
from ml.datasets.mixing import example_shares, plan_docs
from ml.datasets.splits import DEFAULT_SEED, DEFAULT_VAL_RATIO, doc_unit, drop_cross_split_duplicates
from ml.relation_triples.base import RELATIONS
from ml.tokenizer import E1, E1_END, E2, E2_END

NO_RELATION = "no_relation"
LABELS: list[str] = [*RELATIONS, NO_RELATION]
SCHEMA = {"text": pl.String, "label": pl.String, "doc_id": pl.String, "chunk_id": pl.String, "source": pl.String}

_DECOR = "*_`\"'‘’“”"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(*`])|\n\s*\n")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
STOP_WORDS = frozenset("""
a about above after again against all also an and any are as at be because been before being below
between both but by can could did do does doing down during each either else few for from further had
has have having he her here hers him his how i if in into is it its itself just may might more most
must my no nor not now of off on once only or other our out over own same shall she should so some
such than that the their them then there these they this those through to too under until up upon
us very was we were what when where which while who whom why will with would you your one two new
used use uses using see returns return given value values default true false none
""".split())


@dataclass(frozen=True)
class RelationConfig:
    seed: int = DEFAULT_SEED
    val_ratio: float = DEFAULT_VAL_RATIO
    test_ratio: float = 0.0
    no_relation_ratio: float = 1.0
    """no_relation examples per split = ratio x the average count of a positive class in that split."""
    min_confidence: float = 0.0
    max_chars: int = 600
    """Marked sentences longer than this are skipped (reason too_long)."""
    min_sentence_chars: int = 30
    mix_weights: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        if self.no_relation_ratio < 0:
            raise ValueError(f"no_relation_ratio must be >= 0, got {self.no_relation_ratio}")


def span_pattern(span: str) -> re.Pattern | None:
    """Regex finding ``span`` in text, tolerating markup quotes/asterisks and any whitespace between words."""
    words = span.split()
    if not words:
        return None
    deco = f"[{re.escape(_DECOR)}]*"
    body = (deco + r"\s+" + deco).join(re.escape(w) for w in words)
    return re.compile(rf"(?<!\w){deco}{body}{deco}(?!\w)")


def find_entities(sentence: str, subject: str, obj: str) -> tuple[tuple[int, int], tuple[int, int]] | str:
    """Character spans of subject and object in the sentence, or the reason they cannot be marked."""
    ps, po = span_pattern(subject), span_pattern(obj)
    if ps is None or po is None:
        return "empty_entity"
    subs = list(ps.finditer(sentence)) or list(re.compile(ps.pattern, re.I).finditer(sentence))
    if not subs:
        return "subject_not_in_evidence"
    objs = list(po.finditer(sentence)) or list(re.compile(po.pattern, re.I).finditer(sentence))
    if not objs:
        return "object_not_in_evidence"
    for s in subs:
        for o in objs:
            if s.end() <= o.start() or o.end() <= s.start():
                return (s.start(), s.end()), (o.start(), o.end())
    return "entities_overlap"


def mark(sentence: str, e1: tuple[int, int], e2: tuple[int, int]) -> str:
    """The sentence with <e1>..</e1> and <e2>..</e2> inserted, whitespace collapsed to single spaces."""
    inserts = sorted([(e1[0], E1), (e1[1], E1_END), (e2[0], E2), (e2[1], E2_END)], key=lambda x: x[0], reverse=True)
    out = sentence
    for pos, tag in inserts:
        out = out[:pos] + tag + out[pos:]
    return " ".join(out.split())


def sentences(text: str) -> list[tuple[int, int]]:
    """[start, end) spans of the sentences of ``text`` (a light regex splitter)."""
    spans, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        spans.append((start, m.start()))
        start = m.end()
    spans.append((start, len(text)))
    return [(a, b) for a, b in spans if text[a:b].strip()]


def noun_spans(sentence: str) -> list[tuple[int, int]]:
    """Runs of up to three consecutive non-stop words (joined by single spaces) as noun-ish spans."""
    runs: list[tuple[int, int]] = []
    cur: list[re.Match] = []

    def flush():
        if cur:
            runs.append((cur[0].start(), cur[-1].end()))
            cur.clear()

    for m in _WORD.finditer(sentence):
        w = m.group(0)
        ok = len(w) >= 3 and w.lower() not in STOP_WORDS and not w.isdigit()
        adjacent = cur and sentence[cur[-1].end():m.start()] == " "
        if ok and (not cur or (adjacent and len(cur) < 3)):
            cur.append(m)
        else:
            flush()
            if ok:
                cur.append(m)
    flush()
    return runs


def _positives(triples: pl.DataFrame, cfg: RelationConfig, stats: dict) -> pl.DataFrame:
    rows = []
    for t in triples.iter_rows(named=True):
        if t["relation"] not in RELATIONS:
            reason = "unknown_relation"
        elif t["confidence"] < cfg.min_confidence:
            reason = "low_confidence"
        else:
            found = find_entities(t["evidence"], t["subject"], t["object"])
            if isinstance(found, str):
                reason = found
            else:
                text = mark(t["evidence"], *found)
                if len(text) > cfg.max_chars:
                    reason = "too_long"
                else:
                    rows.append({"text": text, "label": t["relation"], "doc_id": t["doc_id"],
                                 "chunk_id": t["chunk_id"], "source": t["source"], "confidence": t["confidence"]})
                    continue
        stats[f"skipped.{reason}"] = stats.get(f"skipped.{reason}", 0) + 1
    frame = pl.DataFrame(rows, schema={**SCHEMA, "confidence": pl.Float64})
    # one label per marked sentence: the most confident triple wins
    deduped = frame.sort(["confidence", "doc_id", "chunk_id"], descending=[True, False, False]) \
        .unique(subset="text", keep="first", maintain_order=True)
    stats["skipped.duplicate_text"] = frame.height - deduped.height
    return deduped.sort(["doc_id", "chunk_id", "text"]).drop("confidence")


def _no_relation(chunks: pl.DataFrame, evidence: pl.DataFrame, target: int, cfg: RelationConfig,
                 salt: str, banned: set[str]) -> list[dict]:
    """Up to ``target`` no_relation examples from sentences of ``chunks`` that carry no triple
    (a marked text in ``banned``, i.e. in train already, is not used)."""
    if target <= 0 or chunks.height == 0:
        return []
    ev_spans: dict[str, list[tuple[int, int]]] = {}
    for cid, a, b in evidence.select("chunk_id", "evidence_start", "evidence_end").iter_rows():
        ev_spans.setdefault(cid, []).append((a, b))
    ev_texts = {" ".join(e.split()) for e in evidence["evidence"]}
    ids = chunks["chunk_id"].to_list()
    order = sorted(range(chunks.height), key=lambda i: doc_unit(cfg.seed, ids[i], salt))
    out: list[dict] = []
    seen: set[str] = set()
    for i in order:
        c = chunks.row(i, named=True)
        spans = ev_spans.get(c["chunk_id"], [])
        for a, b in sentences(c["text"]):
            if any(a < eb and ea < b for ea, eb in spans):
                continue
            sent = c["text"][a:b]
            norm = " ".join(sent.split())
            if len(norm) < cfg.min_sentence_chars or norm in ev_texts or norm in seen:
                continue
            nouns = noun_spans(sent)
            if len(nouns) < 2:
                continue
            u = doc_unit(cfg.seed, norm, salt + "-pick")
            k = int(u * len(nouns))
            j = (k + 1 + int(u * 1e6) % (len(nouns) - 1)) % len(nouns)
            e1, e2 = (nouns[k], nouns[j]) if int(u * 1e9) % 2 else (nouns[j], nouns[k])
            text = mark(sent, e1, e2)
            if len(text) > cfg.max_chars or text in banned:
                continue
            seen.add(norm)
            out.append({"text": text, "label": NO_RELATION, "doc_id": c["doc_id"], "chunk_id": c["chunk_id"],
                        "source": c["source"]})
            break  # at most one no_relation sentence per chunk: spread them over documents
        if len(out) >= target:
            break
    return out


def build_relation(triples: pl.DataFrame, chunks: pl.DataFrame, docs: pl.DataFrame, cfg: RelationConfig
                   ) -> tuple[dict[str, pl.DataFrame], dict[str, float]]:
    """Train/val/test relation examples; ``chunks``: chunk_id, doc_id, text; ``docs``: doc_id, source."""
    stats: dict[str, float] = {"triples_in": triples.height}
    chunks = chunks.select("chunk_id", "doc_id", "text").join(docs.select("doc_id", "source"), on="doc_id", how="inner")
    t = triples.join(chunks.select("chunk_id", "doc_id", "source"), on="chunk_id", how="left")
    orphan = t["doc_id"].is_null()
    stats["skipped.no_chunk"] = int(orphan.sum())
    t = t.filter(~orphan)
    pos = _positives(t, cfg, stats)
    plan = plan_docs(docs, cfg.seed, cfg.val_ratio, dict(cfg.mix_weights), test_ratio=cfg.test_ratio)
    stats.update(plan.stats)
    parts = plan.assign(pos)
    stats["skipped.mixed_out"] = parts["mixed_out"].height
    chunk_parts = plan.assign(chunks)
    out: dict[str, pl.DataFrame] = {}
    stats["skipped.text_in_train"] = 0
    stats["no_relation.text_in_train"] = 0
    before = pl.DataFrame(schema=SCHEMA)  # the texts of the splits built so far (train, then train + val)
    banned: set[str] = set()
    for split in ("train", "val", "test"):
        # held-out positives whose marked text an earlier split has are dropped before the no_relation target is set
        p, dropped = drop_cross_split_duplicates(before, parts[split], ["text"])
        stats["skipped.text_in_train"] += dropped
        classes = p["label"].n_unique()
        target = round(cfg.no_relation_ratio * p.height / classes) if classes else 0
        neg = pl.DataFrame(_no_relation(chunk_parts[split], t, target, cfg, f"norel-{split}", banned), schema=SCHEMA)
        stats[f"{split}.no_relation_target"] = target
        stats[f"{split}.no_relation_short_by"] = target - neg.height
        out[split] = pl.concat([p.select(list(SCHEMA)), neg]).sort(["doc_id", "chunk_id", "text"])
        # a held-out positive equal to an earlier split's no_relation text (same sentence in two documents)
        kept, _ = drop_cross_split_duplicates(before, out[split], ["text"])
        late = out[split].join(kept.select("text"), on="text", how="anti")
        stats["skipped.text_in_train"] += late.filter(pl.col("label") != NO_RELATION).height
        stats["no_relation.text_in_train"] += late.filter(pl.col("label") == NO_RELATION).height
        out[split] = kept
        before = pl.concat([before, kept.select(list(SCHEMA))])
        banned = set(before["text"])
    stats["triples_used"] = sum(out[s].filter(pl.col("label") != NO_RELATION).height for s in ("train", "val", "test"))
    stats.update(split_counts(out, "label", LABELS))
    stats.update(example_shares(out["train"]))
    return out, stats


def write_labels(out: Path) -> None:
    (Path(out) / "labels.json").write_text(json.dumps(LABELS, indent=2) + "\n", encoding="utf-8")
