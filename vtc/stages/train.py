"""Stage 3: train adapters on cached tokens: no video decoding, no vision tower, only adapter + LLM.

Each sample is a video from the store (its stored reduction, or a reducer applied on the fly to its
features) and a conversation; the loss is next-token cross-entropy on the assistant's answers only
(``vtc.eval.runner.chat_ids``, the prompt evaluation uses). AdamW over the adapters' weights, linear
warm-up then cosine decay, gradient accumulation and clipping, seeded.

A run directory holds::

    RUN/run.json              the resolved configuration, store identities, data hash, versions
    RUN/log.jsonl             one line per optimizer step (loss, learning rate, samples/s) and per evaluation
    RUN/checkpoint/           adapter.safetensors + trainer.pt (optimizer, scheduler, RNG) + state.json,
                              replaced atomically every --save-every steps and at the end
    RUN/adapter.safetensors   the trained weights (what `vtc eval --adapter RUN` loads), with adapter.json
    RUN/loss.png              the loss curve

Several processes (``accelerate launch --multi_gpu -m vtc train ...``, or torchrun) train
data-parallel: process r of W takes micro-batches r, r + W, ... of the same seeded order, gradients are
averaged across processes before each optimizer step, and process 0 alone writes the run directory. A
step of W processes is, up to floating-point sums, the step of one process with W times the gradient
accumulation.

Resume is exact: the data order depends only on the seed and the position, a value list (``--set
threshold=0.4,0.5``, DynTok §3.3) is drawn per batch from the seed and the batch number, and the
optimizer, scheduler and torch RNG come back from the checkpoint, so a run stopped and resumed logs the
same losses as one that never stopped.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vtc.cache.jsonl import append_jsonl, exclusive, missing_fields, read_json, read_jsonl, removed_on_error
from vtc.errors import VtcError, warn
from vtc.versions import library_versions, stable_hash


@dataclass
class TrainOptions:
    data: str
    model: str
    adapters: str
    out: str
    adapter_options: dict[str, dict] = field(default_factory=dict)  # e.g. {"lora": {"r": "16"}}
    init: str | None = None  # a finished run loaded (and frozen) under this run's adapters
    tokens: str | None = None  # a token store (fixed reduction), or a feature store (evaluated as none)
    features: str | None = None  # a feature store, with `method` applied to each sample on the fly
    method: str | None = None
    params: dict[str, list[str]] = field(default_factory=dict)  # a list of values: one drawn per batch
    steps: int | None = None  # optimizer steps; default: `epochs` over the data
    epochs: float = 1.0
    batch_size: int = 1
    grad_accum: int = 1
    lr: float = 1e-4
    warmup: float = 0.03  # fraction of the steps
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0
    device: str = "cpu"
    dtype: str = "fp32"  # bf16/fp16: autocast on a GPU, weights stay fp32
    save_every: int = 50
    eval_data: str | None = None
    eval_every: int = 0
    max_seconds: float | None = None  # stop (with a checkpoint) after this long; a re-run resumes
    fresh: bool = False


@dataclass
class TrainSummary:
    out: str
    steps: int
    total_steps: int
    samples: int
    missing_videos: int
    skipped_entries: int
    trainable: dict[str, int]
    losses: list[float]
    seconds: float
    resumed_from: int
    stopped_early: bool
    eval: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


class _Cache:
    """Features and reductions of recently used videos, bounded in bytes (the store is read once)."""

    def __init__(self, limit_bytes: int = 2 << 30):
        self.items: dict = {}
        self.bytes, self.limit = 0, limit_bytes

    def get(self, key, make):
        if key in self.items:
            return self.items[key]
        value = make()
        first = value[0].tokens if hasattr(value[0], "tokens") else value[0]  # a Reduction: its tokens
        size = int(first.numel() * first.element_size())
        if self.bytes + size <= self.limit:
            self.items[key] = value
            self.bytes += size
        return value


def _lr_factor(step: int, total: int, warmup_steps: int) -> float:
    """Linear warm-up to 1, then cosine decay to 0 at ``total``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def distributed() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) unless started by `accelerate launch` or torchrun with
    several processes, in which case the process group is set up here (gloo on CPU, NCCL on CUDA)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        from accelerate import PartialState

        PartialState()  # reads the launcher's environment and initialises the process group
    return dist.get_rank(), dist.get_world_size()


class Trainer:
    """Everything one run needs: model with adapters, data, the source of tokens, optimizer."""

    def __init__(self, opt: TrainOptions):
        import torch

        from vtc.adapters import TokenAdapter, get_adapters
        from vtc.eval.runner import TokenSource, make_runner
        from vtc.train.data import read_qa

        self.opt = opt
        self.rank, self.world = distributed()
        if self.world > 1 and opt.device.startswith("cuda"):
            opt.device = f"cuda:{int(os.environ.get('LOCAL_RANK', self.rank))}"
        if (opt.tokens is None) == (opt.features is None):
            raise VtcError("give --tokens STORE, or --features STORE with --method M")
        if opt.features is not None and not opt.method:
            raise VtcError("--features needs --method (the reducer applied to each sample)")
        if opt.tokens is not None and (opt.method or opt.params):
            raise VtcError("--method and --set go with --features; a token store is already reduced")
        for name, v in (("--batch-size", opt.batch_size), ("--grad-accum", opt.grad_accum)):
            if v < 1:
                raise VtcError(f"{name} must be >= 1, got {v}")
        if not (opt.lr > 0 and math.isfinite(opt.lr)):
            raise VtcError(f"--lr must be a positive number, got {opt.lr}")
        self.adapters = get_adapters(opt.adapters, opt.adapter_options)
        self.source = TokenSource(opt.tokens or opt.features)
        self.cache = _Cache()
        # on-the-fly reduction: one reducer per drawn combination of --set values, built once
        self.reducers: dict | None = None
        if opt.features is not None:
            self._check_reducer()
            self.reducers = {}
        self.qa = read_qa(opt.data)
        self.samples, self.missing = [], []
        for s in self.qa.samples:
            vid = self._resolve(s)
            if vid is None:
                self.missing.append(s.video)
            else:
                self.samples.append((s, vid))
        if not self.samples:
            raise VtcError(
                f"none of the {len(self.qa.samples)} entries of {opt.data} has its video in the store "
                f"(first: '{self.qa.samples[0].video}'); extract those videos first"
            )
        torch.manual_seed(opt.seed)
        self.runner = make_runner(opt.model, device=opt.device, dtype="fp32")
        self.runner.check(self.source)
        family = self.runner.family
        for a in self.adapters:
            if family.name not in a.families:
                raise VtcError(f"adapter {a.name} does not apply to {family.label}: {a.why_not}")
        model = self.runner.model
        self.init = None
        if opt.init:  # a finished run underneath: its weights load first and stay frozen
            from vtc.adapters import load_adapter

            meta = load_adapter(model, opt.init, self.source.features.meta.get("identity_hash"))
            self.init = {"run": str(Path(opt.init).resolve()), "identity_hash": meta.get("identity_hash")}
        for p in model.parameters():
            p.requires_grad_(False)
        token_modules = [a for a in self.adapters if isinstance(a, TokenAdapter)]
        if token_modules:  # they size themselves on the data's grid and frame count
            first = self.load(self.samples[0][1], 0)[1]
            for a in token_modules:
                a.bind(first)
        self.params = {a.name: a.attach(model) for a in self.adapters}
        self.trainable = {k: sum(p.numel() for p in v) for k, v in self.params.items()}
        flat = [p for ps in self.params.values() for p in ps]
        self.optimizer = torch.optim.AdamW(flat, lr=opt.lr, weight_decay=opt.weight_decay)
        per_epoch = math.ceil(len(self.samples) / (opt.batch_size * opt.grad_accum * self.world))
        self.total_steps = opt.steps if opt.steps is not None else max(1, math.ceil(opt.epochs * per_epoch))
        warmup_steps = max(1, round(opt.warmup * self.total_steps))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: _lr_factor(s, self.total_steps, warmup_steps)
        )
        self._perm: tuple = (None, None)  # (epoch, its sample order), derived from the seed
        self.eval_set = None
        if opt.eval_data:
            self.eval_set = [(s, v) for s in read_qa(opt.eval_data).samples if (v := self._resolve(s))]

    # ------------------------------------------------------------------ data
    def _resolve(self, s) -> str | None:
        for name in (s.video, *s.alt_ids):
            try:
                return self.source.resolve(name)
            except VtcError:
                continue
        return None

    def _check_reducer(self) -> None:
        """A bad method, key or value fails now, not at step 1000."""
        from vtc.reducers import get_reducer

        adapt = self.source.family.adapt  # an explicit grid=pooled on Qwen2.5-VL features is refused
        needs = set(adapt(get_reducer(self.opt.method)).needs)
        for key, values in self.opt.params.items():
            if not values:
                raise VtcError(f"--set {key}= needs at least one value")
            for v in values:
                needs |= set(adapt(get_reducer(self.opt.method, **{key: v}), {key: v}).needs)
        if needs:
            raise VtcError(
                f"method {self.opt.method} needs '{sorted(needs)[0]}' per video; compress with it and "
                "train on the token store (--tokens) instead"
            )

    def reducer_for(self, micro: int):
        """The reducer of micro-batch ``micro``: each listed parameter drawn from its values, seeded."""
        import torch

        from vtc.reducers import get_reducer

        g = torch.Generator().manual_seed(self.opt.seed * 1_000_003 + micro)
        drawn = {
            k: v[int(torch.randint(len(v), (1,), generator=g))] for k, v in sorted(self.opt.params.items())
        }
        key = tuple(sorted(drawn.items()))
        if key not in self.reducers:
            self.reducers[key] = self.source.family.adapt(get_reducer(self.opt.method, **drawn), drawn)
        return self.reducers[key], drawn

    def batch_samples(self, micro: int) -> list:
        """The samples of micro-batch ``micro``: a seeded permutation per epoch, by position only."""
        import torch

        n, bs = len(self.samples), self.opt.batch_size
        out = []
        for p in range(micro * bs, micro * bs + bs):
            epoch, i = divmod(p, n)
            if self._perm[0] != epoch:  # drawn once per epoch, not once per sample
                g = torch.Generator().manual_seed(self.opt.seed * 7919 + epoch)
                self._perm = (epoch, torch.randperm(n, generator=g))
            out.append(self.samples[int(self._perm[1][i])])
        return out

    def load(self, vid: str, micro: int):
        """(features, Reduction) of one video: the stored reduction, or micro-batch ``micro``'s reducer
        applied to the stored features."""
        if self.reducers is None:
            return self.cache.get(vid, lambda: self.source.load(vid))
        x, _ = self.cache.get(("x", vid), lambda: (self.source.features_of(vid), None))
        reducer, drawn = self.reducer_for(micro)
        # reducers are deterministic (seeded): one reduction per video and drawn value, reused every epoch
        key = ("r", vid, tuple(sorted(drawn.items())))
        red, _ = self.cache.get(key, lambda: (self.source.reduce(vid, reducer, x)[1], None))
        return x, red

    # ------------------------------------------------------------------ one step
    def micro_loss(self, micro: int):
        """Mean cross-entropy over the answer tokens of micro-batch ``micro``."""
        import torch

        model = self.runner.model
        embeds, labels, positions = [], [], []
        for sample, vid in self.batch_samples(micro):
            x, red = self.load(vid, micro)
            video, ids, lab, pos = self.runner.conversation(x, red, list(sample.turns), grad=True)
            ids_t = torch.tensor(ids, device=self.opt.device)
            e = model.get_input_embeddings()(ids_t)
            where = ids_t == self.runner.video_token_id
            e = e.masked_scatter(where[:, None], video.to(e.dtype))
            embeds.append(e)
            labels.append(torch.tensor(lab, device=self.opt.device))
            positions.append(pos)
        width = max(e.shape[0] for e in embeds)
        dim = embeds[0].shape[1]
        batch = torch.zeros(len(embeds), width, dim, dtype=embeds[0].dtype, device=self.opt.device)
        lab = torch.full((len(embeds), width), -100, dtype=torch.long, device=self.opt.device)
        # Qwen2.5-VL's 3-D M-RoPE ids, as evaluation gives them (padding after the end gets 0). 1-D ids are
        # the model's own count and are left to it: given ones that restart at 0 in the padding would read
        # as packed sequences and replace the fused causal kernel by a dense mask.
        for i, (e, lb) in enumerate(zip(embeds, labels, strict=True)):
            batch[i, : e.shape[0]], lab[i, : lb.shape[0]] = e, lb
        pos = None
        if positions[0].shape[0] > 1:
            pos = torch.zeros((positions[0].shape[0], len(embeds), width), dtype=torch.long)
            for i, p in enumerate(positions):
                pos[:, i, : p.shape[1]] = p
            pos = pos.to(self.opt.device)
        autocast = self.opt.dtype != "fp32" and self.opt.device.startswith("cuda")
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.opt.dtype)
        # No attention mask: the padding is on the right, so under causal attention no real token sees it
        # (and the padded positions carry no labels); SDPA then runs its fused causal kernel, not a dense
        # masked one (measured on 8 sequences of 1,600 tokens: 1.35 -> 0.91 s per step).
        with torch.autocast("cuda", dtype=dtype, enabled=autocast):
            out = model(inputs_embeds=batch, position_ids=pos, use_cache=False)
        logits = out.logits[:, :-1].float()
        return torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), lab[:, 1:].reshape(-1), ignore_index=-100
        )

    def step(self, step: int) -> float:
        import torch

        self.runner.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for k in range(self.opt.grad_accum):
            # process r of W takes micro-batches r, r + W, ...: W processes see what one would with W x accum
            loss = self.micro_loss((step * self.opt.grad_accum + k) * self.world + self.rank)
            if not torch.isfinite(loss):
                raise VtcError(f"the loss became {loss.item()} at step {step + 1}; lower --lr")
            (loss / self.opt.grad_accum).backward()
            total += loss.item() / self.opt.grad_accum
        flat = [p for ps in self.params.values() for p in ps]
        if self.world > 1:
            total = self._average(flat, total)
        torch.nn.utils.clip_grad_norm_(flat, self.opt.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        return total

    def _average(self, params: list, loss: float) -> float:
        """Average the gradients (and the step's loss) over the processes, as DDP would."""
        import torch
        import torch.distributed as dist

        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad)
            p.grad /= self.world
        t = torch.tensor([loss], dtype=torch.float64, device=self.opt.device)
        dist.all_reduce(t)
        return float(t.item()) / self.world

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def agree(self, flag: bool) -> bool:
        """Process 0's decision (e.g. to stop on --max-seconds), the same on every process."""
        if self.world == 1:
            return flag
        import torch
        import torch.distributed as dist

        t = torch.tensor([float(flag)], device=self.opt.device)
        dist.broadcast(t, src=0)
        return bool(t.item())

    # ------------------------------------------------------------------ evaluation
    def evaluate(self) -> dict:
        """Held-out accuracy (mcq rows: the first option letter of a greedy answer), per category."""
        from vtc.eval.tasks.mcq import mcq_parse

        self.runner.model.eval()
        by: dict[str, list[float]] = {}
        for sample, vid in self.eval_set or []:
            x, red = self.source.load(vid) if self.reducers is None else self.load(vid, 0)
            question, answer = sample.turns[0]
            g = self.runner.run(x, red, question, max_new_tokens=4)
            ok = float(mcq_parse(g.text, sample.n_options or 26) == answer)
            by.setdefault(sample.category or "all", []).append(ok)
        per = {k: 100.0 * sum(v) / len(v) for k, v in sorted(by.items())}
        n = sum(len(v) for v in by.values())
        overall = 100.0 * sum(sum(v) for v in by.values()) / n if n else None
        return {"accuracy": overall, "per_category": per, "n": n}


def run_identity(opt: TrainOptions, trainer: Trainer) -> dict:
    """What makes a run resumable (and its adapter loadable): any change refuses the resume."""
    from vtc.encoders.vision import _config_hash

    src = trainer.source
    store = src.tokens if src.tokens is not None else src.features
    keep = {
        k: v
        for k, v in asdict(opt).items()
        if k not in ("out", "fresh", "max_seconds", "save_every", "device")
    }
    return {
        "options": keep,
        "data_hash": _file_hash(trainer.qa.path),
        "base_model": {"id": opt.model, "config_hash": _config_hash(trainer.runner.model.config)},
        "store_identity": store.meta.get("identity_hash"),
        "features_identity": src.features.meta.get("identity_hash"),
        "method": src.method if opt.features is None else {"method": opt.method, "sets": opt.params},
        "adapters": [a.name for a in trainer.adapters],
        "adapter_options": {a.name: a.options for a in trainer.adapters if a.options},
        "trainable": trainer.trainable,
        "init": trainer.init,
    }


def train(opt: TrainOptions, quiet: bool = False, console=None) -> TrainSummary:
    out = Path(opt.out)
    if distributed()[0] != 0:  # another data-parallel process: process 0 holds the run directory
        return _train_locked(opt, out, True, None)
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    with removed_on_error(out, made, keep="log.jsonl"), exclusive(out / ".lock", f"training run {out}"):
        return _train_locked(opt, out, quiet, console)


def _train_locked(opt: TrainOptions, out: Path, quiet: bool, console) -> TrainSummary:
    from vtc.stages.progress import progress_bar

    trainer = Trainer(opt)
    ident = run_identity(opt, trainer)
    ident_hash = stable_hash(ident)
    lead = trainer.rank == 0  # the process that writes the run directory
    if opt.fresh and lead:
        for name in ("checkpoint", "log.jsonl", "adapter.safetensors", "adapter.json", "loss.png"):
            p = out / name
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    trainer.barrier()
    start = 0
    if (out / "checkpoint" / "state.json").exists():
        state = read_json(out / "checkpoint" / "state.json")
        if state is None:
            raise VtcError(
                f"{out / 'checkpoint' / 'state.json'} is unreadable; use --fresh to start the run over"
            )
        if state.get("identity_hash") != ident_hash:
            raise VtcError(
                f"{out} holds a different training run; use another --out, or --fresh to start over"
            )
        start = _load_checkpoint(trainer, out / "checkpoint", state)
    log = out / "log.jsonl"
    kept = []
    if lead:
        (out / "run.json").write_text(
            json.dumps(
                {**ident, "identity_hash": ident_hash, "versions": library_versions()}, indent=2, default=str
            )
        )
        kept = [r for r in read_jsonl(log, lambda r: missing_fields(r, ("step",))) if r["step"] <= start]
        log.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))
    losses = [r["loss"] for r in kept if "loss" in r]
    evals = [r for r in kept if "eval" in r]

    t0 = time.perf_counter()
    stopped = False
    done = start
    samples_per_step = opt.batch_size * opt.grad_accum * trainer.world
    with progress_bar("train", trainer.total_steps - start, "samples", quiet, console) as bar:
        for step in range(start, trainer.total_steps):
            ts = time.perf_counter()
            loss = trainer.step(step)
            dt = time.perf_counter() - ts
            losses.append(loss)
            rec = {
                "step": step + 1,
                "loss": loss,
                "lr": trainer.scheduler.get_last_lr()[0],
                "samples_per_s": samples_per_step / dt,
            }
            if lead:
                append_jsonl(log, rec)
            bar.advance(1, samples_per_step)
            bar.describe(f"train loss {loss:.3f} lr {rec['lr']:.1e}")
            done = step + 1
            if (
                lead
                and trainer.eval_set
                and opt.eval_every
                and (done % opt.eval_every == 0 or done == trainer.total_steps)
            ):
                ev = {"step": done, "eval": trainer.evaluate()}
                evals.append(ev)
                append_jsonl(log, ev)
            over_time = trainer.agree(
                opt.max_seconds is not None and time.perf_counter() - t0 >= opt.max_seconds
            )
            if lead and (done % opt.save_every == 0 or done == trainer.total_steps or over_time):
                _save_checkpoint(trainer, out / "checkpoint", done, ident_hash)
            if over_time and done < trainer.total_steps:
                stopped = True
                break
    # a finished run re-run does nothing: its adapter (and the evaluations keyed on it) stay as they are
    if lead and not stopped and (done > start or not (out / "adapter.safetensors").exists()):
        _save_adapter(trainer, out, ident, ident_hash)
        _plot_losses(out / "loss.png", [r for r in read_jsonl(log, lambda r: None) if "loss" in r], evals)
    return TrainSummary(
        out=str(out),
        steps=done,
        total_steps=trainer.total_steps,
        samples=len(trainer.samples),
        missing_videos=len(trainer.missing),
        skipped_entries=len(trainer.qa.skipped),
        trainable=trainer.trainable,
        losses=losses,
        seconds=time.perf_counter() - t0,
        resumed_from=start,
        stopped_early=stopped,
        eval=[e["eval"] | {"step": e["step"]} for e in evals],
    )


def _file_hash(path: str | Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _save_checkpoint(trainer: Trainer, path: Path, step: int, ident_hash: str) -> None:
    """Written beside, then renamed over the last one: a run killed mid-save keeps the previous one."""
    import torch
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(_adapter_weights(trainer), str(tmp / "adapter.safetensors"))
    torch.save(
        {
            "optimizer": trainer.optimizer.state_dict(),
            "scheduler": trainer.scheduler.state_dict(),
            "rng": torch.get_rng_state(),
        },
        tmp / "trainer.pt",
    )
    (tmp / "state.json").write_text(json.dumps({"step": step, "identity_hash": ident_hash}))
    old = path.with_name(path.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    shutil.rmtree(old, ignore_errors=True)


def _adapter_weights(trainer: Trainer) -> dict:
    """Every adapter's weights by parameter name, on the CPU: what a checkpoint and a run save."""
    state = {}
    for a in trainer.adapters:
        state.update(a.state(trainer.runner.model))
    return {k: v.cpu() for k, v in state.items()}


def _load_checkpoint(trainer: Trainer, path: Path, state: dict) -> int:
    import torch
    from safetensors.torch import load_file

    try:
        weights = load_file(str(path / "adapter.safetensors"))
        saved = torch.load(path / "trainer.pt", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a damaged checkpoint of ours: one line, and the way out
        raise VtcError(f"{path} is damaged ({type(e).__name__}); use --fresh to start the run over") from None
    for a in trainer.adapters:
        a.load(trainer.runner.model, weights)
    trainer.optimizer.load_state_dict(saved["optimizer"])
    trainer.scheduler.load_state_dict(saved["scheduler"])
    torch.set_rng_state(saved["rng"])
    return int(state["step"])


def _save_adapter(trainer: Trainer, out: Path, ident: dict, ident_hash: str) -> None:
    from safetensors.torch import save_file

    save_file(_adapter_weights(trainer), str(out / "adapter.safetensors.tmp"))
    os.replace(out / "adapter.safetensors.tmp", out / "adapter.safetensors")
    (out / "adapter.json").write_text(
        json.dumps({**ident, "identity_hash": ident_hash}, indent=2, default=str)
    )


def _plot_losses(path: Path, rows: list[dict], evals: list[dict]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        warn("matplotlib is not installed: no loss.png")
        return
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], lw=1, label="training loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (answer tokens)")
    if evals:
        ax2 = ax.twinx()
        ax2.plot(
            [e["step"] for e in evals],
            [e["eval"]["accuracy"] for e in evals],
            "o-",
            color="C1",
            label="held-out accuracy",
        )
        ax2.set_ylabel("held-out accuracy (%)")
        ax2.set_ylim(0, 100)
    ax.set_title("vtc train")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
