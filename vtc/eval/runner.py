"""What every model family's evaluation shares: the token source, the Qwen2 chat format, the greedy loop.

A family's runner (``vtc.eval.llava.LlavaRunner``, ``vtc.eval.qwen2_5_vl.QwenRunner``) loads its
checkpoint and says how stored tokens become LLM inputs (``conversation``: the video's LLM-space tokens,
the chat ids with exactly as many placeholders, the position ids); ``Runner`` runs the rest the same way
for both: ``run`` is a timed greedy decode loop with the KV cache (the text equals ``generate``'s without
online pruning), with ``online=`` a ``vtc.eval.online`` method prunes visual tokens inside the LLM,
``run_batch`` decodes several questions at once with left padding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from vtc.cache import Store, non_finite
from vtc.errors import VtcError
from vtc.families import store_family

# Both families' LLMs are Qwen2 chat models: LLaVA-NeXT's "qwen_1_5" conversation template (what lmms-eval's
# llava_onevision model uses) and Qwen2.5-VL's chat template share the system prompt and the turn tags.
SYSTEM_PROMPT = "You are a helpful assistant."


class TokenSource:
    """Looks a video up in a token store (and its parent feature store) or directly in a feature store.

    A feature store is evaluated as if compressed with ``none`` (the model's stock tokens). ``family`` is
    the features' model family (`vtc.families`); ``load`` gives the rows its LLM reads.
    """

    def __init__(self, path: str | Path):
        st = Store.open(path)
        if st.kind == "tokens":
            self.tokens = st
            parent = Path(st.meta["identity"]["parent"]["path"])
            if not parent.exists():
                raise VtcError(f"token store {path} names parent feature store {parent}, which is missing")
            self.features = Store.open(parent, kind="features")
            if self.features.meta["identity_hash"] != st.meta["identity"]["parent"]["identity_hash"]:
                raise VtcError(f"feature store {parent} is not the one {path} was compressed from")
            self.method = st.meta["identity"]["method"]
        elif st.kind == "features":
            from vtc.reducers import get_reducer, reducer_config

            self.tokens, self.features = None, st
            self._none = store_family(st).adapt(get_reducer("none"))
            self.method = reducer_config(self._none)
        else:
            raise VtcError(f"{path} is a {st.kind} store; evaluation needs a token or feature store")
        enc = self.features.meta["identity"]["encoder"]
        self.family = store_family(self.features)
        # the grid every video shares (LLaVA-OV), or None where each video has its own (Qwen2.5-VL)
        self.grid = tuple(enc["grid"]) if enc.get("grid") else None
        self.dim = enc["dim"]
        self.encoder = enc

    def ids(self) -> list[str]:
        src = self.tokens if self.tokens is not None else self.features
        return sorted(src.done())

    def resolve(self, visual) -> str:
        """A task's visual (a video id, or a path whose stem is the id) -> the id in the store."""
        s = str(visual)
        for cand in (s, Path(s).stem, Path(s).name):
            if self.features.has(cand) and (self.tokens is None or self.tokens.has(cand)):
                return cand
        raise VtcError(f"video '{s}' is not in the store (looked up as '{Path(s).stem}'); extract it first")

    def _features(self, video_id: str):
        """(stored features [T, H*W, C] as a CPU tensor in the storage dtype, the video's attrs)."""
        import torch

        arrays, attrs = self.features.load(video_id, ("features",))
        x = torch.from_numpy(arrays["features"])
        self._refuse_non_finite(video_id, {"features": x})
        return x, attrs

    def features_of(self, video_id: str):
        """The stored features [T, H*W, C] of one video (a CPU tensor in the storage dtype)."""
        return self._features(video_id)[0]

    def load(self, video_id: str):
        """(features tensor [T, H*W, C], Reduction) of one video: the stored reduction (a feature store:
        ``none``), as `_for_llm` gives it."""
        if self.tokens is None:
            return self.reduce(video_id, self._none)
        from vtc.reducers import Reduction

        x, attrs = self._features(video_id)
        return x, self._for_llm(video_id, Reduction.read(self.tokens, video_id), attrs)

    def reduce(self, video_id: str, reducer, x=None):
        """(features, Reduction) of ``reducer`` (as the family runs it: `Family.adapt`) applied to the
        video's stored features ``x`` (read here if not given), on the video's grid."""
        attrs = self.features.read(video_id)[1] if x is not None else None
        if x is None:
            x, attrs = self._features(video_id)
        red = reducer(x, self.grid or tuple(attrs["grid"]))  # a Qwen2.5-VL video's grid is its own
        return x, self._for_llm(video_id, red, attrs)

    def _for_llm(self, video_id: str, red, attrs: dict):
        """The rows the family's LLM reads, with the video's sampling rate (``fps``: frames sampled per
        second of video, qwen-vl-utils' frames / duration, which Qwen2.5-VL's time ids count in)."""
        import dataclasses

        self._refuse_non_finite(video_id, {"tokens": getattr(red, "tokens", None)})
        n, duration = self.features.done()[video_id].get("n_frames"), attrs.get("duration") or 0.0
        fps = n / duration if n and duration > 0 else None
        return dataclasses.replace(self.family.for_llm(red), fps=fps)

    @staticmethod
    def _refuse_non_finite(video_id: str, arrays: dict) -> None:
        bad = non_finite(arrays)
        if bad:  # the LLM would answer on garbage and the run would still score it
            raise VtcError(f"video '{video_id}' has {bad}; re-extract it (vtc extract skips such videos)")


def prompt_ids(tokenizer, question: str, n_video_tokens: int, video_token_id: int, **video):
    """Token ids of the chat prompt with exactly ``n_video_tokens`` <video> placeholders."""
    import torch

    ids, _ = chat_ids(tokenizer, [(question, None)], n_video_tokens, video_token_id, **video)
    return torch.tensor([ids])


def chat_ids(
    tokenizer,
    turns: list[tuple[str, str | None]],
    n_video_tokens: int,
    video_token_id: int,
    wrap: tuple[list[int], list[int]] = ([], []),
    sep: str = "\n",
) -> tuple[list[int], list[int]]:
    """(ids, labels) of a conversation in the Qwen2 chat format, the video before the first question.

    The video is ``wrap[0]`` + ``n_video_tokens`` placeholders + ``wrap[1]``, then ``sep`` and the question:
    LLaVA-OV's ``<video>\\n`` (no wrap), Qwen2.5-VL's ``<|vision_start|>…<|vision_end|>`` (no separator),
    as their chat templates write them. ``turns``: (user text, assistant answer); an answer of None ends
    the prompt where the assistant starts (generation). labels are -100 except on the assistant's answers
    and their <|im_end|>, the tokens training learns (system and user turns are masked, as LLaVA-NeXT
    trains). The pieces are tokenized one by one, so the prompt of a question is the same in training
    and in evaluation.
    """

    def tok(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False).input_ids

    ids = (
        tok(f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n")
        + list(wrap[0])
        + [video_token_id] * n_video_tokens
        + list(wrap[1])
    )
    labels = [-100] * len(ids)
    for k, (question, answer) in enumerate(turns):
        start = sep if k == 0 else "\n<|im_start|>user\n"
        prompt = tok(f"{start}{question}<|im_end|>\n<|im_start|>assistant\n")
        ids += prompt
        labels += [-100] * len(prompt)
        if answer is None:
            break
        reply = tok(f"{answer}<|im_end|>")
        ids += reply
        labels += reply
    return ids, labels


@dataclass
class Generation:
    """One greedy answer with its timing and the visual tokens the LLM's layers saw.

    n_new_tokens counts every generated token, the end-of-sequence token included (it was computed).
    ttft_s: the LLM inputs (projector, pooling, plan) + prefill + the first token's id on the host.
    decode_s_per_token: the mean time of one decode step (forward + argmax); None with a single token.
    visual_prefill: visual tokens entering layer 0 at prefill (reduction.n_llm_tokens, or what a token
    module made of them; markers and the newline included). n_text: the prompt's other tokens (system
    prompt, chat tags, question).
    visible_per_layer_prefill[i]: visual keys layer i attended to at prefill;
    visible_per_layer_decode[i]: their mean over the decode steps (with no decode step, the prefill
    figures); visual_decode: that mean for the last layer (= visual_prefill without online pruning).
    """

    text: str
    token_ids: list[int]
    n_new_tokens: int
    ttft_s: float
    decode_s_per_token: float | None
    visual_prefill: int
    n_text: int
    visual_decode: float
    visible_per_layer_prefill: list[int]
    visible_per_layer_decode: list[float]
    online: dict | None = None
    online_stats: dict = field(default_factory=dict)
    embed_s: float = 0.0
    logits: object = None  # [n_new_tokens, vocab] float32 on the CPU, only with keep_logits=True


def _sync(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def video_span(ids, video_token_id: int) -> tuple[int, int]:
    """(start, count) of the one contiguous run of <video> placeholders in ids [1, S]."""
    import torch

    where = torch.nonzero(ids[0] == video_token_id).flatten()
    if where.numel() == 0:
        raise VtcError("the prompt has no <video> placeholder")
    start, n = int(where[0]), int(where.numel())
    if int(where[-1]) != start + n - 1:
        raise VtcError("the <video> placeholders of the prompt are not one contiguous run")
    return start, n


@dataclass
class Runner:
    """A loaded checkpoint that answers questions about stored videos; a family subclass names its model
    class and family, and defines ``conversation`` and ``check_features``."""

    model_id: str
    device: str = "cpu"
    dtype: str = "fp32"

    model_types: ClassVar[tuple[str, ...]] = ()  # config model_types the runner loads
    model_class: ClassVar[str] = ""  # the transformers class
    family_name: ClassVar[str] = ""  # its `vtc.families` record

    def __post_init__(self):
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        self._load()

    def _load(self) -> None:
        import torch
        import transformers
        from transformers import AutoTokenizer

        from vtc.encoders.vision import DTYPES, load_config, load_error
        from vtc.families import get_family

        self.family = get_family(self.family_name)
        config = load_config(self.model_id)
        if config.model_type not in self.model_types:
            # Checked before anything is built: a default-size model from a foreign config can exhaust memory.
            raise VtcError(
                f"'{self.model_id}' is a {config.model_type} checkpoint; vtc eval needs a {self.family.label} "
                f"checkpoint here (e.g. {self.family.example})"
            )
        try:
            self.model = (
                getattr(transformers, self.model_class)
                .from_pretrained(self.model_id, dtype=getattr(torch, DTYPES[self.dtype]))
                .to(self.device)
                .eval()
            )
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_id)
        except Exception as e:
            raise load_error(self.model_id, e) from None
        self.video_token_id = self.model.config.video_token_id
        self.configure()

    def configure(self) -> None:
        """What the family reads off the loaded model's config, beyond the video token."""

    def check(self, source) -> None:
        """Refuse a token source whose features this checkpoint cannot read (one line)."""
        if source.family is not self.family:
            raise VtcError(
                f"the store holds {source.family.label} features; '{self.model_id}' is a {self.family.label} "
                f"checkpoint: evaluate with a {source.family.label} one (e.g. {source.family.example})"
            )
        self.check_features(source)

    def check_features(self, source) -> None:
        """The family's own check of a store of its features (the tower they came from)."""
        raise NotImplementedError

    def conversation(self, features, reduction, turns: list[tuple[str, str | None]], grad: bool = False):
        """(video tokens [N, D] in LLM space, ids, labels (`chat_ids`), position ids [P, S] with P = 1, or 3
        for M-RoPE) of a conversation about one stored video; ``grad`` keeps the autograd graph (training)."""
        raise NotImplementedError

    def _parts(self, features, reduction, question: str):
        """(video tokens [N, D], prompt ids [1, S] with N placeholders, position ids [P, 1, S]) on the device."""
        import torch

        with torch.inference_mode():
            emb, ids, _, pos = self.conversation(features, reduction, [(question, None)])
        return emb, torch.tensor([ids], device=emb.device), pos[:, None, :].to(emb.device)

    def inputs(self, features, reduction, question: str) -> dict:
        """The model's prefill inputs for one question about one stored video."""
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        emb, ids, pos = self._parts(features, reduction, question)
        return {
            "input_ids": ids,
            "attention_mask": ids.new_ones(ids.shape),
            "position_ids": pos[0] if pos.shape[0] == 1 else pos,
            "mm_encoder_outputs": {"video": BaseModelOutputWithPooling(pooler_output=self.video_output(emb))},
        }

    def video_output(self, emb):
        """[N, D] video tokens as the model's ``mm_encoder_outputs["video"].pooler_output`` takes them."""
        return emb[None]

    def eos_ids(self) -> set[int]:
        """The ids that end an answer: the generation config's eos ids (what ``generate`` stops at)."""
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        return {int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos]) if e is not None}

    def run(
        self,
        features,
        reduction,
        question: str,
        max_new_tokens: int = 16,
        online=None,
        keep_logits: bool = False,
        ignore_eos: bool = False,
    ) -> Generation:
        """Greedy decoding with the KV cache, timed; ``online``: a ``vtc.eval.online`` method, its name, or None.

        Without online pruning the answer is ``generate``'s (greedy argmax, stop at an eos id or after
        max_new_tokens). With it, the method prunes visual tokens inside the LLM (see vtc.eval.online).
        ignore_eos: always generate max_new_tokens (latency benchmarks); keep_logits: fill ``logits``.
        """
        import time
        from contextlib import nullcontext

        import torch

        if max_new_tokens < 1:
            raise VtcError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if isinstance(online, str):
            from vtc.eval.online import get_online

            online = get_online(online)
        n_layers = int(self.model.config.text_config.num_hidden_layers)
        eos = set() if ignore_eos else self.eos_ids()

        _sync(self.device)
        t0 = time.perf_counter()
        inputs = self.inputs(features, reduction, question)
        _sync(self.device)
        t_embed = time.perf_counter() - t0
        ids = inputs["input_ids"]
        vis_start, n_vis = video_span(ids, self.video_token_id)
        if online is not None:
            from vtc.eval.online import attach, online_config

            ctx, cfg = attach(self.model, online, vis_start, n_vis), online_config(online)
        else:
            ctx, cfg = nullcontext(None), None

        first = inputs
        with torch.inference_mode(), ctx as live:
            per_row, ttft = self._greedy(first, t0, max_new_tokens, eos, 0, live, keep_logits)
        ((tokens, logits, step_s),) = per_row

        if live is None:
            prefill = [n_vis] * n_layers
            decode = [float(n_vis)] * n_layers
            stats = {}
        else:
            if any(c < 0 for row in live.counts for c in row):
                raise RuntimeError("online pruning: a layer's attention did not go through the wrapper")
            prefill = list(live.counts[0])
            rows = live.counts[1:]
            if rows:
                decode = [sum(r[i] for r in rows) / len(rows) for i in range(n_layers)]
            else:
                decode = [float(c) for c in prefill]
            stats = live.stats()
        return Generation(
            text=self.tokenizer.decode(tokens, skip_special_tokens=True).strip(),
            token_ids=tokens,
            n_new_tokens=len(tokens),
            ttft_s=ttft,
            decode_s_per_token=sum(step_s) / len(step_s) if step_s else None,
            visual_prefill=int(n_vis),
            n_text=int(ids.shape[1]) - n_vis,
            visual_decode=float(decode[-1]),
            visible_per_layer_prefill=prefill,
            visible_per_layer_decode=decode,
            online=cfg,
            online_stats=stats,
            embed_s=t_embed,
            logits=torch.stack(logits) if keep_logits else None,
        )

    def _greedy(self, prefill: dict, t0: float, max_new_tokens: int, eos: set, pad: int, live=None,
                keep_logits: bool = False):  # fmt: skip
        """The greedy loop of ``run`` and ``run_batch``: prefill ``prefill`` (the model's inputs for B rows,
        with attention mask and position ids), then one token per row per step with the KV cache until
        every row has hit an eos id or ``max_new_tokens``; a finished row is fed ``pad``. ``live``: an
        online method's hooks (told each forward's query length). Returns ([(tokens, logits, step
        seconds)] per row, ttft since ``t0``)."""
        import time

        import torch

        mask, pos = prefill["attention_mask"], prefill["position_ids"]
        B = mask.shape[0]
        tokens, logits, step_s = [[] for _ in range(B)], [[] for _ in range(B)], [[] for _ in range(B)]
        done = [False] * B
        if live is not None:
            live.begin(mask.shape[1])
        out = self.model(**prefill, use_cache=True, logits_to_keep=1)
        nxt = out.logits[:, -1].argmax(-1)
        _sync(self.device)
        ttft = time.perf_counter() - t0
        dt, feed = 0.0, nxt
        for step in range(max_new_tokens):
            if step > 0:
                t1 = time.perf_counter()
                mask = torch.cat([mask, mask.new_ones(B, 1)], dim=1)
                pos = pos[..., -1:] + 1  # [B, 1], or [3, B, 1] for M-RoPE: a text token, one id on every axis
                if live is not None:
                    live.begin(1)
                out = self.model(
                    input_ids=feed[:, None],
                    attention_mask=mask,
                    position_ids=pos,
                    past_key_values=out.past_key_values,
                    use_cache=True,
                    logits_to_keep=1,
                )
                nxt = out.logits[:, -1].argmax(-1)
                _sync(self.device)
                dt = time.perf_counter() - t1
            host = nxt.tolist()
            for b in range(B):
                if done[b]:
                    continue
                if step > 0:
                    step_s[b].append(dt)
                tokens[b].append(host[b])
                if keep_logits:
                    logits[b].append(out.logits[b, -1].float().cpu())
                done[b] = host[b] in eos or len(tokens[b]) >= max_new_tokens
            if all(done):
                break
            feed = torch.tensor(
                [pad if d else t for d, t in zip(done, host, strict=True)], device=mask.device
            )
        return list(zip(tokens, logits, step_s, strict=True)), ttft

    def run_batch(
        self, items, max_new_tokens: int = 16, online=None, keep_logits: bool = False
    ) -> list[Generation]:
        """``run`` for several (features, reduction, question) items at once: left padding, one greedy loop.

        The texts equal ``run``'s one by one (the padded rows only add masked-out keys; each row keeps the
        position ids it has alone). ttft_s is the batch's; decode_s_per_token is the mean step time over the
        steps an item was still generating. Online pruning keeps one KV selection per sequence and refuses
        batches of more than one item.
        """
        import time

        import torch
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        items = list(items)
        if not items:
            return []
        if len(items) == 1:
            f, r, q = items[0]
            return [self.run(f, r, q, max_new_tokens, online=online, keep_logits=keep_logits)]
        if online is not None:
            raise VtcError(
                "online pruning runs one sequence at a time: use batch size 1 with an online method"
            )
        if max_new_tokens < 1:
            raise VtcError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        n_layers = int(self.model.config.text_config.num_hidden_layers)
        eos = self.eos_ids()
        pad = self.tokenizer.pad_token_id
        pad = pad if pad is not None else next(iter(eos), 0)

        _sync(self.device)
        t0 = time.perf_counter()
        embs, rows, poss = [], [], []
        for f, r, q in items:
            emb, ids_b, pos_b = self._parts(f, r, q)
            embs.append(emb)
            rows.append(ids_b[0].cpu())
            poss.append(pos_b[..., 0, :].cpu())  # [P, S_b]
        _sync(self.device)
        t_embed = time.perf_counter() - t0
        B, S = len(rows), max(len(r) for r in rows)
        ids = torch.full((B, S), pad, dtype=torch.long)
        mask = torch.zeros((B, S), dtype=torch.long)
        pos = torch.zeros((poss[0].shape[0], B, S), dtype=torch.long)  # padding at position 0
        for b, r in enumerate(rows):
            ids[b, S - len(r) :], mask[b, S - len(r) :], pos[:, b, S - len(r) :] = r, 1, poss[b]
        ids, mask = ids.to(self.device), mask.to(self.device)
        pos = (pos[0] if pos.shape[0] == 1 else pos).to(self.device)
        # masked_scatter fills the <video> placeholders in row-major order: the items' rows one after another
        video = BaseModelOutputWithPooling(pooler_output=self.video_output(torch.cat(embs)))

        first = {
            "input_ids": ids,
            "attention_mask": mask,
            "position_ids": pos,
            "mm_encoder_outputs": {"video": video},
        }
        with torch.inference_mode():
            per_row, ttft = self._greedy(first, t0, max_new_tokens, eos, pad, None, keep_logits)
        tokens, logits, step_s = (list(x) for x in zip(*per_row, strict=True))

        gens = []
        for b in range(len(items)):
            n = int(embs[b].shape[0])  # what the LLM saw (a token module may change the count)
            gens.append(
                Generation(
                    text=self.tokenizer.decode(tokens[b], skip_special_tokens=True).strip(),
                    token_ids=tokens[b],
                    n_new_tokens=len(tokens[b]),
                    ttft_s=ttft,
                    decode_s_per_token=sum(step_s[b]) / len(step_s[b]) if step_s[b] else None,
                    visual_prefill=n,
                    n_text=len(rows[b]) - n,
                    visual_decode=float(n),
                    visible_per_layer_prefill=[n] * n_layers,
                    visible_per_layer_decode=[float(n)] * n_layers,
                    embed_s=t_embed,
                    logits=torch.stack(logits[b]) if keep_logits else None,
                )
            )
        return gens

    def generate(self, features, reduction, question: str, max_new_tokens: int = 16, online=None) -> str:
        """The answer text of ``run`` (greedy; equal to transformers' ``generate`` without online pruning)."""
        return self.run(features, reduction, question, max_new_tokens=max_new_tokens, online=online).text


def make_runner(model_id: str, device: str = "cpu", dtype: str = "fp32") -> Runner:
    """The runner of the checkpoint's family (read from its config, before any weight is built: a
    default-size model from a foreign config can exhaust memory)."""
    from vtc.encoders.vision import load_config
    from vtc.families import FAMILIES

    model_type = load_config(model_id).model_type
    for family in FAMILIES.values():
        cls = family.runner_class()
        if model_type in cls.model_types:
            return cls(model_id, device=device, dtype=dtype)
    examples = " or ".join(f.example for f in FAMILIES.values())
    raise VtcError(
        f"'{model_id}' is a {model_type} checkpoint; vtc eval needs a LLaVA-OneVision or Qwen2.5-VL one "
        f"(e.g. {examples})"
    )
