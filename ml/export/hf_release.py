"""Standalone Hugging Face release of every language model (lm, sft, dpo), with a model card made from the lineage.

Every folder loads with plain ``AutoModelForCausalLM.from_pretrained`` offline, and is checked when built:
its greedy tokens on the sample prompts must equal the checkpoint's, else the release fails its gate.
Folders and the model card: DESIGN.md, "Module notes"; files: ml/FORMATS.md, "hf_release".
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from ml.fsutil import atomic_write_json
from ml.store import ArtifactStore

FORMAT = "lineage-forge/hf-release/1"
ASSET = "hf_release"
RELEASE_DIR = "release"  # in an hf_release version: release/<model>/ and release/release.json
INDEX = "release.json"
CARD = "README.md"
# release name -> (checkpoint asset, how its weights are made)
RELEASE_MODELS = {
    "lm": ("lm_checkpoint", "causal LM trained from scratch on tokenized_corpus"),
    "sft": ("lora_adapter", "the LM fine-tuned on sft_dataset (LoRA merged into the base weights)"),
    "dpo": ("dpo_adapter", "the SFT model aligned with DPO on preference_dataset (weights merged)"),
}
CHAT_MODELS = ("sft", "dpo")
BUILTIN_PROMPTS = ["The function returns", "A module is", "What does the parser raise?", "In Python, a list"]
LM_PROMPT_TOKENS = 24  # a running-text sample is cut to its first tokens: the model continues it


class ReleaseError(ValueError):
    pass


@dataclass
class ReleaseSource:
    name: str
    asset: str
    data_version: str
    version_dir: Path
    base: dict[str, Any] | None = None  # lora_adapter: the lm_checkpoint version merged in
    prompts: list[str] = field(default_factory=list)
    prompts_from: list[dict[str, Any]] = field(default_factory=list)


def release_sources(store: ArtifactStore, versions: Mapping[str, str]) -> list[ReleaseSource]:
    """The LMs to release from ``{checkpoint asset: version}`` (a lora_adapter without an explicit
    lm_checkpoint also releases the base it was trained on)."""
    versions = dict(versions)
    if "lora_adapter" in versions and "lm_checkpoint" not in versions:
        base = store.get("lora_adapter", versions["lora_adapter"]).manifest.get("upstream", {}).get("lm_checkpoint")
        if base:
            versions["lm_checkpoint"] = base
    out = []
    for name, (asset, _) in RELEASE_MODELS.items():
        if asset not in versions:
            continue
        ver = store.get(asset, versions[asset])
        src = ReleaseSource(name, asset, ver.data_version, ver.path)
        if asset == "lora_adapter" and (ver.path / "adapter").is_dir():
            base = ver.manifest.get("upstream", {}).get("lm_checkpoint")
            if not base or not store.has_version("lm_checkpoint", base):
                raise ReleaseError(f"lora_adapter@{ver.data_version}: its base lm_checkpoint {base!r} is not in the "
                                   "store, so the LoRA cannot be merged")
            src.base = {"asset": "lm_checkpoint", "data_version": base, "path": store.get("lm_checkpoint", base).path}
        out.append(src)
    if not out:
        raise ReleaseError(f"nothing to release: no version of {sorted(a for a, _ in RELEASE_MODELS.values())} given")
    return out


def load_source(src: ReleaseSource):
    """(model, tokenizer) of the checkpoint exactly as the project loads it (fp32, eval, LoRA merged)."""
    from ml.train import models

    if src.base is not None:
        model, tok = models.load_lora_merged(src.version_dir, src.base["path"])
    else:
        model, tok = models.load_lm(src.version_dir)
    return model.float().eval(), tok


def pick_prompts(store: ArtifactStore, src: ReleaseSource, n: int) -> None:
    """Real prompts from the model's lineage (SFT val prompts, else cut val documents), else built-in ones."""
    from ml.export.sources import SourceError, sample_texts

    try:
        texts, cuts, where = sample_texts(store, src.asset, src.data_version, "causal_lm", n,
                                          src.version_dir / "tokenizer")
    except SourceError:
        texts, cuts, where = list(BUILTIN_PROMPTS[:n]), [False] * min(n, len(BUILTIN_PROMPTS)), [{"builtin": True}]
    src.prompts, src.prompts_from = [], where
    tok = None
    for text, cut in zip(texts, cuts):
        if cut:  # running text: its first tokens
            if tok is None:
                from ml.export.to_onnx import load_tokenizer

                tok = load_tokenizer(src.version_dir / "tokenizer")
            text = tok.decode(tok(text)["input_ids"][:LM_PROMPT_TOKENS])
        if text.strip():
            src.prompts.append(text)


def generation_config(tok, chat: bool, max_new_tokens: int):
    from transformers import GenerationConfig

    eos = [tok.eos_token_id]
    end = tok.convert_tokens_to_ids("<|end|>") if chat else None
    if isinstance(end, int) and end >= 0 and end != tok.unk_token_id and end not in eos:
        eos.append(end)
    return GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=max_new_tokens, bos_token_id=tok.bos_token_id,
                            eos_token_id=eos if len(eos) > 1 else eos[0], pad_token_id=tok.pad_token_id)


def greedy_tokens(model, tok, prompts: list[str], gen) -> list[list[int]]:
    """The new tokens greedy decoding appends to each prompt (one prompt at a time: no padding)."""
    import torch

    out = []
    with torch.inference_mode():
        for p in prompts:
            enc = tok(p, return_tensors="pt")
            seq = model.generate(**enc, generation_config=gen)
            out.append(seq[0, enc["input_ids"].shape[1]:].tolist())
    return out


def greedy_parity(folder: Path, reference: list[list[int]], prompts: list[str], gen) -> dict[str, Any]:
    """Load ``folder`` with plain transformers (offline) and compare its greedy tokens with ``reference``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True, use_safetensors=True).eval()
    tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    got = greedy_tokens(model, tok, prompts, gen)
    same = [a == b for a, b in zip(got, reference)]
    first_diff = next((i for i, s in enumerate(same) if not s), None)
    return {"prompts": len(prompts), "identical": int(sum(same)), "max_new_tokens": gen.max_new_tokens,
            "passed": bool(prompts) and all(same),
            "examples": [{"prompt": p[-120:], "continuation": tok.decode(t)} for p, t in zip(prompts[:3], got[:3])],
            "first_mismatch": None if first_diff is None else {
                "prompt": prompts[first_diff][-120:], "release": got[first_diff], "checkpoint": reference[first_diff]}}


def _num(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _stats_lines(stats: Mapping[str, Any], limit: int = 14) -> list[str]:
    keys = [k for k in stats if not k.startswith(("lines_removed.", "skipped.", "lsh."))][:limit]
    return [f"  - `{k}`: {_num(stats[k])}" for k in keys]


def model_card(src: ReleaseSource, store: ArtifactStore, *, metrics: dict[str, Any], parity: dict[str, Any],
               bundle: dict[str, Any] | None, lineage: dict[str, Any], config: dict[str, Any], model_info: dict) -> str:
    """README.md: YAML metadata + the sections a reader of a model card expects, all from the lineage."""
    import yaml

    manifest = store.get(src.asset, src.data_version).manifest
    upstream = dict(manifest.get("upstream", {}))
    data = {a: v for a, v in upstream.items() if a not in ("tokenizer", "lm_checkpoint", "lora_adapter")}
    val = metrics.get("val") or {}
    results = [{"task": {"type": "text-generation", "name": "causal language modelling"},
                "dataset": {"name": f"{a}@{v}", "type": f"lineage-forge/{a}", "split": "val"},
                "metrics": [{"type": k, "value": round(float(val[k]), 6), "name": f"val {k}"}
                            for k in ("loss", "perplexity", "token_accuracy", "reward_accuracy", "margin") if k in val]}
               for a, v in sorted(data.items()) if a.endswith(("corpus", "dataset"))][:1]
    meta = {
        "library_name": "transformers", "pipeline_tag": "text-generation", "language": ["en"], "license": "other",
        "tags": ["lineage-forge", model_info["architecture"], src.name,
                 *(["lora-merged"] if src.base else []), *(["dpo"] if src.name == "dpo" else [])],
        "model-index": [{"name": f"lineage-forge-{src.name}-{src.data_version[:8]}",
                         "results": [r for r in results if r["metrics"]]}],
        "lineage_forge": {
            "asset": src.asset, "data_version": src.data_version, "code_version": manifest.get("code_version"),
            "upstream": upstream,
            **({"merged_into": f"{src.base['asset']}@{src.base['data_version']}"} if src.base else {}),
            "raw_docs": lineage.get("raw_docs", []), "landing": lineage.get("landing", {}),
            "greedy_parity_passed": parity["passed"],
            **({"onnx_bundle": bundle["data_version"]} if bundle else {}),
        },
    }
    if not meta["model-index"][0]["results"]:
        del meta["model-index"]
    what = RELEASE_MODELS[src.name][1]
    lines = ["---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).rstrip(), "---", "",
             f"# lineage-forge `{src.name}` — {src.asset}@{src.data_version}", "",
             f"A {model_info['architecture']} with {model_info['parameters']:,} parameters: {what}. "
             f"Vocabulary {model_info['vocab_size']:,} (byte-level BPE, `tokenizer.json`), context "
             f"{model_info['max_positions']} positions. Built by lineage-forge "
             "from versioned data; every version below can be traced with `lineage trace`.", "",
             "## How to use", "", "```python",
             "from transformers import AutoModelForCausalLM, AutoTokenizer",
             "model = AutoModelForCausalLM.from_pretrained(\"PATH/TO/THIS/FOLDER\")",
             "tok = AutoTokenizer.from_pretrained(\"PATH/TO/THIS/FOLDER\")"]
    if src.name in CHAT_MODELS:
        lines += ["prompt = tok.apply_chat_template([{\"role\": \"user\", \"content\": \"What does json.dumps return?\"}],",
                  "                               tokenize=False, add_generation_prompt=True)"]
    else:
        lines += ["prompt = \"The function returns\""]
    lines += ["ids = tok(prompt, return_tensors=\"pt\")",
              "out = model.generate(**ids)  # generation_config.json: greedy, stops at <|eos|>"
              + (" or <|end|>" if src.name in CHAT_MODELS else ""),
              "print(tok.decode(out[0, ids[\"input_ids\"].shape[1]:]))", "```", "",
              "The tokenizer adds no BOS/EOS (the model was trained without them)." +
              (" Chat prompts follow `chat_template.jinja`: `<|system|>…<|end|><|user|>…<|end|><|assistant|>`."
               if src.name in CHAT_MODELS else ""), "", "## Training data", ""]
    for a, v in sorted(upstream.items()):
        if not store.has_version(a, v):
            lines.append(f"- `{a}@{v}` (not in the store any more)")
            continue
        lines.append(f"- `{a}@{v}`")
        lines += _stats_lines(store.get(a, v).manifest.get("stats") or {})
    if src.base:
        lines.append(f"- base weights: `{src.base['asset']}@{src.base['data_version']}` (its own card: the `lm` model)")
    lines += ["", "## Training configuration", "", "```yaml",
              yaml.safe_dump(config, sort_keys=True).rstrip(), "```", "", "## Metrics", ""]
    if val:
        lines += ["| split | metric | value |", "|---|---|---|"]
        lines += [f"| val | {k} | {_num(v)} |" for k, v in sorted(val.items())]
        for k, v in sorted((metrics.get("test") or {}).items()):
            lines.append(f"| test | {k} | {_num(v)} |")
    else:
        lines.append("No validation metrics were recorded for this checkpoint.")
    if not metrics.get("test"):
        lines += ["", "No held-out test split exists in this pipeline yet: the figures above are validation figures "
                      "(documents split by a seeded hash of doc_id, never in training)."]
    best = metrics.get("best") or {}
    lines += ["", f"Steps: {metrics.get('steps')}; published weights: {metrics.get('exported_weights')}"
              + (f"; best {best.get('metric')} {_num(best.get('value'))} at step {best.get('step')}" if best else "") + "."]
    if metrics.get("base"):
        bval = metrics["base"].get("val") or {}
        lines.append("Base LM validation: " + ", ".join(f"{k} {_num(v)}" for k, v in sorted(bval.items())) + ".")
    lines += ["", "## Parity", "",
              f"- This folder vs the checkpoint it came from, greedy decoding of {parity['max_new_tokens']} new tokens "
              f"on {parity['prompts']} sample prompts: {parity['identical']}/{parity['prompts']} identical "
              f"({'passed' if parity['passed'] else 'FAILED'})."]
    if bundle and bundle.get("parity"):
        for prec, r in sorted(bundle["parity"].items()):
            figs = ", ".join(f"{k} {_num(v)}" for k, v in r.items() if k != "passed" and v is not None)
            lines.append(f"- ONNX `{bundle['component']}` {prec} vs PyTorch (onnx_bundle@{bundle['data_version']}): "
                         f"{'passed' if r.get('passed') else 'FAILED'}; {figs}")
        if bundle.get("bytes"):
            lines.append("- ONNX file sizes: " + ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in bundle["bytes"].items()
                                                          if not k.endswith("ratio")))
    lines += ["", "## Intended use and limitations", "",
              "- Intended for research on data and model lineage, for tests and demos of the pipeline, and as a "
              "reproducible baseline: every weight traces back to the exact documents it was trained on.",
              f"- It is a small model ({model_info['parameters']:,} parameters) trained on the corpus listed above "
              "(documentation text, English): it continues text in that style and answers only questions whose "
              "answers it saw; its output is often wrong and must not be trusted as fact or used for decisions.",
              "- No safety tuning beyond what the data gives" + (" and the DPO preference pairs" if src.name == "dpo"
                                                                  else "") + "; not for production or end users.",
              "- The SFT answers imitate relation triples extracted by rules, with their mistakes."
              if src.name in CHAT_MODELS else "- It is not instruction-tuned: prompt it with text to continue.",
              "", "## Lineage", ""]
    for node in lineage.get("nodes", [])[:40]:
        lines.append(f"- `{node['asset']}@{node['data_version']}` (code {node.get('code_version')})")
    for k, v in sorted((lineage.get("landing") or {}).items()):
        lines.append(f"- `{k}` sha256 {v}")
    return "\n".join(lines) + "\n"


def _model_info(model) -> dict[str, Any]:
    cfg = model.config
    return {"architecture": type(model).__name__, "parameters": int(sum(p.numel() for p in model.parameters())),
            "vocab_size": int(cfg.vocab_size), "max_positions": int(getattr(cfg, "max_position_embeddings", 0) or
                                                                   getattr(cfg, "n_positions", 0) or 0)}


def build_release(store: ArtifactStore, versions: Mapping[str, str], out: Path, *, prompts: int = 8,
                  max_new_tokens: int = 16, bundle: dict[str, Any] | None = None,
                  log: Callable[[str], None] = print) -> dict[str, Any]:
    """Write one folder per LM under ``out`` and ``out/release.json``; returns the index.

    ``bundle``: the onnx_bundle manifest (and ``data_version``) the checkpoints were exported in: its
    parity figures go into the model cards."""
    from ml.export.metrics import checkpoint_metrics
    from ml.export.sources import walk_lineage

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    index: dict[str, Any] = {"format": FORMAT, "models": {}}
    components = {m.get("source", {}).get("asset"): (name, m) for name, m in (bundle or {}).get("models", {}).items()}
    for src in release_sources(store, versions):
        pick_prompts(store, src, prompts)
        model, tok = load_source(src)
        gen = generation_config(tok, src.name in CHAT_MODELS, max_new_tokens)
        reference = greedy_tokens(model, tok, src.prompts, gen)
        folder = out / src.name
        model.generation_config = gen
        model.save_pretrained(str(folder), safe_serialization=True)
        tok.save_pretrained(str(folder))
        gen.save_pretrained(str(folder))
        info = _model_info(model)
        del model
        parity = greedy_parity(folder, reference, src.prompts, gen)
        parity["prompts_from"] = src.prompts_from
        log(f"{src.name}: {src.asset}@{src.data_version} -> {folder.name}/ ({info['parameters']:,} parameters); greedy "
            f"tokens identical on {parity['identical']}/{parity['prompts']} prompts")
        metrics = checkpoint_metrics(store, src.asset, src.data_version)
        up = {src.asset: src.data_version}
        lineage = walk_lineage(store, up)
        comp = components.get(src.asset)
        bundle_view = None
        if comp is not None and bundle is not None:
            name, m = comp
            bundle_view = {"component": name, "data_version": bundle.get("data_version"), "parity": m.get("parity"),
                           "bytes": m.get("bytes")}
        config = store.get(src.asset, src.data_version).manifest.get("config") or {}
        (folder / CARD).write_text(model_card(src, store, metrics=metrics, parity=parity, bundle=bundle_view,
                                              lineage=lineage, config=config, model_info=info), "utf-8")
        index["models"][src.name] = {
            "folder": f"{src.name}/", "asset": src.asset, "data_version": src.data_version,
            "base": {k: v for k, v in (src.base or {}).items() if k != "path"} or None,
            "model": info, "metrics": metrics, "greedy_parity": parity, "bundle": bundle_view,
            "files": sorted(p.name for p in folder.iterdir()),
        }
    index["passed"] = all(m["greedy_parity"]["passed"] for m in index["models"].values())
    atomic_write_json(out / INDEX, index)
    return index


def copy_release(src_dir: Path, dest: Path, model: str | None = None) -> list[Path]:
    """Copy a release (or one model folder of it) to ``dest`` (new or empty), atomically per call:
    a sibling temporary directory renamed into place. Returns the model folders written."""
    src_dir, dest = Path(src_dir), Path(dest)
    index = json.loads((src_dir / INDEX).read_text("utf-8"))
    names = [model] if model else sorted(index["models"])
    for n in names:
        if n not in index["models"]:
            raise ReleaseError(f"this release has no model {n!r}; it has {sorted(index['models'])}")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ReleaseError(f"{dest} exists and is not an empty directory; choose a new one")
    tmp = dest.with_name(f".{dest.name}.partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    if model:
        shutil.copytree(src_dir / model, tmp)
    else:
        tmp.mkdir(parents=True)
        for n in names:
            shutil.copytree(src_dir / n, tmp / n)
        shutil.copyfile(src_dir / INDEX, tmp / INDEX)
    for p in tmp.rglob("*"):
        if p.is_file():
            p.chmod(0o644)
    if dest.exists():
        dest.rmdir()
    tmp.rename(dest)
    return [dest] if model else [dest / n for n in names]
