"""A small causal character-level GPT in NumPy, written out forward and backward:
token and position embeddings, L blocks of pre-LayerNorm self-attention and MLP
with residuals, a final LayerNorm and an output projection, softmax
cross-entropy. Each block's attention and MLP are collex's tensor-parallel
layers over a `tp` communicator (of one rank on one process), and the blocks are
cut into pipeline stages: a stage is what `collex.parallel.Pipeline` runs.

Every parameter is drawn from a seed of its own, whole, on every rank, before a
rank keeps its shard: any grid starts from the same model as one process.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from collex import parallel as par


def normal(seed: int, shape: tuple, std: float) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * std).astype(np.float32)


class LayerNorm:
    def __init__(self, d: int):
        self.params = [np.ones(d, np.float32), np.zeros(d, np.float32)]
        self.grads = [np.zeros(d, np.float32), np.zeros(d, np.float32)]

    def forward(self, x):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        rstd = 1.0 / np.sqrt(var + 1e-5)
        xhat = (x - mu) * rstd
        return xhat * self.params[0] + self.params[1], (xhat, rstd)

    def backward(self, dy, ctx):
        xhat, rstd = ctx
        self.grads[0] += (dy * xhat).reshape(-1, xhat.shape[-1]).sum(0)
        self.grads[1] += dy.reshape(-1, dy.shape[-1]).sum(0)
        dxhat = dy * self.params[0]
        return rstd * (dxhat - dxhat.mean(-1, keepdims=True) - xhat * (dxhat * xhat).mean(-1, keepdims=True))


class Embedding:
    def __init__(self, vocab: int, seq: int, d: int, seed: int):
        self.params = [normal(seed, (vocab, d), 0.02), normal(seed + 1, (seq, d), 0.01)]
        self.grads = [np.zeros_like(p) for p in self.params]

    def forward(self, ids):
        return self.params[0][ids] + self.params[1][: ids.shape[1]], ids

    def backward(self, dx, ids):
        np.add.at(self.grads[0], ids.reshape(-1), dx.reshape(-1, dx.shape[-1]))
        self.grads[1][: ids.shape[1]] += dx.sum(0)
        return None


class Block:
    """x + attn(ln1(x)), then + mlp(ln2(.)); attention heads and MLP columns split over tp."""

    def __init__(self, d: int, heads: int, layers: int, seed: int, tp: Any):
        out_std = 0.02 / math.sqrt(2 * layers)  # GPT-2's scaling of the residual projections
        self.ln1, self.ln2 = LayerNorm(d), LayerNorm(d)
        self.attn = par.ParallelSelfAttention(
            normal(seed, (d, 3 * d), 0.02), np.zeros(3 * d, np.float32),
            normal(seed + 1, (d, d), out_std), np.zeros(d, np.float32), heads, tp,
        )  # fmt: skip
        self.mlp = par.ParallelMLP(
            normal(seed + 2, (d, 4 * d), 0.02), np.zeros(4 * d, np.float32),
            normal(seed + 3, (4 * d, d), out_std), np.zeros(d, np.float32), tp, activation="gelu",
        )  # fmt: skip
        self.parts = [self.ln1, self.attn, self.ln2, self.mlp]
        self.params = [p for part in self.parts for p in part.params]
        self.grads = [g for part in self.parts for g in part.grads]

    def forward(self, x):
        h, c1 = self.ln1.forward(x)
        a, c2 = self.attn.forward_ctx(h)
        x1 = x + a
        h2, c3 = self.ln2.forward(x1)
        m, c4 = self.mlp.forward_ctx(h2)
        return x1 + m, (c1, c2, c3, c4)

    def backward(self, dy, ctx):
        c1, c2, c3, c4 = ctx
        dx1 = dy + self.ln2.backward(self.mlp.backward_ctx(dy, c4), c3)
        return dx1 + self.ln1.backward(self.attn.backward_ctx(dx1, c2), c1)

    def full_params(self) -> list:
        """The unsplit arrays, in self.params' order (collective over tp)."""
        return self.ln1.params + self.attn.full_params() + self.ln2.params + self.mlp.full_params()


class Head:
    """Final LayerNorm and the output projection to the vocabulary."""

    def __init__(self, vocab: int, d: int, seed: int):
        self.ln = LayerNorm(d)
        self.w = normal(seed, (d, vocab), 0.02)
        self.gw = np.zeros_like(self.w)
        self.params = self.ln.params + [self.w]
        self.grads = self.ln.grads + [self.gw]

    def forward(self, x):
        h, c = self.ln.forward(x)
        return h @ self.w, (h, c)

    def backward(self, dlogits, ctx):
        h, c = ctx
        self.gw += h.reshape(-1, h.shape[-1]).T @ dlogits.reshape(-1, dlogits.shape[-1])
        return self.ln.backward(dlogits @ self.w.T, c)


class Stage:
    """Blocks [first, last) of the model, with the embedding on stage 0 and the
    head on the last stage: a pipeline stage (forward(x) -> (y, ctx), backward)."""

    def __init__(self, cfg: dict, first: int, last: int, tp: Any):
        L = cfg["layers"]
        self.embed = Embedding(cfg["vocab"], cfg["seq"], cfg["d"], seed=1) if first == 0 else None
        self.blocks = [Block(cfg["d"], cfg["heads"], L, 100 + 10 * b, tp) for b in range(first, last)]
        self.head = Head(cfg["vocab"], cfg["d"], seed=2) if last == L else None
        self.parts = ([self.embed] if self.embed else []) + self.blocks + ([self.head] if self.head else [])
        self.params = [p for part in self.parts for p in part.params]
        self.grads = [g for part in self.parts for g in part.grads]

    def forward(self, x):
        ctxs = []
        for part in self.parts:
            x, c = part.forward(x)
            ctxs.append(c)
        return x, ctxs

    def backward(self, dy, ctxs):
        for part, c in zip(reversed(self.parts), reversed(ctxs)):
            dy = part.backward(dy, c)
        return dy

    def zero_grad(self) -> None:
        for g in self.grads:
            g[...] = 0


def cross_entropy(logits, targets):
    """Mean over the micro-batch's tokens, and its gradient."""
    shifted = logits - logits.max(-1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    n = targets.size
    flat = logp.reshape(-1, logp.shape[-1])
    loss = -float(flat[np.arange(n), targets.reshape(-1)].mean())
    d = np.exp(flat)
    d[np.arange(n), targets.reshape(-1)] -= 1
    return loss, (d / n).reshape(logits.shape).astype(np.float32)


def split_blocks(layers: int, pp: int) -> list[tuple[int, int]]:
    """Contiguous blocks per pipeline stage, as even as the counts allow."""
    cuts = [round(i * layers / pp) for i in range(pp + 1)]
    return list(zip(cuts[:-1], cuts[1:]))
