"""Tensor-parallel linear layers and the MLP block (Megatron-style).

Each layer keeps this rank's shard of its weights (contiguous blocks in rank
order: of n columns or rows, rank r keeps [r*n/p, (r+1)*n/p)), runs forward and
backward on the last axis of inputs of any leading shape, and accumulates its
weight gradients. ``forward(x)`` then ``backward(dy)``: the layer keeps what the
backward needs from the last forward. ``forward_ctx(x) -> (y, ctx)`` and
``backward_ctx(dy, ctx)`` hand that over instead, so that several forwards
may be in flight (a pipeline's micro-batches).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from . import regions as rg
from .agree import agree_checked


def init_weight(in_features: int, out_features: int, seed: int, dtype: Any, xp: Any) -> tuple:
    """The unsplit layer's initialisation for `seed`: weight ~ N(0, 1/in_features)
    of shape (in_features, out_features), bias zero. Every rank draws the same."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((in_features, out_features)) / math.sqrt(in_features)).astype(dtype)
    b = np.zeros(out_features, dtype)
    xp = np if xp is None else xp
    return xp.asarray(w), xp.asarray(b)


def accumulate(x: Any, dy: Any, dw: Any, db: Any) -> None:
    """dw += x^T dy and db += the sum of dy over every leading index."""
    x2 = x.reshape(-1, x.shape[-1])
    dy2 = dy.reshape(-1, dy.shape[-1])
    dw += x2.T @ dy2
    if db is not None:
        db += dy2.sum(axis=0)


class ShardedLayer:
    """What every tensor-parallel layer offers: ``params`` and ``grads`` (this
    rank's shards, in a fixed order, ready for a GradientReducer on the
    data-parallel group), ``zero_grad()``, and ``full_params()``/``full_grads()``
    (the unsplit arrays in the constructor's order; collective over the group)."""

    comm: Any
    params: list
    grads: list
    _gathers: list  # per param: how its shard becomes the whole ("cols", "rows", "whole", or a function)

    def forward_ctx(self, x: Any) -> tuple:
        raise NotImplementedError

    def backward_ctx(self, dy: Any, ctx: Any) -> Any:
        raise NotImplementedError

    def forward(self, x: Any) -> Any:
        y, self._ctx = self.forward_ctx(x)
        return y

    def backward(self, dy: Any) -> Any:
        """Returns dx and accumulates the weight gradients (of the last forward)."""
        if getattr(self, "_ctx", None) is None:
            raise RuntimeError(
                f"collex.parallel.{type(self).__name__}.backward: no forward to go back through"
            )
        ctx, self._ctx = self._ctx, None
        return self.backward_ctx(dy, ctx)

    def zero_grad(self) -> None:
        for g in self.grads:
            g[...] = 0

    def _full(self, arrays: list) -> list:
        out = []
        for a, how in zip(arrays, self._gathers):
            if how == "cols":
                out.append(rg.gather_axis(self.comm, a, -1))
            elif how == "rows":
                out.append(rg.gather_axis(self.comm, a, 0 - a.ndim))
            elif how == "whole":
                out.append(a.copy())
            else:
                out.append(how(a))
        return out

    def full_params(self) -> list:
        return self._full(self.params)

    def full_grads(self) -> list:
        return self._full(self.grads)


def _params(layer: ShardedLayer, w: Any, b: Any, w_how: str, b_how: str) -> None:
    xp = rg.array_module(w)
    layer.params = [w] if b is None else [w, b]
    layer.grads = [xp.zeros_like(p) for p in layer.params]
    layer._gathers = [w_how] if b is None else [w_how, b_how]


def _check_weight(weight: Any, bias: Any, layer: str) -> None:
    if weight.ndim != 2:
        raise ValueError(
            f"collex.parallel.{layer}: weight: expected (in_features, out_features), got {weight.shape}"
        )
    if bias is not None and tuple(bias.shape) != (weight.shape[1],):
        raise ValueError(
            f"collex.parallel.{layer}: bias: expected shape ({weight.shape[1]},), got {tuple(bias.shape)}"
        )


def agree_layer(comm: Any, name: str, check: Callable[[], Any], settings: dict) -> None:
    """Layer constructors are collective: each rank checks its own arguments
    (`check` raises what is wrong), then the ranks compare their layers'
    `settings` (shapes, dtype, flags). A rank that holds another layer, or an
    invalid one, makes every rank raise instead of the group computing with
    shards that do not belong together (a silently wrong product)."""
    agree_checked(comm, f"collex.parallel.{name}", check, settings)


def _linear_settings(weight: Any, bias: Any, **flags: bool) -> dict:
    shape = tuple(weight.shape) if weight.ndim == 2 else (0, 0)
    return {"in_features": shape[0], "out_features": shape[1], "bias": bias is not None, **flags,
            "dtype": weight.dtype}  # fmt: skip


class ColumnParallelLinear(ShardedLayer):
    """y = x W + b with W's columns split: rank r keeps out_features/p of them.

    ``weight``: the full (in_features, out_features) array, the same on every
    rank. Forward needs no communication and gives this rank's slice of the
    output (the whole output with ``gather_output=True``); backward all-reduces
    dx over the group (Megatron's copy-to region). With ``sequence_parallel``,
    x holds this rank's tokens (axis -2) and is all-gathered first; backward
    then reduce-scatters dx. Collective (as every layer's constructor): the
    ranks compare the weight's shape, the bias, the dtype and the flags, and
    all raise ValueError where they differ.
    """

    def __init__(
        self, weight: Any, bias: Any, comm: Any, gather_output: bool = False, sequence_parallel: bool = False
    ):
        name = "ColumnParallelLinear"

        def check() -> None:
            _check_weight(weight, bias, name)
            rg.check_divides(weight.shape[1], comm, "out_features", name)

        flags = {"gather_output": bool(gather_output), "sequence_parallel": bool(sequence_parallel)}
        agree_layer(comm, name, check, _linear_settings(weight, bias, **flags))
        self.comm, self.gather_output, self.sequence_parallel = comm, gather_output, sequence_parallel
        w = rg.block(weight, comm, -1)
        b = None if bias is None else rg.block(bias, comm, -1)
        _params(self, w, b, "cols", "cols")

    @classmethod
    def init(
        cls, in_features: int, out_features: int, comm: Any, seed: int = 0, dtype: Any = np.float32,
        xp: Any = None, **kw: Any,
    ) -> ColumnParallelLinear:  # fmt: skip
        """Every rank draws the unsplit layer's initialisation (init_weight) and keeps its share."""
        w, b = init_weight(in_features, out_features, seed, dtype, xp)
        return cls(w, b, comm, **kw)

    def forward_ctx(self, x: Any) -> tuple:
        x = rg.enter(self.comm, x, self.sequence_parallel, "ColumnParallelLinear")
        y = x @ self.params[0]
        if len(self.params) > 1:
            y += self.params[1]
        return (rg.gather_axis(self.comm, y, -1) if self.gather_output else y), x

    def backward_ctx(self, dy: Any, x: Any) -> Any:
        if self.gather_output:
            dy = rg.block(dy, self.comm, -1)
        accumulate(x, dy, self.grads[0], self.grads[1] if len(self.grads) > 1 else None)
        dx = dy @ self.params[0].T
        return rg.enter_backward(self.comm, dx, self.sequence_parallel)


class RowParallelLinear(ShardedLayer):
    """y = x W + b with W's rows split: rank r keeps in_features/p of them.

    With ``input_is_parallel`` (default) x is this rank's slice of the features
    (what a ColumnParallelLinear gives); otherwise the whole x, sliced here.
    Forward all-reduces the partial products and adds the bias once (every rank
    holds it whole); with ``sequence_parallel`` the partial products are
    reduce-scattered along the sequence instead, and backward all-gathers dy.
    Collective, as ColumnParallelLinear's constructor.
    """

    def __init__(
        self,
        weight: Any,
        bias: Any,
        comm: Any,
        input_is_parallel: bool = True,
        sequence_parallel: bool = False,
    ):
        name = "RowParallelLinear"

        def check() -> None:
            _check_weight(weight, bias, name)
            rg.check_divides(weight.shape[0], comm, "in_features", name)

        flags = {"input_is_parallel": bool(input_is_parallel), "sequence_parallel": bool(sequence_parallel)}
        agree_layer(comm, name, check, _linear_settings(weight, bias, **flags))
        self.comm, self.input_is_parallel, self.sequence_parallel = comm, input_is_parallel, sequence_parallel
        w = rg.block(weight, comm, 0)
        b = None if bias is None else rg.array_module(bias).array(bias, copy=True)
        _params(self, w, b, "rows", "whole")

    @classmethod
    def init(
        cls, in_features: int, out_features: int, comm: Any, seed: int = 0, dtype: Any = np.float32,
        xp: Any = None, **kw: Any,
    ) -> RowParallelLinear:  # fmt: skip
        """Every rank draws the unsplit layer's initialisation (init_weight) and keeps its share."""
        w, b = init_weight(in_features, out_features, seed, dtype, xp)
        return cls(w, b, comm, **kw)

    def forward_ctx(self, x: Any) -> tuple:
        if not self.input_is_parallel:
            rg.check_divides(x.shape[-1], self.comm, "x.shape[-1]", "RowParallelLinear")
            x = rg.block(x, self.comm, -1)
        y = rg.leave(self.comm, x @ self.params[0], self.sequence_parallel)
        if len(self.params) > 1:
            y += self.params[1]
        return y, x

    def backward_ctx(self, dy: Any, x: Any) -> Any:
        dy = rg.leave_backward(self.comm, dy, self.sequence_parallel)  # every token's gradient
        accumulate(x, dy, self.grads[0], self.grads[1] if len(self.grads) > 1 else None)
        dx = dy @ self.params[0].T
        return dx if self.input_is_parallel else rg.gather_axis(self.comm, dx, -1)


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def gelu(h: Any) -> Any:
    """GELU, the tanh approximation (as in GPT-2)."""
    xp = rg.array_module(h)
    return 0.5 * h * (1.0 + xp.tanh(_SQRT_2_OVER_PI * (h + 0.044715 * h**3)))


def gelu_grad(h: Any) -> Any:
    xp = rg.array_module(h)
    t = xp.tanh(_SQRT_2_OVER_PI * (h + 0.044715 * h**3))
    return 0.5 * (1.0 + t) + 0.5 * h * (1.0 - t * t) * _SQRT_2_OVER_PI * (1.0 + 3 * 0.044715 * h * h)


ACTIVATIONS = {
    "gelu": (gelu, gelu_grad),
    "relu": (lambda h: h * (h > 0), lambda h: (h > 0).astype(h.dtype)),
}


class ParallelMLP(ShardedLayer):
    """act(x W1 + b1) W2 + b2: W1 column-parallel, W2 row-parallel, so the hidden
    activations never leave their rank: one all-reduce in forward, one in
    backward (with ``sequence_parallel``: all-gather at entry and reduce-scatter
    at exit, and their adjoints in backward). ``activation``: "gelu" (tanh
    approximation) or "relu". ``params``/``grads``: [w1, b1, w2, b2] shards."""

    def __init__(
        self, w1: Any, b1: Any, w2: Any, b2: Any, comm: Any, activation: str = "gelu",
        sequence_parallel: bool = False,
    ):  # fmt: skip
        def check() -> None:
            if activation not in ACTIVATIONS:
                raise ValueError(
                    f"collex.parallel.ParallelMLP: activation={activation!r}: "
                    f"expected one of {sorted(ACTIVATIONS)}"
                )
            if w1.shape[1] != w2.shape[0]:
                raise ValueError(f"collex.parallel.ParallelMLP: w1 {w1.shape} and w2 {w2.shape} do not chain")

        # The weights' shapes are compared by fc1 and fc2.
        names = sorted(ACTIVATIONS)
        settings = {
            "activation": names.index(activation) if activation in names else -1,
            "sequence_parallel": bool(sequence_parallel),
        }
        agree_layer(comm, "ParallelMLP", check, settings)
        self.comm, self.sequence_parallel = comm, sequence_parallel
        self.fc1 = ColumnParallelLinear(w1, b1, comm, sequence_parallel=sequence_parallel)
        self.fc2 = RowParallelLinear(w2, b2, comm, sequence_parallel=sequence_parallel)
        self._act, self._act_grad = ACTIVATIONS[activation]
        self.params = self.fc1.params + self.fc2.params
        self.grads = self.fc1.grads + self.fc2.grads

    @classmethod
    def init(
        cls, d_model: int, d_hidden: int, comm: Any, seed: int = 0, dtype: Any = np.float32, xp: Any = None,
        **kw: Any,
    ) -> ParallelMLP:  # fmt: skip
        """The unsplit block's initialisation: w1 from `seed`, w2 from `seed + 1` (init_weight)."""
        w1, b1 = init_weight(d_model, d_hidden, seed, dtype, xp)
        w2, b2 = init_weight(d_hidden, d_model, seed + 1, dtype, xp)
        return cls(w1, b1, w2, b2, comm, **kw)

    def forward_ctx(self, x: Any) -> tuple:
        h, c1 = self.fc1.forward_ctx(x)
        y, c2 = self.fc2.forward_ctx(self._act(h))
        return y, (h, c1, c2)

    def backward_ctx(self, dy: Any, ctx: Any) -> Any:
        h, c1, c2 = ctx
        da = self.fc2.backward_ctx(dy, c2)
        return self.fc1.backward_ctx(da * self._act_grad(h), c1)

    def full_params(self) -> list:
        return self.fc1.full_params() + self.fc2.full_params()

    def full_grads(self) -> list:
        return self.fc1.full_grads() + self.fc2.full_grads()
