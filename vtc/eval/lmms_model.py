"""The lmms-eval model: LLaVA-OneVision on vtc's precomputed, compressed visual tokens.

    python -m lmms_eval --model vtc \
        --model_args pretrained=llava-hf/llava-onevision-qwen2-0.5b-ov-hf,tokens=feats.dyntok.zarr \
        --tasks videomme --batch_size 1

Each request's visual (a path or a video id) is looked up in the token store; the video is never
decoded. Every answered request is logged with the number of visual tokens that reached the LLM.
"""

from __future__ import annotations

import time

from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from tqdm import tqdm

from vtc.eval.llava import LlavaRunner, TokenSource, check_compatible


class VtcLlavaOneVision(lmms):
    is_simple = True

    def __init__(
        self,
        pretrained: str,
        tokens: str,
        device: str = "cpu",
        dtype: str = "fp32",
        max_new_tokens: int = 16,
        batch_size: int = 1,
        **kwargs,
    ) -> None:
        super().__init__()
        self.source = TokenSource(tokens)
        self.runner = LlavaRunner(str(pretrained), device=device, dtype=dtype)
        check_compatible(self.runner.model, self.source.grid, self.source.dim)
        self.max_new_tokens = int(max_new_tokens)
        self.sample_log: list[dict] = []

    def generate_until(self, requests: list[Instance]) -> list[str]:
        answers = []
        for req in tqdm(requests, desc="vtc generate", disable=len(requests) < 2):
            context, gen_kwargs, doc_to_visual, doc_id, task, split = req.args
            visuals = doc_to_visual(self.task_dict[task][split][doc_id])
            if len(visuals) != 1:
                raise ValueError(f"vtc evaluates one video per question; {task}#{doc_id} has {len(visuals)}")
            vid = self.source.resolve(visuals[0])
            feats, red = self.source.load(vid)
            max_new = int(gen_kwargs.get("max_new_tokens", self.max_new_tokens))
            t0 = time.perf_counter()
            text = self.runner.generate(feats, red, context, max_new_tokens=max_new)
            self.sample_log.append(
                {
                    "task": task,
                    "doc_id": doc_id,
                    "video": vid,
                    "visual_tokens": int(red.n_llm_tokens),
                    "n_visual": int(red.n_visual()),
                    "seconds": time.perf_counter() - t0,
                    "answer": text,
                }
            )
            answers.append(text)
        return answers

    def loglikelihood(self, requests):
        raise NotImplementedError("vtc's LLaVA-OneVision plugin answers generate_until tasks only")

    def generate_until_multi_round(self, requests):
        raise NotImplementedError("vtc's LLaVA-OneVision plugin answers single-round questions only")
