"""Tensor-parallel causal self-attention: heads split across the group."""

from __future__ import annotations

import math
from typing import Any

from . import regions as rg
from .layers import ShardedLayer, accumulate, agree_layer


class ParallelSelfAttention(ShardedLayer):
    """Multi-head self-attention on (batch, seq, d_model), heads split across `comm`.

    ``w_qkv`` (d_model, 3*d_model) holds the q, k and v projections as
    consecutive d_model blocks; head h uses columns [h*dh, (h+1)*dh) of each
    (dh = d_model / n_heads). Scores q k^T / sqrt(dh), causal mask (when
    ``causal``), softmax, times v, heads concatenated, then ``w_out``
    (d_model, d_model). Rank r keeps heads [r*n/p, (r+1)*n/p): their q, k and v
    columns of w_qkv (column-parallel) and their rows of w_out (row-parallel),
    so one all-reduce in forward and one in backward; ``sequence_parallel`` makes
    them an all-gather at entry and a reduce-scatter at exit.
    ``params``/``grads``: [w_qkv, b_qkv, w_out, b_out] shards (b_out whole).
    Collective: the ranks compare d_model, n_heads, the flags and the dtype,
    and all raise ValueError where they differ.
    """

    def __init__(
        self, w_qkv: Any, b_qkv: Any, w_out: Any, b_out: Any, n_heads: int, comm: Any, causal: bool = True,
        sequence_parallel: bool = False,
    ):  # fmt: skip
        name = "ParallelSelfAttention"
        d = w_qkv.shape[0]

        def check() -> None:
            if tuple(w_qkv.shape) != (d, 3 * d) or tuple(w_out.shape) != (d, d):
                raise ValueError(
                    f"collex.parallel.{name}: expected w_qkv (d, 3d) and w_out (d, d), "
                    f"got {w_qkv.shape}, {w_out.shape}"
                )
            if n_heads < 1 or d % n_heads:
                raise ValueError(f"collex.parallel.{name}: d_model={d} is not divisible by n_heads={n_heads}")
            rg.check_divides(n_heads, comm, "n_heads", name)

        settings = {"d_model": int(d), "n_heads": int(n_heads), "causal": bool(causal),
                    "sequence_parallel": bool(sequence_parallel), "dtype": w_qkv.dtype}  # fmt: skip
        agree_layer(comm, name, check, settings)
        self.heads = n_heads // comm.size  # this rank's heads
        self.comm, self.causal, self.sequence_parallel = comm, causal, sequence_parallel
        self.d_model, self.n_heads, self.dh = d, n_heads, d // n_heads
        xp = rg.array_module(w_qkv)
        width = self.heads * self.dh  # this rank's columns of each of q, k, v
        lo = comm.rank * width
        cols = [slice(k * d + lo, k * d + lo + width) for k in range(3)]
        w = xp.ascontiguousarray(xp.concatenate([w_qkv[:, c] for c in cols], axis=1))
        b = xp.ascontiguousarray(xp.concatenate([b_qkv[c] for c in cols]))
        wo = xp.ascontiguousarray(w_out[lo : lo + width])
        bo = xp.array(b_out, copy=True)
        self.params = [w, b, wo, bo]
        self.grads = [xp.zeros_like(p) for p in self.params]
        self._gathers = [self._gather_qkv, self._gather_qkv, "rows", "whole"]

    def _gather_qkv(self, a: Any) -> Any:
        """This rank's [q | k | v] columns back into the full (.., 3*d_model) layout."""
        xp = rg.array_module(a)
        p, width = self.comm.size, self.heads * self.dh
        g = self.comm.allgather(xp.ascontiguousarray(a)) if p > 1 else a[None]  # (p, ..., 3*width)
        g = g.reshape(p, *a.shape[:-1], 3, width)
        g = xp.moveaxis(g, 0, -2)  # (..., 3, p, width)
        return xp.ascontiguousarray(g).reshape(*a.shape[:-1], 3 * p * width)

    def forward_ctx(self, x: Any) -> tuple:
        name = "ParallelSelfAttention"
        x = rg.enter(self.comm, x, self.sequence_parallel, name)
        if x.ndim != 3 or x.shape[-1] != self.d_model:
            raise ValueError(
                f"collex.parallel.{name}: expected x of (batch, seq, {self.d_model}), got {x.shape}"
            )
        xp = rg.array_module(x)
        w, b, wo, bo = self.params
        bsz, s, _ = x.shape
        qkv = (x @ w + b).reshape(bsz, s, 3, self.heads, self.dh)
        q, k, v = (
            xp.ascontiguousarray(qkv[:, :, i].transpose(0, 2, 1, 3)) for i in range(3)
        )  # (b, h, s, dh)
        scores = (q @ k.transpose(0, 1, 3, 2)) * (1.0 / math.sqrt(self.dh))
        if self.causal:
            mask = xp.triu(xp.ones((s, s), dtype=bool), k=1)
            scores = xp.where(mask, -xp.inf, scores).astype(scores.dtype)
        scores -= scores.max(axis=-1, keepdims=True)
        probs = xp.exp(scores)
        probs /= probs.sum(axis=-1, keepdims=True)
        o = (probs @ v).transpose(0, 2, 1, 3).reshape(bsz, s, self.heads * self.dh)
        y = rg.leave(self.comm, o @ wo, self.sequence_parallel)
        y += bo
        return y, (x, q, k, v, probs, o)

    def backward_ctx(self, dy: Any, ctx: Any) -> Any:
        xp = rg.array_module(dy)
        x, q, k, v, probs, o = ctx
        w, _, wo, _ = self.params
        dw, db, dwo, dbo = self.grads
        dy = rg.leave_backward(self.comm, dy, self.sequence_parallel)
        accumulate(o, dy, dwo, dbo)
        bsz, s, _ = x.shape
        do = (dy @ wo.T).reshape(bsz, s, self.heads, self.dh).transpose(0, 2, 1, 3)  # (b, h, s, dh)
        dv = probs.transpose(0, 1, 3, 2) @ do
        dp = do @ v.transpose(0, 1, 3, 2)
        ds = probs * (dp - (dp * probs).sum(axis=-1, keepdims=True)) * (1.0 / math.sqrt(self.dh))
        dq = ds @ k
        dk = ds.transpose(0, 1, 3, 2) @ q
        dqkv = xp.stack([dq, dk, dv], axis=2)  # (b, h, 3, s, dh)
        dqkv = xp.ascontiguousarray(dqkv.transpose(0, 3, 2, 1, 4)).reshape(bsz, s, 3 * self.heads * self.dh)
        accumulate(x, dqkv, dw, db)
        return rg.enter_backward(self.comm, dqkv @ w.T, self.sequence_parallel)
