"""Transformer building blocks of 4M-21, with the reference's parameter names and tensor layouts.

All blocks are pre-norm; every Linear is bias-free. Attention runs through
``scaled_dot_product_attention`` (boolean masks: True = may attend). The decoder's self-attention also has
a static-shape cached path (one new token written into a fixed-size cache) so the same maths can be
exported to ONNX / TensorRT without data-dependent control flow.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LAYER_NORM_EPS = 1e-6
SINCOS_TEMPERATURE = 10000.0


class LayerNorm(nn.Module):
    """LayerNorm without a learned bias; the all-zero bias is a persistent buffer as in the checkpoints."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.register_buffer("bias", torch.zeros(dim))

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, LAYER_NORM_EPS)


class SwiGLU(nn.Module):
    """Gated feed-forward ``fc2(SiLU(fc1 x) * fc3 x)``."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, dim, bias=False)
        self.fc3 = nn.Linear(dim, hidden, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.silu(self.fc1(x)) * self.fc3(x))


def _split_heads(x: Tensor, parts: int, heads: int) -> Tensor:
    """[B, N, parts*dim] -> [parts, B, heads, N, head_dim]; fused outputs are ordered (part, head, dim)."""
    batch, length, width = x.shape
    return x.view(batch, length, parts, heads, width // (parts * heads)).permute(2, 0, 3, 1, 4)


def _merge_heads(x: Tensor) -> Tensor:
    batch, heads, length, head_dim = x.shape
    return x.transpose(1, 2).reshape(batch, length, heads * head_dim)


def one_query_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """softmax(q kᵀ / sqrt(hd)) v for q [B, H, 1, hd], as three small ops: for a single query the fused
    CPU attention kernel costs more (a parallel region per call) than the work itself."""
    scores = torch.matmul(q, k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    return torch.matmul(scores.softmax(dim=-1), v)


class SelfAttention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` projection laid out as (3, heads, head_dim)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        q, k, v = _split_heads(self.qkv(x), 3, self.heads)
        return self.proj(_merge_heads(F.scaled_dot_product_attention(q, k, v, attn_mask=mask)))

    def forward_cached(self, x: Tensor, position: Tensor, cache: Tensor) -> tuple[Tensor, Tensor]:
        """One new token per sequence. ``x``: [B, 1, D]; ``position``: LongTensor [1], the token's index;
        ``cache``: [2, B, H, S, hd] keys/values of earlier tokens. Returns the output and the cache with this
        token's key/value written at ``position``; attention sees positions <= ``position`` only."""
        q, k, v = _split_heads(self.qkv(x), 3, self.heads)
        slots = torch.arange(cache.shape[3], device=x.device)
        write = (slots == position).view(1, 1, -1, 1)
        cache = torch.where(write, torch.stack((k, v)), cache)
        visible = (slots <= position).view(1, 1, 1, -1)
        out = F.scaled_dot_product_attention(q, cache[0], cache[1], attn_mask=visible)
        return self.proj(_merge_heads(out)), cache

    def forward_in_place(self, x: Tensor, position: int, cache: Tensor) -> Tensor:
        """``forward_cached`` for eager inference: writes this token's key/value into ``cache`` in place
        and attends to the filled prefix only, so a step neither copies the cache nor computes over its
        unused slots (the static-shape version above is what gets exported)."""
        q, k, v = _split_heads(self.qkv(x), 3, self.heads)
        cache[0, :, :, position] = k[:, :, 0]
        cache[1, :, :, position] = v[:, :, 0]
        visible = cache[:, :, :, : position + 1]
        return self.proj(_merge_heads(one_query_attention(q, visible[0], visible[1])))


class CrossAttention(nn.Module):
    """Multi-head cross-attention: ``q`` on the queries, fused ``kv`` (2, heads, head_dim) on the context."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(dim, 2 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)

    def context_kv(self, context: Tensor) -> Tensor:
        """Keys and values of a (normalised) context: [2, B, H, N, hd]."""
        return _split_heads(self.kv(context), 2, self.heads)

    def forward_one_query(self, x: Tensor, kv: Tensor) -> Tensor:
        """``forward`` for one query per row (an eager autoregressive step), see ``one_query_attention``."""
        q = _split_heads(self.q(x), 1, self.heads)[0]
        return self.proj(_merge_heads(one_query_attention(q, kv[0], kv[1])))

    def forward(self, x: Tensor, kv: Tensor) -> Tensor:
        if kv.shape[3] == 0:
            # An empty context (the unconditional pass of classifier-free guidance) contributes nothing,
            # exactly as a softmax over zero keys does in the reference.
            return torch.zeros_like(x)
        q = _split_heads(self.q(x), 1, self.heads)[0]
        return self.proj(_merge_heads(F.scaled_dot_product_attention(q, kv[0], kv[1])))


class Block(nn.Module):
    """Encoder block: x + attn(norm1 x), then x + mlp(norm2 x)."""

    def __init__(self, dim: int, heads: int, hidden: int):
        super().__init__()
        self.norm1 = LayerNorm(dim)
        self.attn = SelfAttention(dim, heads)
        self.norm2 = LayerNorm(dim)
        self.mlp = SwiGLU(dim, hidden)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class DecoderBlock(nn.Module):
    """Decoder block: self-attention, cross-attention to the normalised context, feed-forward."""

    def __init__(self, dim: int, heads: int, hidden: int):
        super().__init__()
        self.norm1 = LayerNorm(dim)
        self.self_attn = SelfAttention(dim, heads)
        self.query_norm = LayerNorm(dim)
        self.context_norm = LayerNorm(dim)
        self.cross_attn = CrossAttention(dim, heads)
        self.norm2 = LayerNorm(dim)
        self.mlp = SwiGLU(dim, hidden)

    def context_kv(self, context: Tensor) -> Tensor:
        return self.cross_attn.context_kv(self.context_norm(context))

    def forward(self, x: Tensor, kv: Tensor, groups: int = 1, mask: Tensor | None = None) -> Tensor:
        """``x``: [B, G*Q, D] holding ``groups`` independent query sets of Q tokens per frame. Self-attention
        stays inside each set (folded into the batch, so no mask is needed); cross-attention sees the
        frame's context ``kv`` [2, B, H, N, hd] for all sets at once. ``mask``: optional self-attention
        mask (e.g. causal) for the folded [B*G, Q, Q] attention."""
        batch, length, dim = x.shape
        folded = x.reshape(batch * groups, length // groups, dim)
        x = x + self.self_attn(self.norm1(folded), mask).reshape(batch, length, dim)
        x = x + self.cross_attn(self.query_norm(x), kv)
        return x + self.mlp(self.norm2(x))

    def forward_cached(self, x: Tensor, kv: Tensor, position: Tensor, cache: Tensor) -> tuple[Tensor, Tensor]:
        out, cache = self.self_attn.forward_cached(self.norm1(x), position, cache)
        x = x + out
        x = x + self.cross_attn(self.query_norm(x), kv)
        return x + self.mlp(self.norm2(x)), cache

    def forward_in_place(self, x: Tensor, kv: Tensor, position: int, cache: Tensor) -> Tensor:
        """``forward_cached`` writing into ``cache`` in place (eager inference only)."""
        x = x + self.self_attn.forward_in_place(self.norm1(x), position, cache)
        x = x + self.cross_attn.forward_one_query(self.query_norm(x), kv)
        return x + self.mlp(self.norm2(x))


def _frequencies(count: int) -> Tensor:
    """omega_k = 1 / 10000^(k / count), k = 0..count-1 (float32, as in the reference tables)."""
    return 1.0 / SINCOS_TEMPERATURE ** (torch.arange(count, dtype=torch.float32) / count)


def sincos_1d(length: int, dim: int) -> Tensor:
    """[1, length, dim] table: position p -> [sin(p w), cos(p w)], w over dim/2 frequencies."""
    angles = torch.outer(torch.arange(length, dtype=torch.float32), _frequencies(dim // 2))
    return torch.cat((angles.sin(), angles.cos()), dim=1).unsqueeze(0)


def sincos_2d(grid: int, dim: int) -> Tensor:
    """[1, grid*grid, dim] table over a raster-ordered square grid: token (row r, col c) ->
    [sin(r w), cos(r w), sin(c w), cos(c w)], w over dim/4 frequencies (first half encodes the row)."""
    omega = _frequencies(dim // 4)
    rows = torch.outer(torch.arange(grid, dtype=torch.float32).repeat_interleave(grid), omega)
    cols = torch.outer(torch.arange(grid, dtype=torch.float32).repeat(grid), omega)
    return torch.cat((rows.sin(), rows.cos(), cols.sin(), cols.cos()), dim=1).unsqueeze(0)
