"""The libraries measured side by side. Each peer turns a row's arrays into a
callable doing one call of the collective, or says why it cannot (n/a)."""

from __future__ import annotations

import socket
from typing import Any, Callable

import numpy as np

Call = Callable[[], Any]


class NotSupported(Exception):
    """This peer cannot run this row (dtype, op or mode); shown as n/a."""


class Row:
    """One measurement's arrays and parameters, shared by every peer."""

    def __init__(self, coll: str, x: np.ndarray, out: np.ndarray | None, op: str, root: int, algo: str):
        self.coll, self.x, self.out, self.op, self.root, self.algo = coll, x, out, op, root, algo

    @property
    def inplace(self) -> bool:
        return self.out is None


class CollexPeer:
    name = "collex"

    def __init__(self, comm):
        self.comm = comm

    def make(self, r: Row) -> tuple[Call, Callable[[], np.ndarray]]:
        c, x, out = self.comm, r.x, r.out
        if r.coll == "allreduce":
            return (lambda: c.allreduce(x, op=r.op, out=out, algo=r.algo)), (
                lambda: x if out is None else out
            )
        if r.coll == "broadcast":
            return (lambda: c.broadcast(x, root=r.root, algo=r.algo)), (lambda: x)
        if r.coll == "reduce":
            return (lambda: c.reduce(x, op=r.op, root=r.root, out=out)), (lambda: x if out is None else out)
        if r.coll == "allgather":
            return (lambda: c.allgather(x, out=out)), (lambda: out)
        if r.coll == "reduce_scatter":
            return (lambda: c.reduce_scatter(x, op=r.op, out=out)), (lambda: out)
        raise NotSupported(r.coll)


class Mpi4pyPeer:
    """What a user would write without collex: mpi4py calling the MPI library's collectives."""

    name = "mpi4py"

    def __init__(self, mpi_comm):
        from mpi4py import MPI

        self.MPI = MPI
        self.comm = mpi_comm

    def _op(self, op: str):
        ops = {"sum": self.MPI.SUM, "prod": self.MPI.PROD, "min": self.MPI.MIN, "max": self.MPI.MAX}
        if op not in ops:
            raise NotSupported(f"MPI has no op {op!r}")
        return ops[op]

    def _buf(self, a: np.ndarray, reduces: bool):
        # MPI has no bfloat16; data that is only moved can travel as 16-bit words.
        if a.dtype.name == "bfloat16":
            if reduces:
                raise NotSupported("MPI has no bfloat16 reductions")
            return [a.view(np.int16), self.MPI.SHORT]
        return a

    def make(self, r: Row) -> tuple[Call, Callable[[], np.ndarray]]:
        MPI, c, x, out = self.MPI, self.comm, r.x, r.out
        if r.coll == "allreduce":
            op, xb = self._op(r.op), self._buf(x, True)
            if out is None:
                return (lambda: c.Allreduce(MPI.IN_PLACE, xb, op)), (lambda: x)
            ob = self._buf(out, True)
            return (lambda: c.Allreduce(xb, ob, op)), (lambda: out)
        if r.coll == "broadcast":
            xb = self._buf(x, False)
            return (lambda: c.Bcast(xb, root=r.root)), (lambda: x)
        if r.coll == "reduce":
            op, xb = self._op(r.op), self._buf(x, True)
            me = c.rank == r.root
            if out is None:
                send = MPI.IN_PLACE if me else xb
                return (lambda: c.Reduce(send, xb if me else None, op, root=r.root)), (lambda: x)
            ob = self._buf(out, True)
            return (lambda: c.Reduce(xb, ob if me else None, op, root=r.root)), (lambda: out)
        if r.coll == "allgather":
            xb, ob = self._buf(x, False), self._buf(out, False)
            return (lambda: c.Allgather(xb, ob)), (lambda: out)
        if r.coll == "reduce_scatter":
            op, xb, ob = self._op(r.op), self._buf(x, True), self._buf(out, True)
            return (lambda: c.Reduce_scatter_block(xb, ob, op)), (lambda: out)
        raise NotSupported(r.coll)


def gloo_unavailable() -> str | None:
    try:
        import torch.distributed  # noqa: F401
    except Exception as e:  # noqa: BLE001 - any import failure means: no gloo peer
        return f"torch is not installed ({type(e).__name__}); pip install torch==2.13.0 adds the gloo peer"
    return None


class GlooPeer:
    """torch.distributed with the gloo backend, on the same ranks (CPU tensors that
    share memory with the NumPy arrays)."""

    name = "gloo"

    def __init__(self, mpi_comm, local_only: bool):
        import torch
        import torch.distributed as dist

        self.torch, self.dist = torch, dist
        torch.set_num_threads(1)  # one rank per core, as the other peers
        if mpi_comm.rank == 0:
            with socket.socket() as s:
                s.bind(("", 0))
                port = s.getsockname()[1]
            addr = "127.0.0.1" if local_only else socket.gethostbyname(socket.gethostname())
        else:
            port, addr = None, None
        port, addr = mpi_comm.bcast((port, addr), root=0)
        dist.init_process_group(
            "gloo", init_method=f"tcp://{addr}:{port}", rank=mpi_comm.rank, world_size=mpi_comm.size
        )

    def close(self) -> None:
        self.dist.destroy_process_group()

    def _t(self, a: np.ndarray):
        if a.dtype.name == "bfloat16":
            return self.torch.from_numpy(a.view(np.int16)).view(self.torch.bfloat16)
        return self.torch.from_numpy(a)

    def _op(self, op: str):
        R = self.dist.ReduceOp
        ops = {"sum": R.SUM, "prod": R.PRODUCT, "min": R.MIN, "max": R.MAX}
        if op not in ops:
            raise NotSupported(f"gloo has no op {op!r}")
        return ops[op]

    def make(self, r: Row) -> tuple[Call, Callable[[], np.ndarray]]:
        dist, x, out = self.dist, r.x, r.out
        tx = self._t(x)
        if r.coll == "allreduce":
            op = self._op(r.op)
            if out is None:
                return (lambda: dist.all_reduce(tx, op=op)), (lambda: x)
            to = self._t(out)

            def copy_then_reduce():  # gloo reduces in place only: a user copies first
                to.copy_(tx)
                dist.all_reduce(to, op=op)

            return copy_then_reduce, (lambda: out)
        if r.coll == "broadcast":
            return (lambda: dist.broadcast(tx, src=r.root)), (lambda: x)
        if r.coll == "reduce":
            op = self._op(r.op)
            if out is None:
                return (lambda: dist.reduce(tx, dst=r.root, op=op)), (lambda: x)
            to = self._t(out)

            def copy_then_reduce_root():
                to.copy_(tx)
                dist.reduce(to, dst=r.root, op=op)

            return copy_then_reduce_root, (lambda: out)
        if r.coll == "allgather":
            to = self._t(out.reshape(-1))  # gloo wants the flat (size * count) output
            # Newer torch renames all_gather_into_tensor (same arguments).
            gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
            return (lambda: gather(to, tx)), (lambda: out)
        if r.coll == "reduce_scatter":
            op, to = self._op(r.op), self._t(out)
            scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
            return (lambda: scatter(to, tx, op=op)), (lambda: out)
        raise NotSupported(r.coll)
