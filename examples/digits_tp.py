"""Tensor-parallel (and data x tensor parallel) training of the digits MLP.

    pip install '.[examples]'
    mpirun -n 2 python -m mpi4py examples/digits_tp.py            # tensor-parallel on 2 ranks
    mpirun -n 4 python -m mpi4py examples/digits_tp.py --dp 2     # 2 replicas x 2-way tensor parallel

The model is the one of digits_mlp.py (64-128-128-10, ReLU, softmax
cross-entropy) with its two hidden layers as one ``ParallelMLP``: the first
weight split by columns, the second by rows, so each rank holds half of the
hidden units and the ranks exchange one all-reduce forward and one backward. The
output layer is replicated. With ``--dp N`` the ranks form a grid of N
data-parallel replicas of a tensor-parallel group each; each replica takes 1/N
of every global batch and a GradientReducer on ``grid.comm("dp")`` averages the
shards' gradients. Every rank also trains the unsplit model on one process on
the whole global batch, and the script reports (and checks, with --check) how
far the distributed loss curve strays from it, step by step.
"""

from __future__ import annotations

import argparse
import os
import sys

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import collex as cx  # noqa: E402
from collex import parallel as par  # noqa: E402
from digits_mlp import load_digits_split  # noqa: E402
from mlp import MLP, SGD, Adam, softmax_xent  # noqa: E402


class TensorParallelDigits:
    """The digits MLP with its hidden layers as a ParallelMLP over `tp`, built
    from the unsplit model's initial parameters (the same on every rank)."""

    def __init__(self, xp, reference: MLP, tp):
        w1, b1, w2, b2, w3, b3 = reference.params
        self.xp = xp
        self.hidden = par.ParallelMLP(w1, b1, w2, b2, tp, activation="relu")
        self.w3, self.b3 = w3.copy(), b3.copy()
        self.params = self.hidden.params + [self.w3, self.b3]
        self.grads = self.hidden.grads + [xp.zeros_like(self.w3), xp.zeros_like(self.b3)]

    def loss_and_backward(self, x, y) -> float:
        xp = self.xp
        z2 = self.hidden.forward(x)  # the pre-activation of layer 2, whole on every tp rank
        a2 = xp.maximum(z2, 0)
        loss, delta = softmax_xent(xp, a2 @ self.w3 + self.b3, y)
        self.grads[-1][...] = delta.sum(axis=0)
        self.grads[-2][...] = a2.T @ delta
        self.hidden.zero_grad()
        self.hidden.backward((delta @ self.w3.T) * (z2 > 0))
        return loss

    def accuracy(self, x, y) -> float:
        xp = self.xp
        z2 = self.hidden.forward(x)
        return float(((xp.maximum(z2, 0) @ self.w3 + self.b3).argmax(axis=1) == y).mean())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dp", type=int, default=1, help="data-parallel replicas (the rest is tensor-parallel)")
    ap.add_argument("--optimizer", choices=("sgd", "adam"), default="adam")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=120, help="global batch (divides by --dp)")
    ap.add_argument("--check", type=float, help="exit 1 if any step's loss strays more than this")
    ap.add_argument("--xp", choices=("numpy", "cupy"), default="numpy")
    args = ap.parse_args(argv)

    cx.init()
    xp = np
    if args.xp == "cupy":
        import cupy as xp

        xp.cuda.Device(cx.local_rank() % xp.cuda.runtime.getDeviceCount()).use()
    grid = par.Grid(dp=args.dp, tp=cx.size() // args.dp)
    tp, dp = grid.comm("tp"), grid.comm("dp")
    xtr, ytr, xte, yte = (xp.asarray(a) for a in load_digits_split())

    make_opt = (lambda: Adam(lr=1e-3)) if args.optimizer == "adam" else (lambda: SGD(lr=0.1))
    reference = MLP(xp, (64, 128, 128, 10), seed=0)
    model = TensorParallelDigits(xp, reference, tp)
    reducer = cx.GradientReducer(model.grads, comm=dp) if dp.size > 1 else None
    ref_opt, opt = make_opt(), make_opt()

    rng = np.random.default_rng(1)
    share = args.batch // dp.size
    worst = 0.0
    ref_losses, losses = [], []
    for _ in range(args.steps):
        idx = xp.asarray(rng.choice(len(ytr), args.batch, replace=False))
        ref_losses.append(reference.loss_and_backward(xtr[idx], ytr[idx]))
        ref_opt.step(reference.params, reference.grads)
        mine = idx[grid.rank("dp") * share : (grid.rank("dp") + 1) * share]
        loss = model.loss_and_backward(xtr[mine], ytr[mine])
        if reducer is not None:
            reducer.reduce()
            loss = float(dp.allreduce(np.array([loss]), op="avg")[0])
        opt.step(model.params, model.grads)
        losses.append(loss)
        worst = max(worst, abs(loss - ref_losses[-1]))

    full = model.hidden.full_params()
    blob = b"".join(np.asarray(a).tobytes() for a in full + [model.w3, model.b3])
    from mpi4py import MPI

    identical = all(b == blob for b in MPI.COMM_WORLD.allgather(blob))
    accuracy = model.accuracy(xte, yte)  # collective over the tp group
    if cx.rank() == 0:
        print(
            f"digits MLP (64, 128, 128, 10) as a ParallelMLP, {args.optimizer}, {args.steps} steps of "
            f"{args.batch}; grid dp={dp.size} x tp={tp.size}"
        )
        print(f"{'run':<26} {'final loss':>10} {'max |dloss|':>12} {'test acc':>9}")
        ref_acc = 100 * reference.accuracy(xte, yte)
        print(f"{'1 process, unsplit':<26} {ref_losses[-1]:>10.5f} {0:>12.2e} {ref_acc:>8.2f}%")
        label = f"dp {dp.size} x tp {tp.size}"
        print(f"{label:<26} {losses[-1]:>10.5f} {worst:>12.2e} {100 * accuracy:>8.2f}%")
        print(f"parameters identical on every rank: {identical}")
    ok = identical and (args.check is None or worst <= args.check)
    cx.finalize()
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
