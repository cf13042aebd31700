"""Data-parallel training of an MLP on scikit-learn's digits data set with collex.

    pip install '.[examples]'
    mpirun -n 2 python -m mpi4py examples/digits_mlp.py --optimizer adam --plot digits.png

Every run trains the same model four ways, in one launch: on one process with the
whole global batch (the reference, computed on rank 0), and data-parallel over
the launched ranks with float32, fp16 and bf16 gradient exchange (compression
with error feedback). It reports how far each distributed loss curve strays from
the reference, whether the parameters were bitwise identical on every rank after
every step, and the final test accuracy of each.
"""

from __future__ import annotations

import argparse
import os
import sys

# One BLAS thread per rank: the ranks already occupy the cores, and BLAS threads
# fighting over them make the small matrix products a hundred times slower.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import collex as cx  # noqa: E402
from mlp import train  # noqa: E402
from mpi4py import MPI  # noqa: E402


def load_digits_split(seed: int = 0):
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int64)
    idx = np.random.default_rng(seed).permutation(len(y))
    cut = int(0.8 * len(y))
    return x[idx[:cut]], y[idx[:cut]], x[idx[cut:]], y[idx[cut:]]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--optimizer", choices=("sgd", "adam"), default="adam")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=120, help="global batch (divides by the rank count)")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--plot", help="write the loss curves to this PNG")
    ap.add_argument(
        "--xp", choices=("numpy", "cupy"), default="numpy", help="array module (cupy: train on the GPU)"
    )
    args = ap.parse_args(argv)

    cx.init()
    comm = cx.world()
    xp = np
    if args.xp == "cupy":
        import cupy as xp

        xp.cuda.Device(comm.local_rank % xp.cuda.runtime.getDeviceCount()).use()
    xtr, ytr, xte, yte = (xp.asarray(a) for a in load_digits_split())
    sizes = (64, args.hidden, args.hidden, 10)
    common = dict(sizes=sizes, optimizer=args.optimizer, steps=args.steps, global_batch=args.batch)

    curves, accuracy, identical = {}, {}, {}
    if comm.rank == 0:
        model, curves["1 process"] = train(xp, xtr, ytr, **common)
        accuracy["1 process"] = model.accuracy(xte, yte)
    for compression in (None, "fp16", "bf16"):
        label = f"{comm.size} ranks, {compression or 'float32'}"
        same = [True]

        def check(step, model, same=same):
            blob = b"".join(p.tobytes() for p in model.params)
            same[0] &= all(b == blob for b in MPI.COMM_WORLD.allgather(blob))

        model, curves[label] = train(
            xp, xtr, ytr, comm=comm, compression=compression, on_step=check, **common
        )
        accuracy[label] = model.accuracy(xte, yte)
        identical[label] = same[0]

    if comm.rank == 0:
        ref = np.array(curves["1 process"])
        print(
            f"digits MLP {sizes}, {args.optimizer}, {args.steps} steps of {args.batch} samples, "
            f"{comm.size} ranks, {args.xp}"
        )
        print(f"{'run':<22} {'final loss':>10} {'max |dloss|':>12} {'test acc':>9} {'identical params':>17}")
        for label, loss in curves.items():
            dev = float(np.max(np.abs(np.array(loss) - ref)))
            same = identical.get(label, "-")
            print(
                f"{label:<22} {loss[-1]:>10.5f} {dev:>12.2e} {100 * accuracy[label]:>8.2f}% {str(same):>17}"
            )
        if args.plot:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            fig, ax = plt.subplots(figsize=(7, 4))
            for label, loss in curves.items():
                ax.plot(loss, label=label, lw=1.0 if label != "1 process" else 2.5, alpha=0.85)
            ax.set_yscale("log")
            ax.set_xlabel("step")
            ax.set_ylabel("training loss (global batch mean)")
            ax.set_title(f"digits MLP, {args.optimizer}, data-parallel over {comm.size} ranks ({args.xp})")
            ax.legend()
            fig.tight_layout()
            fig.savefig(args.plot, dpi=110)
            print(f"wrote {args.plot}")
    cx.finalize()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
