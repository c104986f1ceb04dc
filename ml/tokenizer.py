"""Byte-level BPE tokenizer: train with HF ``tokenizers``, save and load as ``PreTrainedTokenizerFast``.

No normalizer, no prefix space and no post-processor, so ``decode(encode(text)) == text`` and encoding
adds no BOS/EOS; raw text never turns into special ids (``encoder``). Layout: ml/FORMATS.md, "tokenizer",
and DESIGN.md, "Module notes".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

PAD, UNK, BOS, EOS = "<|pad|>", "<|unk|>", "<|bos|>", "<|eos|>"
SYSTEM, USER, ASSISTANT, END = "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"
E1, E1_END, E2, E2_END = "<e1>", "</e1>", "<e2>", "</e2>"
# ids 0..11 in this order (ml/FORMATS.md): part of the contract between every stage
SPECIAL_TOKENS: tuple[str, ...] = (PAD, UNK, BOS, EOS, SYSTEM, USER, ASSISTANT, END, E1, E1_END, E2, E2_END)
ENTITY_MARKERS = (E1, E1_END, E2, E2_END)
NAMED = {"pad_token": PAD, "unk_token": UNK, "bos_token": BOS, "eos_token": EOS}
BYTE_ALPHABET = 256
MIN_VOCAB = len(SPECIAL_TOKENS) + BYTE_ALPHABET

# Jinja chat template equal to ml/datasets/sft.py: chat_prompt (saved with the tokenizer so
# ``apply_chat_template`` produces the same text the SFT data was written in).
CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}<|system|>{{ m['content'] }}<|end|>"
    "{% elif m['role'] == 'user' %}<|user|>{{ m['content'] }}<|end|>"
    "{% elif m['role'] == 'assistant' %}<|assistant|>{{ m['content'] }}<|end|>"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


class TokenizerFormatError(ValueError):
    """A tokenizer directory that does not follow the contract (missing file, wrong special ids)."""


@dataclass(frozen=True)
class TokenizerConfig:
    vocab_size: int = 16_384
    min_frequency: int = 2
    max_token_length: int | None = 32
    """Longest merged token in characters (None: unlimited); keeps the vocabulary from memorising lines."""
    model_max_length: int = 1024
    """Written to tokenizer_config.json; the longest input later models are expected to take."""
    measure_chars: int = 4_000_000
    """chars_per_token is measured on (about) this many characters of the val documents."""

    def __post_init__(self) -> None:
        if self.vocab_size < MIN_VOCAB:
            raise ValueError(f"vocab_size {self.vocab_size} is below the minimum {MIN_VOCAB} "
                             f"({len(SPECIAL_TOKENS)} special tokens + {BYTE_ALPHABET} bytes)")
        if self.vocab_size > 2**32 - 1:
            raise ValueError(f"vocab_size {self.vocab_size} does not fit uint32 token ids")
        if self.min_frequency < 1:
            raise ValueError(f"min_frequency must be >= 1, got {self.min_frequency}")
        if self.max_token_length is not None and self.max_token_length < 1:
            raise ValueError(f"max_token_length must be >= 1 or None, got {self.max_token_length}")


def train_tokenizer(texts: Iterable[str], cfg: TokenizerConfig = TokenizerConfig()):
    """Train a byte-level BPE ``tokenizers.Tokenizer`` on ``texts`` (strings or batches of strings)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size, min_frequency=cfg.min_frequency, special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
        max_token_length=cfg.max_token_length,
    )
    tok.train_from_iterator(texts, trainer)
    check_special_ids(tok.token_to_id)
    return tok


def check_special_ids(token_to_id) -> None:
    for i, t in enumerate(SPECIAL_TOKENS):
        got = token_to_id(t)
        if got != i:
            raise TokenizerFormatError(f"special token {t!r} has id {got}, the contract says {i}")


def to_transformers(tok, model_max_length: int = TokenizerConfig.model_max_length):
    """Wrap a ``tokenizers.Tokenizer`` as ``PreTrainedTokenizerFast`` with the special tokens set."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tok, **NAMED, extra_special_tokens=list(SPECIAL_TOKENS[4:]),
        model_max_length=model_max_length, chat_template=CHAT_TEMPLATE,
    )


def save_tokenizer(tok, out_dir: Path, model_max_length: int = TokenizerConfig.model_max_length) -> list[str]:
    """``save_pretrained`` into out_dir (tokenizer.json, tokenizer_config.json, chat template)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return [str(p) for p in to_transformers(tok, model_max_length).save_pretrained(str(out_dir))]


def load_tokenizer(path: Path | str):
    """The ``PreTrainedTokenizerFast`` saved in ``path`` (a tokenizer version dir or a checkpoint's
    ``tokenizer/``), with bos/eos/pad/unk set; raises ``TokenizerFormatError`` if it breaks the contract."""
    from transformers import PreTrainedTokenizerFast

    path = Path(path)
    if not (path / "tokenizer.json").is_file():
        raise TokenizerFormatError(f"no tokenizer.json in {path}")
    tok = PreTrainedTokenizerFast.from_pretrained(str(path))
    check_special_ids(tok.convert_tokens_to_ids)
    for attr, want in NAMED.items():
        if getattr(tok, attr) != want:
            raise TokenizerFormatError(f"{path}: {attr} is {getattr(tok, attr)!r}, expected {want!r}")
    return tok


def load_backend(path: Path | str):
    """The raw ``tokenizers.Tokenizer`` of ``path/tokenizer.json`` (fast batch encoding, no transformers)."""
    from tokenizers import Tokenizer

    f = Path(path) / "tokenizer.json"
    if not f.is_file():
        raise TokenizerFormatError(f"no tokenizer.json in {path}")
    tok = Tokenizer.from_file(str(f))
    check_special_ids(tok.token_to_id)
    return tok


def text_encoder(tok):
    """A copy of ``tok`` that encodes special-token strings found in raw text as plain text."""
    from tokenizers import Tokenizer

    plain = Tokenizer.from_str(tok.to_str())
    plain.encode_special_tokens = True
    return plain


def encode_texts(tok, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text, in parallel (Rust threads), without offsets."""
    fast = getattr(tok, "encode_batch_fast", None) or tok.encode_batch
    return [e.ids for e in fast(list(texts), add_special_tokens=False)]


def batched(texts: Iterable[str], size: int = 1000) -> Iterator[list[str]]:
    batch: list[str] = []
    for t in texts:
        batch.append(t)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def chars_per_token(tok, texts: Sequence[str]) -> tuple[int, int]:
    """(characters, tokens) of ``texts`` encoded as plain text."""
    enc = text_encoder(tok)
    chars = tokens = 0
    for batch in batched(texts, 2000):
        chars += sum(len(t) for t in batch)
        tokens += sum(len(ids) for ids in encode_texts(enc, batch))
    return chars, tokens


def build_tokenizer(train_texts: Sequence[str], val_texts: Sequence[str], out_dir: Path,
                    cfg: TokenizerConfig = TokenizerConfig()) -> dict[str, float]:
    """Train on ``train_texts``, save into ``out_dir``, return stats (chars/token measured on val)."""
    if not train_texts:
        raise ValueError("no training text for the tokenizer (the train split is empty)")
    tok = train_tokenizer(batched(train_texts), cfg)
    save_tokenizer(tok, out_dir, cfg.model_max_length)
    stats: dict[str, float] = {
        "vocab_size": tok.get_vocab_size(), "vocab_size_requested": cfg.vocab_size,
        "special_tokens": len(SPECIAL_TOKENS), "train_docs": len(train_texts), "val_docs": len(val_texts),
        "train_chars": sum(len(t) for t in train_texts),
    }
    measured_on = val_texts if val_texts else train_texts  # a tiny corpus may have no val document
    sample, size = [], 0
    for t in measured_on:  # the first cfg.measure_chars characters are plenty for a ratio
        if size >= cfg.measure_chars:
            break
        sample.append(t)
        size += len(t)
    chars, tokens = chars_per_token(tok, sample)
    key = "val" if val_texts else "train"
    stats[f"chars_per_token.{key}"] = chars / tokens if tokens else 0.0
    stats["chars_per_token.measured_chars"] = chars
    return stats


def special_ids() -> dict[str, int]:
    return {t: i for i, t in enumerate(SPECIAL_TOKENS)}

