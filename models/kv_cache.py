"""A static KV cache whose attention reads only the filled slots (rounded up to a window).

Why. transformers' `StaticCache` allocates [B, heads, max_len, head_dim] once and writes in place, which
is what a fast decode loop wants (no copy as the cache grows, fixed addresses for CUDA graphs). But it
hands attention all `max_len` slots at every step and masks the empty ones. For a Janus rollout the cache
is prompt + 576 tokens long and, on average, half empty, and reading it is the floor of the whole
rollout (attention is ~1 FLOP per byte). Reading the empty half costs ~1.7x at batch 64 for
Janus-Pro-1B (bench/roofline.py).

What this does. Each layer returns the cache sliced to a *window*: the filled length rounded up to a
multiple of `bucket` slots. The causal mask is built at the same length (`get_mask_sizes`), so the
numbers are those of the full cache minus the masked slots, which contributed exp(-inf) = 0 anyway.
Rounding up keeps the set of shapes small: a compiled or CUDA-graphed decode step sees one shape per
bucket (5 for a 1B rollout at bucket 128) instead of one per token.

The bookkeeping is Python-side (`advance`), so no step reads a device tensor back to the host.
bucket = 0 turns windowing off: every step reads all max_len slots, one shape for the whole rollout.

Only what a single forward needs changes; storage, dtype and addresses are StaticCache's own.
"""

from __future__ import annotations

import torch
from transformers import StaticCache
from transformers.cache_utils import StaticLayer


def autocast_dtype(device_type: str) -> torch.dtype | None:
    """The dtype a sampling cache stores: autocast's (bf16) while autocast is on for `device_type`, else None
    (the dtype of the first keys written)."""
    return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None


class WindowedLayer(StaticLayer):
    """A StaticLayer that shows attention only its first `window` slots (None: all of them).
    With `store_dtype` set, keys and values are stored in that dtype whatever dtype they arrive in."""

    window: int | None = None
    store_dtype: torch.dtype | None = None

    def update(self, key_states, value_states, *args, **kwargs):
        if self.store_dtype is not None:  # under autocast the prefill's K arrives in fp32, a step's in bf16
            key_states, value_states = key_states.to(self.store_dtype), value_states.to(self.store_dtype)
        keys, values = super().update(key_states, value_states, *args, **kwargs)
        if self.window is None:
            return keys, values
        return keys[:, :, : self.window], values[:, :, : self.window]

    def get_mask_sizes(self, query_length: int, *args) -> tuple[int, int]:
        return (self.max_cache_len if self.window is None else self.window), 0


class WindowedStaticCache(StaticCache):
    """StaticCache with windowed layers and a host-side count of filled slots. `dtype` fixes the stored dtype:
    under bf16 autocast the prefill's keys arrive in fp32 and a step's in bf16, and one bf16 cache holds both
    (half the bytes to read at every step).

    Call `advance(q, mask)` before each forward of q new tokens: it sets every layer's window and returns
    the position ids of the new tokens and the 2D padding mask widened to the window (a fixed shape
    within a bucket, which is what torch.compile and CUDA graphs need).
    """

    def __init__(self, config, max_cache_len: int, bucket: int = 128, dtype: torch.dtype | None = None):
        super().__init__(config=config, max_cache_len=max_cache_len)
        if bucket < 0:
            raise ValueError(f"kv bucket must be >= 0 (0 reads all slots), got {bucket}")
        # swap in windowed layers before any storage exists: StaticLayer allocates K and V at its first update
        self.layers = [WindowedLayer(max_cache_len=max_cache_len) for _ in self.layers]
        for layer in self.layers:
            layer.store_dtype = dtype  # None: the dtype of the first keys written
        self.bucket = bucket
        self.max_cache_len = max_cache_len
        self.filled = 0  # slots written so far (host-side mirror of each layer's cumulative_length)

    def reset(self) -> None:
        """Empty the cache, keeping its storage (and so the addresses a compiled or graphed step was built on)."""
        super().reset()
        self.filled = 0

    def window_for(self, length: int) -> int:
        """Slots attention reads once `length` slots are filled."""
        if self.bucket == 0:
            return self.max_cache_len
        return min(self.max_cache_len, -(-length // self.bucket) * self.bucket)  # ceil(length / bucket) * bucket

    def advance(self, q: int, mask: torch.Tensor, device) -> tuple[torch.Tensor, torch.Tensor]:
        """Open the next q slots. mask (B, filled + q) -> positions (1, q), mask (B, window)."""
        if self.filled + q > self.max_cache_len:
            raise ValueError(f"KV cache of {self.max_cache_len} slots is full ({self.filled} filled, {q} more asked)")
        if mask.shape[1] != self.filled + q:
            raise ValueError(f"mask covers {mask.shape[1]} slots but the cache will hold {self.filled + q}")
        window = self.window_for(self.filled + q)
        for layer in self.layers:
            layer.window = window
        # positions are slot indices, left pads included (a caller may pass its own instead)
        positions = torch.arange(self.filled, self.filled + q, device=device).unsqueeze(0)
        self.filled += q
        # slots past the filled ones are in the future of every query: the causal mask hides them already
        wide = torch.ones(mask.shape[0], window, dtype=mask.dtype, device=mask.device)
        wide[:, : mask.shape[1]] = mask
        return positions, wide

    def storage_bytes(self) -> int:
        """Bytes of K and V held (allocated lazily at the first forward)."""
        return sum(t.numel() * t.element_size() for layer in self.layers if layer.is_initialized
                   for t in (layer.keys, layer.values))
