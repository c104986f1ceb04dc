"""Standalone Hugging Face release: save_pretrained folders (safetensors, tokenizer, generation config,
model card with YAML metadata from the lineage) that load offline with plain transformers in a fresh
process and decode the same greedy tokens as the checkpoints they came from; `lineage export-hf`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ml.cli import main as lineage
from ml.export import hf_release
from ml.store import ArtifactStore, BuildResult
from tests.helpers.export_models import TEXTS, build_checkpoints

SUMMARY = {"lm_checkpoint": {"val": {"loss": 3.1, "perplexity": 22.2}, "steps": 80, "exported_weights": "last"},
           "lora_adapter": {"val": {"loss": 2.0, "perplexity": 7.39}, "steps": 5, "exported_weights": "last",
                            "best": {"metric": "loss", "mode": "min", "value": 2.0, "step": 5}},
           "dpo_adapter": {"val": {"loss": 0.6, "reward_accuracy": 0.75}, "steps": 3, "exported_weights": "last"}}
PROBE = """
import json, sys
from transformers import AutoModelForCausalLM, AutoTokenizer
folder, prompts = sys.argv[1], json.loads(sys.argv[2])
model = AutoModelForCausalLM.from_pretrained(folder).eval()
tok = AutoTokenizer.from_pretrained(folder)
out = []
for p in prompts:
    ids = tok(p, return_tensors="pt")
    out.append(model.generate(**ids)[0, ids["input_ids"].shape[1]:].tolist())  # generation_config.json only
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    dirs = build_checkpoints(tmp_path_factory.getbasetemp() / "checkpoints")
    st = ArtifactStore(tmp_path_factory.mktemp("hf") / "home")
    versions = {}
    for asset, src, up in (("lm_checkpoint", dirs["lm_checkpoint"], {}),
                           ("lora_adapter", dirs["lora_adapter"], {"lm_checkpoint": None}),
                           ("dpo_adapter", dirs["lm_checkpoint"], {"lora_adapter": None})):  # a full LM in model/
        def build(out: Path, src=src, asset=asset) -> BuildResult:
            shutil.copytree(src, out, dirs_exist_ok=True)
            (out / "summary.json").write_text(json.dumps(SUMMARY[asset]))
            return BuildResult(stats={"steps": SUMMARY[asset]["steps"]})
        up = {a: versions[a] for a in up}
        v = st.put(asset, build, fingerprint=f"{len(versions) + 1:016x}", code_version="test",
                   config={"train": {"max_steps": SUMMARY[asset]["steps"]}}, upstream=up)
        versions[asset] = v.data_version
    return st, versions


@pytest.fixture(scope="module")
def release(store, tmp_path_factory):
    st, versions = store
    out = tmp_path_factory.mktemp("release") / "release"
    index = hf_release.build_release(st, {"lora_adapter": versions["lora_adapter"], "dpo_adapter": versions["dpo_adapter"]},
                            out, prompts=4, max_new_tokens=12, log=lambda m: None)
    return out, index


def test_every_lm_is_a_complete_save_pretrained_folder(release, store):
    out, index = release
    _, versions = store
    assert sorted(index["models"]) == ["dpo", "lm", "sft"] and index["passed"]
    assert index["models"]["lm"]["data_version"] == versions["lm_checkpoint"]  # the sft model's base, released too
    for name in ("lm", "sft", "dpo"):
        files = {p.name for p in (out / name).iterdir()}
        assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
                "tokenizer_config.json", "README.md"} <= files, name
        assert not any(f.endswith((".bin", ".pt", ".pkl")) for f in files)
        gen = json.loads((out / name / "generation_config.json").read_text())
        assert gen["do_sample"] is False and gen["max_new_tokens"] == 12
    end = json.loads((out / "sft" / "generation_config.json").read_text())["eos_token_id"]
    assert isinstance(end, list) and len(end) == 2  # the chat model also stops at <|end|>
    assert index["models"]["sft"]["base"]["data_version"] == versions["lm_checkpoint"]


def test_model_card_metadata_and_text_come_from_the_lineage(release, store):
    out, _ = release
    _, versions = store
    text = (out / "sft" / "README.md").read_text()
    assert text.startswith("---\n")
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "text-generation"
    lf = meta["lineage_forge"]
    assert lf["asset"] == "lora_adapter" and lf["data_version"] == versions["lora_adapter"]
    assert lf["merged_into"] == f"lm_checkpoint@{versions['lm_checkpoint']}" and lf["greedy_parity_passed"] is True
    for section in ("## Training data", "## Training configuration", "## Metrics", "## Parity",
                    "## Intended use and limitations", "## Lineage"):
        assert section in text
    assert "| val | perplexity | 7.39 |" in text and "No held-out test split" in text
    assert f"`lm_checkpoint@{versions['lm_checkpoint']}`" in text and "max_steps: 5" in text
    assert "4/4 identical" in text
    dpo = (out / "dpo" / "README.md").read_text()
    assert "reward_accuracy" in dpo and "DPO preference pairs" in dpo


def test_release_loads_offline_in_a_fresh_process_and_matches_the_checkpoint(release, store, tmp_path):
    out, index = release
    st, _ = store
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(tmp_path / "empty_hf_home"))
    sources = {s.name: s for s in hf_release.release_sources(st, {"lora_adapter": index["models"]["sft"]["data_version"],
                                                         "dpo_adapter": index["models"]["dpo"]["data_version"]})}
    prompts = TEXTS[0][:60], TEXTS[4][:50], "<|system|><|end|><|user|>What is Python?<|end|><|assistant|>"
    for name in ("lm", "sft"):
        proc = subprocess.run([sys.executable, "-c", PROBE, str(out / name), json.dumps(prompts)], env=env,
                              cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        got = json.loads(proc.stdout.strip().splitlines()[-1])
        model, tok = hf_release.load_source(sources[name])  # the checkpoint through the project's loaders
        gen = hf_release.generation_config(tok, name in hf_release.CHAT_MODELS, 12)
        assert got == hf_release.greedy_tokens(model, tok, list(prompts), gen), name
        assert all(len(t) > 0 for t in got)


def test_greedy_parity_reports_a_mismatch(release):
    out, index = release
    gen = hf_release.generation_config(__import__("transformers").AutoTokenizer.from_pretrained(str(out / "lm")), False, 12)
    prompts = [TEXTS[1][:40]]
    wrong = [[5, 6, 7]]
    res = hf_release.greedy_parity(out / "lm", wrong, prompts, gen)
    assert res["passed"] is False and res["identical"] == 0 and res["first_mismatch"]["checkpoint"] == [5, 6, 7]


def test_lineage_export_hf_from_a_checkpoint_and_from_a_release_version(release, store, tmp_path, monkeypatch,
                                                                        capsys):
    out, _ = release
    st, versions = store
    monkeypatch.setenv("LINEAGE_HOME", str(st.home))
    dest = tmp_path / "from_ckpt"
    assert lineage(["export-hf", f"lm_checkpoint@{versions['lm_checkpoint'][:8]}", str(dest)]) == 0
    assert (dest / "lm" / "model.safetensors").is_file() and (dest / hf_release.INDEX).is_file()
    assert lineage(["export-hf", f"lm_checkpoint@{versions['lm_checkpoint'][:8]}", str(dest)]) == 1  # not empty
    assert "not an empty directory" in capsys.readouterr().err

    def build(o: Path) -> BuildResult:
        shutil.copytree(out, o / hf_release.RELEASE_DIR)
        return BuildResult()

    rel = st.put(hf_release.ASSET, build, fingerprint="f" * 16, code_version="test", config={}, upstream={})
    one = tmp_path / "sft_only"
    assert lineage(["export-hf", rel.data_version[:10], str(one), "--model", "sft"]) == 0
    assert (one / "config.json").is_file() and (one / "README.md").is_file()
    assert lineage(["export-hf", "latest", str(tmp_path / "all")]) == 0
    assert sorted(p.name for p in (tmp_path / "all").iterdir()) == ["dpo", "lm", hf_release.INDEX, "sft"]
    assert lineage(["export-hf", "0000", str(tmp_path / "none")]) == 1
    assert lineage(["export-hf", "relation_checkpoint@00", str(tmp_path / "none")]) == 1
    assert "not a language-model checkpoint" in capsys.readouterr().err
