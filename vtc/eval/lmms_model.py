"""The lmms-eval model: a video LLM (LLaVA-OneVision or Qwen2.5-VL) on vtc's precomputed, compressed tokens.

    python -m lmms_eval --model vtc \
        --model_args pretrained=llava-hf/llava-onevision-qwen2-0.5b-ov-hf,tokens=feats.dyntok.zarr \
        --tasks videomme --batch_size 1

    # the family comes from the checkpoint's config; the token store must hold that family's features
    python -m lmms_eval --model vtc \
        --model_args pretrained=Qwen/Qwen2.5-VL-7B-Instruct,tokens=qwen.fastvid.zarr --tasks videomme

    # with adapters trained by `vtc train` (adapter=RUN), or an in-LLM method on the stored reduction
    python -m lmms_eval --model vtc --model_args pretrained=...,tokens=...,online=fastv,online_set=k=2;ratio=0.5

Each request's visual (a path or a video id) is looked up in the token store; the video is never
decoded. Every answered request is logged with the visual tokens that reached the LLM (at prefill, and
at decode after online pruning), time to first token and decode time per token. With ``answers=PATH``
each answer is appended to a JSONL journal as soon as it exists, and a re-run reads it back instead of
generating again: an interrupted evaluation resumes where it stopped and scores exactly the same.
"""

from __future__ import annotations

import contextlib
import types
from pathlib import Path

from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms

from vtc.cache.jsonl import Journal, missing_fields
from vtc.eval.runner import TokenSource, make_runner
from vtc.versions import stable_hash


def parse_online_set(spec: str | None) -> dict[str, str]:
    """'k=2;ratio=0.5' (lmms-eval's model_args are comma-separated, so ';' separates these) -> dict."""
    out: dict[str, str] = {}
    for item in filter(None, (spec or "").split(";")):
        key, sep, value = item.partition("=")
        if not sep:
            from vtc.errors import VtcError

            raise VtcError(f"online setting '{item}' is not key=value")
        out[key.strip()] = value.strip()
    return out


class AnswerJournal(Journal):
    """The answered requests, keyed by a hash of (task, doc, prompt, generation args): a half-written
    answer never counts as done (it is generated again)."""

    # What a line needs to stand in for a generated answer (scoring, token counts and FLOPs read these).
    FIELDS = ("key", "task", "doc_id", "video", "answer", "visual_tokens", "n_text", "n_new_tokens")

    def __init__(self, path: str | Path):
        super().__init__(path, "key", lambda rec: missing_fields(rec, self.FIELDS))

    @property
    def done(self) -> dict[str, dict]:
        return self.latest()


class VtcModel(lmms):
    is_simple = True

    def __init__(
        self,
        pretrained: str,
        tokens: str,
        device: str = "cpu",
        dtype: str = "fp32",
        max_new_tokens: int = 16,
        batch_size: int = 1,
        online: str | None = None,
        online_set: str | dict | None = None,
        answers: str | None = None,
        source: TokenSource | None = None,
        adapter: str | None = None,
        **kwargs,
    ) -> None:
        super().__init__()
        from vtc.eval.online import get_online

        self.source = source if source is not None else TokenSource(tokens)
        self.runner = make_runner(str(pretrained), device=device, dtype=dtype)
        self.runner.check(self.source)
        if adapter:  # weights trained by `vtc train`, on this base model and this feature identity
            from vtc.adapters import load_adapter

            load_adapter(self.runner.model, adapter, self.source.features.meta.get("identity_hash"))
        self.max_new_tokens = int(max_new_tokens)
        self.batch_size_per_gpu = self._batch = max(1, int(batch_size))
        params = online_set if isinstance(online_set, dict) else parse_online_set(online_set)
        self.online = get_online(online, **params) if online else None
        self.journal = AnswerJournal(answers) if answers else None
        self.sample_log: list[dict] = []
        # progress(n) -> a context manager yielding .advance(n_items, n_units); `vtc eval` puts its own
        # bar here, lmms-eval's CLI gets a tqdm bar
        self.progress = _tqdm_progress
        self.resumed = 0

    def _key(self, task: str, doc_id, context: str, gen_kwargs: dict) -> str:
        return stable_hash([task, doc_id, context, {k: gen_kwargs[k] for k in sorted(gen_kwargs)}], n=20)

    def generate_until(self, requests: list[Instance]) -> list[str]:
        answers: list[str | None] = [None] * len(requests)
        todo = []  # (index, key, record stub, features, reduction, context, max_new)
        for i, req in enumerate(requests):
            context, gen_kwargs, doc_to_visual, doc_id, task, split = req.args
            key = self._key(task, doc_id, context, gen_kwargs)
            if self.journal is not None and key in self.journal.done:
                rec = {**self.journal.done[key], "resumed": True}
                self.sample_log.append(rec)
                answers[i] = rec["answer"]
                self.resumed += 1
                continue
            visuals = doc_to_visual(self.task_dict[task][split][doc_id])
            if len(visuals) != 1:
                raise ValueError(f"vtc evaluates one video per question; {task}#{doc_id} has {len(visuals)}")
            vid = self.source.resolve(visuals[0])
            max_new = int(gen_kwargs.get("max_new_tokens", self.max_new_tokens))
            stub = {"key": key, "task": task, "doc_id": doc_id, "video": vid}
            todo.append((i, stub, vid, context, max_new))

        with self.progress(len(todo)) as bar:
            self._generate(todo, answers, bar)
        return [a if a is not None else "" for a in answers]

    def _generate(self, todo: list, answers: list, bar) -> None:
        for start in range(0, len(todo), self._batch):
            chunk = todo[start : start + self._batch]
            loaded = [self.source.load(vid) for _, _, vid, _, _ in chunk]
            max_new = max(m for *_, m in chunk)
            if len(chunk) == 1:
                feats, red = loaded[0]
                gens = [self.runner.run(feats, red, chunk[0][3], max_new_tokens=max_new, online=self.online)]
            else:
                items = [
                    (feats, red, ctx) for (feats, red), (_, _, _, ctx, _) in zip(loaded, chunk, strict=True)
                ]
                gens = self.runner.run_batch(items, max_new_tokens=max_new, online=self.online)
            for (i, stub, _vid, _context, _m), (_, red), g in zip(chunk, loaded, gens, strict=True):
                rec = {
                    **stub,
                    "answer": g.text,
                    "visual_tokens": int(g.visual_prefill),
                    # markers and the newline are the plan's; a token module changes only the visual count
                    "n_visual": int(g.visual_prefill) - (int(red.n_llm_tokens) - int(red.n_visual())),
                    "visual_decode": float(g.visual_decode),
                    "visible_per_layer_prefill": list(g.visible_per_layer_prefill),
                    "visible_per_layer_decode": [float(v) for v in g.visible_per_layer_decode],
                    "n_text": int(g.n_text),
                    "n_new_tokens": int(g.n_new_tokens),
                    "ttft_s": float(g.ttft_s),
                    "decode_s_per_token": g.decode_s_per_token,
                    "seconds": float(g.ttft_s + (g.decode_s_per_token or 0.0) * max(0, g.n_new_tokens - 1)),
                    "batch": len(chunk),
                    "online_stats": g.online_stats,
                }
                if self.journal is not None:
                    self.journal.append(rec)
                self.sample_log.append(rec)
                answers[i] = g.text
                bar.advance(1, 1)

    def loglikelihood(self, requests):
        raise NotImplementedError("vtc's lmms-eval model answers generate_until tasks only")

    def generate_until_multi_round(self, requests):
        raise NotImplementedError("vtc's lmms-eval model answers single-round questions only")


@contextlib.contextmanager
def _tqdm_progress(total: int):
    from tqdm import tqdm

    bar = tqdm(total=total, desc="vtc generate", disable=total < 2)
    try:
        yield types.SimpleNamespace(advance=lambda n_items=1, n_units=0: bar.update(n_items))
    finally:
        bar.close()
