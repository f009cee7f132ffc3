"""Tiny random-init SigLIP and LLaVA-OneVision checkpoints for the demo and the tests.

They keep the real geometry (384×384 input, 14-pixel patches → 27×27 = 729 tokens per frame, 2×2
bilinear pooling → 196, one newline) and shrink only widths and depths, so every code path a real
checkpoint takes — ``from_pretrained`` on a directory, the tokenizer with its ``<video>`` token, the
projector, the pooling — runs here offline in seconds. Weights are seeded: the same call builds the
same checkpoint bit for bit.

``build_learnable_llava_ov`` is the tiny model `vtc demo` and the learning tests train: 112×112 frames
(8×8 patches, 4×4 = 16 tokens per frame after the pooling, 129 tokens for 8 frames) and a wider
initialisation, so that it learns the synthetic video-QA set from the pixels within 90 s on two CPU cores.
"""

from __future__ import annotations

from pathlib import Path

# Qwen2-style special tokens the LLaVA-OV prompt uses; <image>/<video> are the placeholders the model
# replaces with visual features.
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"]
# Qwen2.5-VL's: a video is <|vision_start|>, one <|video_pad|> per token, <|vision_end|>.
QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]


# Measured on the synthetic set (tests/test_train_learns.py), 1,000 steps of 8 samples: at Qwen2's
# initializer_range 0.02 held-out accuracy stayed at chance after 4,800 samples, at 0.1 colour reached 100%
# after 800. The multi-frame questions need many more samples: at 384×384 frames (1,569 tokens) 90 s
# of training is 90 steps, at 196×196 (393 tokens) 400 steps and they stay near chance; at 112×112 (129
# tokens) it is 1,000 steps, after which count and frequency are answered right about 80% of the time.
LEARNABLE_TEXT = {"initializer_range": 0.1}
LEARNABLE_IMAGE = 112
LEARNABLE_VOCAB = 400


def tiny_vision_config(hidden: int = 32, layers: int = 2, heads: int = 2, image_size: int = 384):
    from transformers import SiglipVisionConfig

    return SiglipVisionConfig(
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        image_size=image_size,
        patch_size=14,
        vision_use_head=False,
    )


def build_tiny_tokenizer(
    out_dir: str | Path,
    corpus_extra: tuple[str, ...] = (),
    vocab_size: int = 400,
    special: tuple[str, ...] | list[str] = tuple(SPECIAL_TOKENS),
):
    """A byte-level BPE tokenizer trained on a few lines of English (and ``corpus_extra``), with the
    ``special`` tokens (LLaVA-OV's by default)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [
        "Select the best answer to the following multiple-choice question based on the video.",
        "Respond with only the letter (A, B, C, or D) of the correct option.",
        "What is shown in the video? The best answer is: A B C D",
        "You are a helpful assistant. user assistant system",
        "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 .,:;!?()[]-'\"\n",
        *corpus_extra,
    ]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,  # its bars print empty lines when stdout is not a terminal
    )
    tok.train_from_iterator(corpus * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None
    )
    fast.save_pretrained(str(out_dir))
    return fast


def build_tiny_siglip(out_dir: str | Path, seed: int = 0) -> Path:
    """Save a tiny random SiglipVisionModel to ``out_dir`` (loadable with ``from_pretrained``)."""
    import torch
    from transformers import SiglipVisionModel

    torch.manual_seed(seed)
    model = SiglipVisionModel(tiny_vision_config()).eval()
    model.save_pretrained(str(out_dir))
    return Path(out_dir)


def build_tiny_llava_ov(
    out_dir: str | Path,
    seed: int = 0,
    text_hidden: int = 64,
    text: dict | None = None,
    vision=None,
    dtype=None,
    tokenizer: dict | None = None,
) -> Path:
    """Save a random LlavaOnevisionForConditionalGeneration plus its tiny tokenizer to ``out_dir``.

    By default the tiny test model. ``text`` overrides Qwen2Config fields and ``vision`` replaces the
    SigLIP config, so a benchmark can build real shapes (LLaVA-OV-0.5B's) with random weights;
    ``dtype`` casts the weights before saving.
    """
    import torch
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration, Qwen2Config

    out_dir = Path(out_dir)
    tokenizer = build_tiny_tokenizer(out_dir, **(tokenizer or {}))
    text_config = Qwen2Config(
        **{
            "vocab_size": len(tokenizer),
            "hidden_size": text_hidden,
            "intermediate_size": 2 * text_hidden,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 8192,
            "tie_word_embeddings": True,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
            **(text or {}),
        }
    )
    config = LlavaOnevisionConfig(
        vision_config=(vision or tiny_vision_config()).to_dict(),
        text_config=text_config.to_dict(),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_id=tokenizer.convert_tokens_to_ids("<video>"),
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlavaOnevisionForConditionalGeneration(config).eval()
    # Random init leaves image_newline near zero scale; give it the embedding scale real checkpoints have.
    with torch.no_grad():
        model.model.image_newline.normal_(0.0, 1.0 / text_config.hidden_size**0.5)
    if dtype is not None:
        model = model.to(dtype)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(str(out_dir))
    return out_dir


def build_tiny_checkpoints(root: str | Path, seed: int = 0) -> dict[str, Path]:
    """Build (or reuse) both tiny checkpoints under ``root``: {"siglip": dir, "llava_ov": dir}."""
    root = Path(root)
    dirs = {"siglip": root / "tiny-siglip", "llava_ov": root / "tiny-llava-ov"}
    if not (dirs["siglip"] / "config.json").exists():
        build_tiny_siglip(dirs["siglip"], seed=seed)
    if not (dirs["llava_ov"] / "config.json").exists():
        build_tiny_llava_ov(dirs["llava_ov"], seed=seed)
    return dirs


def build_learnable_llava_ov(out_dir: str | Path, seed: int = 0) -> Path:
    """The tiny LLaVA-OV that vtc trains in the demo and the learning tests (see the module docstring).

    Its tokenizer also learns the synthetic set's prompts, so a question takes about half the tokens
    it takes with the stock tiny tokenizer: every training step and answer is that much cheaper."""
    return build_tiny_llava_ov(
        out_dir, seed=seed, text=LEARNABLE_TEXT, vision=tiny_vision_config(image_size=LEARNABLE_IMAGE),
        tokenizer={"corpus_extra": _synthetic_prompts(), "vocab_size": LEARNABLE_VOCAB},
    )  # fmt: skip


def _synthetic_prompts() -> tuple[str, ...]:
    """The synthetic set's prompts, as evaluation writes them (a tokenizer trained on them is shorter)."""
    from vtc.eval.tasks import LETTER_POST
    from vtc.eval.tasks.mcq import mcq_doc_to_text
    from vtc.video.synthetic import QUESTIONS

    post = {"post_prompt": LETTER_POST}
    return tuple(mcq_doc_to_text({"question": q, "options": o}, post) for q, o in QUESTIONS.values())


def build_tiny_qwen2_5_vl(
    out_dir: str | Path, seed: int = 0, text: dict | None = None, tokenizer: dict | None = None
) -> Path:
    """A tiny random Qwen2.5-VL (vision tower with window and full attention blocks, 2x2 merger, a 2-layer
    M-RoPE LLM) saved with `save_pretrained`, so `from_pretrained(out_dir)` takes the real loading path.
    Real geometry: 14-pixel patches, temporal patches of 2 frames, 2x2 merging, 112-pixel windows.
    ``text`` overrides text-config fields, ``tokenizer`` the tiny tokenizer's arguments."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    out = Path(out_dir)
    # a small vocabulary (the real one is 151,936) with Qwen2.5-VL's special tokens
    tok = build_tiny_tokenizer(out, special=QWEN_SPECIAL_TOKENS, **(tokenizer or {}))
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    config = Qwen2_5_VLConfig(
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": 64,
            "fullatt_block_indexes": [1],
            "window_size": 112,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "tokens_per_second": 2,
        },
        text_config={
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "vocab_size": len(tok),
            "max_position_embeddings": 4096,
            "bos_token_id": None,
            "eos_token_id": tok.eos_token_id,
            "pad_token_id": tok.pad_token_id,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]},
            **(text or {}),
        },
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out)
    return out


def build_learnable_qwen2_5_vl(out_dir: str | Path, seed: int = 0) -> Path:
    """The tiny Qwen2.5-VL `vtc demo --family qwen2.5-vl` trains: the learnable LLaVA-OV's LLM settings
    (initializer range, a tokenizer that knows the synthetic prompts). Its tower and merger stay random and
    frozen (vtc stores the merger's output), so only the LLM learns to read them."""
    return build_tiny_qwen2_5_vl(
        out_dir, seed=seed, text=LEARNABLE_TEXT,
        tokenizer={"corpus_extra": _synthetic_prompts(), "vocab_size": LEARNABLE_VOCAB},
    )  # fmt: skip
