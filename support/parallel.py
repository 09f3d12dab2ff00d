"""All distributed plumbing in one place: process group, rank-0 helpers, DDP or FSDP2, micro-step sync.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; without them everything runs as one process. gloo on CPU,
nccl on CUDA, so `torchrun --standalone --nproc_per_node 2 train.py` works on a laptop.

DDP (the default, right for 1B-class models) keeps a full copy of weights, gradients and AdamW state
on every GPU: Janus-Pro-7B would need about 111 GiB per GPU. `--fsdp` shards all three with FSDP2
(`torch.distributed.fsdp.fully_shard`): every transformer block is its own unit, the root holds the
rest. Rollouts and answers run many small no-grad steps, so under FSDP the parameters are gathered
ONCE before them (`full_params`), not per layer per step.

Mixed precision (train.py --precision bf16) keeps fp32 master weights, gradients and AdamW state in both:
DDP's forwards run under bf16 autocast; FSDP2 gathers the fp32 shards in bf16 for the forwards and
reduces the gradients in fp32 (`MixedPrecisionPolicy`), so the sharded parameters never round to bf16.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist


# How long the other ranks wait for rank 0 to fill a cache (rank0_fills): converting Janus-Pro-7B or pretraining
# the shapes base takes minutes, beyond NCCL's default ten. Only that wait, in a group of its own, gets it: a hang
# anywhere else still shows at the default.
FILL_TIMEOUT = datetime.timedelta(hours=2)
_fill_group = None


def setup_distributed(device: str = "auto"):
    """Returns (rank, world, device). device: auto | cpu | cuda."""
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if "RANK" not in os.environ:
        return 0, 1, torch.device("cuda" if use_cuda else "cpu")
    dist.init_process_group("nccl" if use_cuda else "gloo")
    global _fill_group  # made here, where every rank is: a late rank must not hold up rank 0's filling
    _fill_group = dist.new_group(backend="gloo", timeout=FILL_TIMEOUT)
    local = int(os.environ.get("LOCAL_RANK", 0))
    where = torch.device("cuda", local) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(where)
    return dist.get_rank(), dist.get_world_size(), where


def teardown_distributed() -> None:
    """Leave together: a rank tearing gloo down while another still talks to it can abort at exit."""
    if dist.is_initialized():
        with contextlib.suppress(Exception):  # a rank that failed must not hang the others here
            dist.barrier()
        dist.destroy_process_group()


def end_worker() -> None:
    """A torchrun worker whose run finished (process group already destroyed) ends here, without Python's
    interpreter finalization. There, C++ threads of torch.distributed can still be joinable when their
    static owners are destroyed, which aborts the process ("terminate called without an active
    exception", exit -6) after all the work and the checkpoint were written: we saw it on a gloo rank
    once in a few dozen test runs. Outside torchrun this does nothing."""
    if "RANK" in os.environ and not dist.is_initialized():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def print0(*args) -> None:
    if is_main():
        print(*args, flush=True)


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def gather_lists(items: list) -> list:
    """Concatenate every rank's list, in rank order (small Python objects only)."""
    if not dist.is_initialized():
        return list(items)
    parts = [None] * dist.get_world_size()
    dist.all_gather_object(parts, items)
    return [x for p in parts for x in p]


def same_on_every_rank(value, what: str, fix: str) -> None:
    """Stop every rank with one message when the ranks see different `value`s (machines that do not share a folder
    each read their own files). A collective: every rank calls it."""
    seen = gather_lists([value])
    if any(v != seen[0] for v in seen):
        raise ValueError(f"the ranks see different {what} (rank order): {seen}: {fix}")


def from_rank0(value, group=None):
    """Rank 0's value on every rank (so that all ranks stop together on a problem only rank 0 checked)."""
    if not dist.is_initialized():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0, group=group)
    return box[0]


def on_rank0(action, catch: tuple, raise_as: type) -> None:
    """Run `action` on rank 0 alone. If it raises one of `catch`, every rank raises `raise_as` with rank 0's message,
    together. Also a barrier: no rank goes on before rank 0 is done."""
    problem = None
    if is_main():
        try:
            action()
        except catch as err:
            problem = str(err)
    problem = from_rank0(problem)
    if problem:
        raise raise_as(problem)


def rank0_fills(folder: Path, fill, how_to_share: str) -> None:
    """Fill a cache `folder` once under torchrun: rank 0 runs `fill()` while the other ranks wait, then every rank
    checks that it sees the result (folder/config.json). Only rank 0 can write it anyway: under a process group,
    transformers' save_pretrained writes weights and config on global rank 0 alone. If rank 0 fails, every rank
    stops with its message instead of waiting at a barrier. Every rank must call it, even one that sees the folder
    filled already (`fill` checks that on rank 0). Outside torchrun this is fill()."""
    if not dist.is_initialized():
        fill()
        return
    problem = None
    if dist.get_rank() == 0:
        try:
            fill()
        except Exception as err:  # re-raised below on rank 0, handed to the others as text
            problem, error = f"{type(err).__name__}: {err}", err
    problem = from_rank0(problem, _fill_group)  # also the barrier: no rank reads a half-filled cache
    if problem and dist.get_rank() == 0:
        raise error
    if problem:
        raise RuntimeError(f"rank 0 failed to fill {folder}: {problem}")
    if not (Path(folder) / "config.json").exists():
        raise ValueError(f"rank {dist.get_rank()} cannot see {folder}, which rank 0 filled: {how_to_share}")


def mean_over_ranks(stats: dict) -> dict:
    """Average a flat dict of floats over ranks (every rank must hold the same keys)."""
    if not dist.is_initialized() or not stats:
        return stats
    keys = sorted(stats)
    t = torch.tensor([float(stats[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    return {k: v / dist.get_world_size() for k, v in zip(keys, t.tolist())}


def any_rank(flag: bool, device) -> bool:
    """True on every rank if it is true on one (so all ranks stop together)."""
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    if dist.is_initialized():
        dist.all_reduce(t)
    return t.item() > 0


# ------------------------------------------------------------------ wrapping
def blocks_of(module) -> list:
    """The transformer blocks: each becomes one FSDP unit (Llama, Phi and SigLIP layers alike)."""
    return [m for m in module.modules() if type(m).__name__.endswith(("DecoderLayer", "EncoderLayer"))]


def shard(module, gather_dtype: torch.dtype | None = None) -> None:
    """FSDP2 in place: every block, then the root. Parameters become sharded DTensors. With gather_dtype
    (bf16), the shards, their gradients and so the AdamW state keep the parameters' own dtype (fp32): each
    unit gathers its weights in gather_dtype for a forward and reduces the gradients in the shards' dtype."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    master = next(module.parameters()).dtype
    # cast_forward_inputs off: train.py's forwards run under autocast, which casts per op as DDP's do; casting
    # the inputs would also round the residual stream between blocks and the coupling's uniforms to bf16
    mp = MixedPrecisionPolicy(param_dtype=gather_dtype, reduce_dtype=master if gather_dtype else None,
                              cast_forward_inputs=False)
    for block in blocks_of(module):
        fully_shard(block, mp_policy=mp)
    fully_shard(module, mp_policy=mp)
    module._get_fsdp_state()._lazy_init()  # the sampling loops call sub-modules before any root forward


def is_sharded(module) -> bool:
    return hasattr(module, "reshard") and hasattr(module, "unshard")


def wrap(policy, world: int, device, fsdp: bool, gather_dtype: torch.dtype | None = None):
    """The module every gradient-carrying call goes through: DDP, the FSDP-sharded policy, or the policy.
    gather_dtype: FSDP's compute dtype for the gathered weights (see `shard`); DDP's comes from autocast."""
    if world == 1:
        return policy
    if fsdp:
        shard(policy, gather_dtype)
        return policy
    from torch.nn.parallel import DistributedDataParallel as DDP

    # find_unused_parameters: gen-only or und-only steps leave whole towers without gradients
    return DDP(policy, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True)


@contextlib.contextmanager
def full_params(module):
    """Under FSDP, gather the whole parameters once for a stretch of no-grad work (rollout, answers,
    saving) and keep them gathered across forwards; a no-op otherwise."""
    units = [m for m in module.modules() if is_sharded(m)]
    if not units:
        yield
        return
    for m in units:
        m.unshard()
        m.set_reshard_after_forward(False)
    try:
        yield
    finally:
        for m in units:
            m.reshard()
            m.set_reshard_after_forward(True)


def gathered_state_dict(module) -> dict | None:
    """Under FSDP, the whole state dict on rank 0 (collective: every rank calls it); None otherwise."""
    if not any(is_sharded(m) for m in module.modules()):
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def micro_step(model, last: bool):
    """Gradient accumulation: sync gradients only on the last micro-step. For DDP, no_sync() must wrap
    the forward AND the backward; FSDP2 takes a flag instead."""
    if hasattr(model, "no_sync"):
        return contextlib.nullcontext() if last else model.no_sync()
    if hasattr(model, "set_requires_gradient_sync"):
        model.set_requires_gradient_sync(last)
    return contextlib.nullcontext()


def clip_grads(params, max_norm: float) -> float:
    """Clip the global gradient norm (sharded or not) and return it as a float."""
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)


def check_finite(loss: torch.Tensor, step: int, stats: dict) -> None:
    """A NaN or inf loss stops every rank together, before it reaches the weights. `step` counts from 0;
    the message counts from 1, as the progress lines do."""
    if any_rank(not bool(torch.isfinite(loss)), loss.device):
        raise FloatingPointError(f"step {step + 1}: the loss is not finite ({loss.item()}; terms {stats}). "
                                 "Lower --lr (under a bf16 --precision, fp32 may also help).")


def check_grads(policy, step: int, norm: float | None = None) -> None:
    """A non-finite total gradient norm (on any rank) stops every rank before optimizer.step, so no update
    and no checkpoint ever holds its NaN or inf. `norm`: what clip_grads returned, else computed here."""
    params = [p for p in policy.parameters() if p.requires_grad]
    if norm is None:
        total = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
        norm = float(total.full_tensor() if hasattr(total, "full_tensor") else total)  # FSDP: a DTensor
    if any_rank(not math.isfinite(norm), params[0].device):
        raise FloatingPointError(f"step {step + 1}: the gradient norm is not finite ({norm}); the weights were "
                                 f"not updated. Lower --lr (under a bf16 --precision, fp32 may also help).")
