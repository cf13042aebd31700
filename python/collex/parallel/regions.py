"""The communication regions of tensor parallelism: each a collective in forward
and its adjoint in backward. Layers compose these and nothing else.

* copy_to:           forward identity,             backward all-reduce
* reduce_from:       forward all-reduce,           backward identity
* gather_last:       forward all-gather (axis -1), backward this rank's slice
* gather_sequence:   forward all-gather (axis -2), backward reduce-scatter (axis -2)
* scatter_sequence:  forward reduce-scatter (axis -2), backward all-gather (axis -2)

Shards are contiguous blocks in rank order. Sequence-parallel activations hold
rank r's tokens [r*s/p, (r+1)*s/p) of each sequence.
"""

from __future__ import annotations

from typing import Any


def array_module(a: Any) -> Any:
    """NumPy for host arrays, CuPy for CUDA arrays."""
    if hasattr(a, "__cuda_array_interface__"):
        import cupy

        return cupy
    import numpy

    return numpy


def all_reduce(comm: Any, x: Any) -> Any:
    if comm.size == 1:
        return x
    x = array_module(x).ascontiguousarray(x)
    return comm.allreduce(x)


def gather_axis(comm: Any, x: Any, axis: int) -> Any:
    """Concatenates every rank's x along `axis` (negative), in rank order."""
    if comm.size == 1:
        return x
    xp = array_module(x)
    g = comm.allgather(xp.ascontiguousarray(x))  # (p, *x.shape)
    nd = x.ndim
    g = xp.moveaxis(g, 0, nd + axis)  # (..., p, n, ...) with p just before the axis
    shape = list(x.shape)
    shape[axis] *= comm.size
    return xp.ascontiguousarray(g).reshape(shape)


def reduce_scatter_axis(comm: Any, x: Any, axis: int) -> Any:
    """Sums x over the ranks and keeps this rank's block along `axis` (negative)."""
    if comm.size == 1:
        return x
    xp = array_module(x)
    p, nd = comm.size, x.ndim
    n = x.shape[axis]
    split = list(x.shape)
    split[axis : axis + 1 if axis != -1 else None] = [p, n // p]
    blocks = xp.moveaxis(x.reshape(split), nd + axis, 0)  # (p, ..., n/p, ...)
    out = comm.reduce_scatter(xp.ascontiguousarray(blocks))
    return out.reshape(out.shape[1:])


def block(x: Any, comm: Any, axis: int) -> Any:
    """A copy of this rank's contiguous block of x along `axis` (a copy even where a
    view would be contiguous: a layer's shard must not share the caller's memory)."""
    n = x.shape[axis] // comm.size
    index = [slice(None)] * x.ndim
    index[axis] = slice(comm.rank * n, (comm.rank + 1) * n)
    return x[tuple(index)].copy()


def sequence_shard(x: Any, comm: Any) -> Any:
    """This rank's tokens of x (axis -2), for a sequence-parallel block's input."""
    check_divides(x.shape[-2], comm, "sequence length", "sequence_shard")
    return block(x, comm, -2)


def check_divides(n: int, comm: Any, what: str, layer: str) -> int:
    if n % comm.size:
        raise ValueError(
            f"collex.parallel.{layer}: {what}={n} is not divisible by the group size {comm.size}"
        )
    return n // comm.size


def enter(comm: Any, x: Any, sequence_parallel: bool, layer: str) -> Any:
    """Forward of a block's entry: identity (copy_to) or all-gather of the sequence."""
    if not sequence_parallel:
        return x
    if x.ndim < 2:
        raise ValueError(
            f"collex.parallel.{layer}: sequence_parallel needs (..., seq, features), got {x.shape}"
        )
    return gather_axis(comm, x, -2)


def enter_backward(comm: Any, dx: Any, sequence_parallel: bool) -> Any:
    """Backward of the entry: all-reduce of dx, or reduce-scatter of the sequence."""
    return reduce_scatter_axis(comm, dx, -2) if sequence_parallel else all_reduce(comm, dx)


def leave(comm: Any, y: Any, sequence_parallel: bool) -> Any:
    """Forward of a block's exit: all-reduce of partial sums (reduce_from), or
    reduce-scatter of the sequence."""
    return reduce_scatter_axis(comm, y, -2) if sequence_parallel else all_reduce(comm, y)


def leave_backward(comm: Any, dy: Any, sequence_parallel: bool) -> Any:
    """Backward of the exit: identity, or all-gather of the sequence."""
    return gather_axis(comm, dy, -2) if sequence_parallel else dy
