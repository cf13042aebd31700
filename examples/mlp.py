"""A small multi-layer perceptron with its backward pass, SGD and Adam, and a
data-parallel training loop with collex, written against an array module `xp`
(NumPy or CuPy) so the same loop runs on both. Random numbers (initial weights,
sample order) come from NumPy either way, so both start and step alike.

Data parallelism: every rank holds the whole model; each step the global batch of
B samples is cut into equal slices, one per rank; each rank computes the gradient
of the mean loss over its slice, and averaging those gradients over the ranks gives
exactly the gradient of the mean loss over the global batch (up to float32
summation order). Every rank then takes the same optimizer step, so the replicas
stay identical. GradientReducer starts each bucket's all-reduce as soon as the
backward pass has finished its gradients.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def softmax_xent(xp: Any, logits: Any, y: Any) -> tuple[float, Any]:
    """Mean softmax cross-entropy over the batch and its gradient with respect to the logits."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))
    n = logits.shape[0]
    loss = -float(log_probs[xp.arange(n), y].mean())
    delta = xp.exp(log_probs)
    delta[xp.arange(n), y] -= 1
    delta /= n
    return loss, delta


class MLP:
    """Dense layers with ReLU between them and softmax cross-entropy at the end.

    Parameters and gradients are lists of arrays in registration order
    (W1, b1, W2, b2, ...); the gradients are preallocated once, so that a
    GradientReducer can be built over them, and views of one flat buffer when
    `flat` is given (so that contiguous buckets need no packing).
    """

    def __init__(self, xp: Any, sizes: Sequence[int], seed: int = 0, flat: Callable | None = None):
        self.xp = xp
        rng = np.random.default_rng(seed)
        self.params, shapes = [], []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            bound = math.sqrt(6.0 / fan_in)  # He-uniform, for ReLU
            self.params.append(xp.asarray(rng.uniform(-bound, bound, (fan_in, fan_out)).astype(np.float32)))
            self.params.append(xp.zeros(fan_out, xp.float32))
            shapes += [(fan_in, fan_out), (fan_out,)]
        if flat is None:
            self.grads = [xp.zeros(s, xp.float32) for s in shapes]
        else:
            buffer = flat(sum(math.prod(s) for s in shapes))
            self.grads, at = [], 0
            for s in shapes:
                self.grads.append(buffer[at : at + math.prod(s)].reshape(s))
                at += math.prod(s)

    def forward(self, x):
        xp = self.xp
        activations = [x]
        for k in range(0, len(self.params), 2):
            z = activations[-1] @ self.params[k] + self.params[k + 1]
            activations.append(xp.maximum(z, 0) if k + 2 < len(self.params) else z)
        return activations

    def loss_and_backward(self, x, y, ready: Callable[[int], None] | None = None) -> float:
        """Mean cross-entropy over the batch; fills self.grads, last layer first,
        calling ready(i) as soon as gradient i is final."""
        acts = self.forward(x)
        loss, delta = softmax_xent(self.xp, acts[-1], y)
        for k in range(len(self.params) - 2, -1, -2):
            self.grads[k + 1][...] = delta.sum(axis=0)
            if ready:
                ready(k + 1)
            self.grads[k][...] = acts[k // 2].T @ delta
            if ready:
                ready(k)
            if k > 0:
                delta = (delta @ self.params[k].T) * (acts[k // 2] > 0)
        return loss

    def accuracy(self, x, y) -> float:
        return float((self.forward(x)[-1].argmax(axis=1) == y).mean())


class SGD:
    """Plain SGD with momentum: an optimizer with the step(params, grads) protocol."""

    def __init__(self, lr: float = 0.1, momentum: float = 0.9):
        self.lr, self.momentum, self.velocity = lr, momentum, None

    def step(self, params, grads) -> None:
        if self.velocity is None:
            self.velocity = [g * 0 for g in grads]
        for p, g, v in zip(params, grads, self.velocity):
            v *= self.momentum
            v += g
            p -= self.lr * v


class Adam:
    def __init__(self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.lr, self.betas, self.eps, self.t, self.m, self.v = lr, betas, eps, 0, None, None

    def step(self, params, grads) -> None:
        b1, b2 = self.betas
        if self.m is None:
            self.m = [g * 0 for g in grads]
            self.v = [g * 0 for g in grads]
        self.t += 1
        c1, c2 = 1 - b1**self.t, 1 - b2**self.t
        for p, g, m, v in zip(params, grads, self.m, self.v):
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            p -= self.lr * (m / c1) / ((v / c2) ** 0.5 + self.eps)


def make_optimizer(name: str):
    return {"sgd": lambda: SGD(lr=0.1, momentum=0.9), "adam": lambda: Adam(lr=2e-3)}[name]()


def train(
    xp: Any,
    x,
    y,
    sizes: Sequence[int],
    optimizer: str,
    steps: int,
    global_batch: int,
    comm: Any = None,
    compression: str | None = None,
    seed: int = 0,
    flat: Callable | None = None,
    on_step: Callable[[int, MLP], None] | None = None,
) -> tuple[MLP, list[float]]:
    """Trains an MLP for `steps` steps of `global_batch` samples; returns the model
    and the loss of every step (the mean over the global batch). With `comm` (a
    collex Communicator) the batch is split over its ranks; without, one process
    does everything (the reference)."""
    import collex as cx

    rank, size = (comm.rank, comm.size) if comm is not None else (0, 1)
    if global_batch % size:
        raise ValueError(f"global batch {global_batch} does not divide over {size} ranks")
    local = global_batch // size
    model = MLP(xp, sizes, seed=seed, flat=flat)
    opt = make_optimizer(optimizer)
    if comm is not None:
        cx.broadcast_parameters(model.params, root=0, comm=comm)
        opt = cx.DistributedOptimizer(opt, model.grads, compression=compression, comm=comm)
    order = np.random.default_rng(seed + 1)  # the same sample order on every rank
    losses = []
    perm, at = order.permutation(x.shape[0]), 0
    for step in range(steps):
        if at + global_batch > x.shape[0]:
            perm, at = order.permutation(x.shape[0]), 0
        batch = perm[at : at + global_batch]
        at += global_batch
        mine = xp.asarray(batch[rank * local : (rank + 1) * local])
        ready = opt.ready if comm is not None else None
        loss = model.loss_and_backward(x[mine], y[mine], ready=ready)
        if comm is not None:
            opt.step(model.params)  # averages the gradients over the ranks first
        else:
            opt.step(model.params, model.grads)
        if comm is not None:
            loss = float(comm.allreduce(xp.array([loss], xp.float64), op="avg")[0])
        losses.append(loss)
        if on_step:
            on_step(step, model)
    return model, losses
