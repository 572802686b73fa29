"""Small Hugging Face tokenizers and text-model configs built offline (never from a hub).

`save_tokenizer(kind, dir)` trains a tokenizer with the `tokenizers` library in the style of a real family
and saves it as transformers would (`AutoTokenizer.from_pretrained(dir)` loads it):

* ``unigram_t5``  SentencePiece Unigram, `$A </s>`, pad `</s>` (id 1) - SigLIP (T5 / mc4 vocabularies)
* ``unigram_gemma`` SentencePiece Unigram, `$A </s>`, pad `<pad>` (id 0), bos 2 - SigLIP2 (Gemma)
* ``unigram_xlmr`` SentencePiece Unigram, `<s> $A </s>`, pad `<pad>` (id 1) - xlm-roberta / MetaCLIP2 xlm-v
* ``wordpiece``   BERT uncased WordPiece, `[CLS] $A [SEP]`, pad 0 - CLIPA (bert-base-uncased)
* ``nllb``        Unigram + NLLB language codes (`eng_Latn $A </s>`), pad 1 - NLLB
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.handler.tok_corpus import corpus

MULTILINGUAL = [
    "a photo of a cat",
    "Ein Foto einer Katze auf dem Sofa",
    "une photo d'un chat noir",
    "una foto de un perro",
    "猫の写真です",
    "一只猫的照片",
    "고양이 사진",
    "фотография кошки",
    "صورة قطة",
    "बिल्ली की तस्वीर",
    "ภาพแมว",
    "Φωτογραφία μιας γάτας",
    "zdjęcie kota",
    "kedi fotoğrafı",
    "תמונה של חתול",
    "emoji 🐱🚀👍🏽 👨‍👩‍👧",
]
NLLB_CODES = ["eng_Latn", "fra_Latn", "deu_Latn", "zho_Hans", "jpn_Jpan", "arb_Arab"]
KINDS = ("unigram_t5", "unigram_gemma", "unigram_xlmr", "wordpiece", "nllb")


def training_text() -> list[str]:
    return MULTILINGUAL * 20 + corpus(600, seed=7)


def _unigram(special: list[str], vocab_size: int = 4000):
    from tokenizers import SentencePieceUnigramTokenizer

    tok = SentencePieceUnigramTokenizer()
    tok.train_from_iterator(
        training_text(), vocab_size=vocab_size, special_tokens=special, unk_token="<unk>", show_progress=False
    )
    return tok._tokenizer


def build(kind: str):
    """(tokenizers.Tokenizer, kwargs for PreTrainedTokenizerFast)."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece
    from tokenizers.trainers import WordPieceTrainer

    if kind == "wordpiece":
        special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        tok = Tokenizer(WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.train_from_iterator(
            training_text(), WordPieceTrainer(vocab_size=4000, special_tokens=special, show_progress=False)
        )
        cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
        )
        return tok, {
            "pad_token": "[PAD]",
            "unk_token": "[UNK]",
            "cls_token": "[CLS]",
            "sep_token": "[SEP]",
            "mask_token": "[MASK]",
        }
    if kind == "unigram_t5":
        tok = _unigram(["<pad>", "</s>", "<unk>"])
        tok.post_processor = processors.TemplateProcessing(
            single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
        )
        return tok, {"pad_token": "</s>", "eos_token": "</s>", "unk_token": "<unk>"}
    if kind == "unigram_gemma":
        tok = _unigram(["<pad>", "<eos>", "<bos>", "<unk>"])
        tok.post_processor = processors.TemplateProcessing(
            single="$A <eos>", pair="$A <eos> $B <eos>", special_tokens=[("<eos>", 1)]
        )
        return tok, {"pad_token": "<pad>", "eos_token": "<eos>", "bos_token": "<bos>", "unk_token": "<unk>"}
    if kind == "unigram_xlmr":
        tok = _unigram(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
        )
        return tok, {
            "pad_token": "<pad>",
            "bos_token": "<s>",
            "eos_token": "</s>",
            "unk_token": "<unk>",
            "sep_token": "</s>",
            "cls_token": "<s>",
            "mask_token": "<mask>",
        }
    if kind == "nllb":  # transformers' NllbTokenizer is a Metaspace BPE built from vocab + merges
        from tokenizers.models import BPE
        from tokenizers.trainers import BpeTrainer

        tok = Tokenizer(BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
        tok.train_from_iterator(
            training_text(),
            BpeTrainer(
                vocab_size=4000, show_progress=False, special_tokens=["<s>", "<pad>", "</s>", "<unk>"]
            ),
        )
        return tok, {}
    raise ValueError(kind)


def save_tokenizer(kind: str, out: Path) -> Path:
    from transformers import PreTrainedTokenizerFast

    tok, special = build(kind)
    if kind == "nllb":
        from transformers import NllbTokenizer

        model = json.loads(tok.to_str())["model"]
        merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
        hf = NllbTokenizer(
            vocab=model["vocab"], merges=merges, src_lang="eng_Latn", extra_special_tokens=NLLB_CODES
        )
    else:
        hf = PreTrainedTokenizerFast(tokenizer_object=tok, **special)
    out.mkdir(parents=True, exist_ok=True)
    hf.save_pretrained(str(out))
    return out


def save_text_config(
    model_type: str,
    out: Path,
    *,
    vocab_size: int,
    pad_token_id: int,
    context_length: int,
    width: int = 32,
    layers: int = 2,
    heads: int = 2,
) -> Path:
    """A tiny HF text-model config (random init; weights are never needed)."""
    from transformers import AutoConfig

    common = {"vocab_size": vocab_size, "pad_token_id": pad_token_id}
    if model_type in ("xlm-roberta", "roberta"):
        cfg = AutoConfig.for_model(
            model_type,
            hidden_size=width,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=2 * width,
            max_position_embeddings=context_length + pad_token_id + 2,
            **common,
        )
    elif model_type == "mt5":
        cfg = AutoConfig.for_model(
            model_type,
            d_model=width,
            num_layers=layers,
            num_heads=heads,
            d_kv=width // heads,
            d_ff=2 * width,
            **common,
        )
    elif model_type == "m2m_100":  # NLLB
        cfg = AutoConfig.for_model(
            model_type,
            d_model=width,
            encoder_layers=layers,
            decoder_layers=1,
            encoder_attention_heads=heads,
            decoder_attention_heads=heads,
            encoder_ffn_dim=2 * width,
            decoder_ffn_dim=2 * width,
            max_position_embeddings=context_length + 2,
            **common,
        )
    else:
        raise ValueError(model_type)
    out.mkdir(parents=True, exist_ok=True)
    cfg.save_pretrained(str(out))
    return out
