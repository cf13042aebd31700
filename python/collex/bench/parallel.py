"""mpirun -n 2 python -m collex.bench.parallel: model parallelism's costs
(``--only p2p,tp,pipeline,zero`` picks parts).

1. Point-to-point latency: an 8 B ping-pong between ranks 0 and 1, collex's
   send/recv beside mpi4py's Send/Recv over the same MPI (one-way time, the
   median of the repeats; the two take turns within each repeat).
2. One ParallelMLP step (forward + backward) of d_model 1024 -> 4096 -> 1024 on
   16 x 128 tokens, float32: tensor-parallel over the launched ranks with one
   BLAS thread each, beside the same unsplit layer on one process with one BLAS
   thread and with as many BLAS threads as there are ranks (what a user would
   try first). The other ranks sleep while one process runs alone. Every
   tensor-parallel result (output, dx, full weight gradients) is checked
   against the unsplit layer's.

3. Pipelines of equal dense stages: every schedule at m = 4, 8, 16, time per
   step, measured bubble beside its formula, peak live activations (and the
   timelines as Gantt charts with --plot-dir); see bench/pipeline.py.
4. ShardedOptimizer stages 1 and 2 beside replicated Adam: state bytes per rank
   and step time.

Needs threadpoolctl (pip install '.[bench]') to set the BLAS threads and
matplotlib for the plots. Exits 1 when a result was wrong.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any, Callable

import numpy as np


def sleep_until_all_arrive(comm: Any) -> None:
    """A barrier that sleeps instead of spinning, so an idle rank leaves its core
    to the process being timed."""
    req = comm.Ibarrier()
    while not req.Test():
        time.sleep(0.002)


def ping_pong(cx: Any, comm: Any, repeats: int, iters: int) -> tuple[dict, bool]:
    rank = comm.rank
    x = np.zeros(1, np.float64)
    ok = True

    def collex_loop():
        for i in range(iters):
            if rank == 0:
                x[0] = i
                cx.send(x, 1)
                cx.recv(x, 1)
            elif rank == 1:
                cx.recv(x, 0)
                cx.send(x, 0)

    def mpi_loop():
        for i in range(iters):
            if rank == 0:
                x[0] = i
                comm.Send(x, 1)
                comm.Recv(x, 1)
            elif rank == 1:
                comm.Recv(x, 0)
                comm.Send(x, 0)

    times: dict[str, list[float]] = {"collex": [], "mpi4py": []}
    loops = {"collex": collex_loop, "mpi4py": mpi_loop}
    for _ in range(repeats + 1):  # the first round warms up
        for name, fn in loops.items():  # the two take turns within each repeat
            sleep_until_all_arrive(comm)
            if rank > 1:
                continue
            t = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t) / (2 * iters))
            if rank == 0:
                ok &= x[0] == iters - 1
    times = {k: v[1:] for k, v in times.items()}
    result = {k: statistics.median(v) if v else 0.0 for k, v in times.items()}
    result = {k: comm.bcast(v, root=0) for k, v in result.items()}
    return result, comm.allreduce(bool(ok), op=_land(comm))


def _land(comm: Any) -> Any:
    from mpi4py import MPI

    return MPI.LAND


def mlp_step(cx: Any, comm: Any, repeats: int, d: int, hidden: int, tokens: tuple) -> tuple[dict, bool]:
    from threadpoolctl import threadpool_limits

    from collex import parallel as par
    from collex.parallel.layers import init_weight

    rank, size = comm.rank, comm.size
    w1, b1 = init_weight(d, hidden, 1, np.float32, np)
    w2, b2 = init_weight(hidden, d, 2, np.float32, np)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((*tokens, d)).astype(np.float32)
    dy = rng.standard_normal((*tokens, d)).astype(np.float32)
    tp = par.ParallelMLP(w1, b1, w2, b2, cx.world())
    alone = par.ParallelMLP(w1, b1, w2, b2, cx.world().split(rank))  # the unsplit layer

    def step(layer: Any) -> tuple:
        layer.zero_grad()
        y = layer.forward(x)
        return y, layer.backward(dy)

    # Correctness first: the tensor-parallel step against the unsplit one.
    with threadpool_limits(limits=1, user_api="blas"):
        y, dx = step(tp)
        grads = tp.full_grads()
        ry, rdx = step(alone)
    ok = bool(np.allclose(y, ry, rtol=1e-3, atol=1e-4) and np.allclose(dx, rdx, rtol=1e-3, atol=1e-4))
    ok &= all(np.allclose(g, r, rtol=1e-3, atol=1e-3) for g, r in zip(grads, alone.grads))

    def timed_alone(threads: int) -> float | None:
        if rank != 0:
            sleep_until_all_arrive(comm)
            return None
        with threadpool_limits(limits=threads, user_api="blas"):
            step(alone)  # warm
            t = time.perf_counter()
            step(alone)
            took = time.perf_counter() - t
        sleep_until_all_arrive(comm)
        return took

    def timed_tp() -> float:
        with threadpool_limits(limits=1, user_api="blas"):
            step(tp)
            comm.Barrier()
            t = time.perf_counter()
            step(tp)
            took = time.perf_counter() - t
        return comm.allreduce(took, op=_max(comm))

    runs: dict[str, list[float]] = {"tp": [], "1 thread": [], f"{size} threads": []}
    variants: list[tuple[str, Callable[[], float | None]]] = [
        ("tp", timed_tp),
        ("1 thread", lambda: timed_alone(1)),
        (f"{size} threads", lambda: timed_alone(size)),
    ]
    for _ in range(repeats):  # the variants take turns within each repeat
        for name, fn in variants:
            t = fn()
            if t is not None:
                runs[name].append(t)
    medians = {k: statistics.median(v) if v else 0.0 for k, v in runs.items()}
    medians = {k: comm.bcast(v, root=0) for k, v in medians.items()}
    return medians, comm.allreduce(ok, op=_land(comm))


def _max(comm: Any) -> Any:
    from mpi4py import MPI

    return MPI.MAX


def tensor_parallel_part(cx: Any, comm: Any, args: Any, out: dict) -> bool:
    tokens = tuple(int(t) for t in args.tokens.split("x"))
    if args.hidden % comm.size:
        raise SystemExit(f"--hidden {args.hidden} does not divide by {comm.size} ranks")
    times, good = mlp_step(cx, comm, args.repeats, args.d_model, args.hidden, tokens)
    out["mlp_step_s"] = times
    out["mlp_results_ok"] = good
    if comm.rank == 0:
        p = comm.size
        one, many, tp = times["1 thread"], times[f"{p} threads"], times["tp"]
        print(
            f"\nParallelMLP step (forward + backward), d_model {args.d_model} -> {args.hidden} -> "
            f"{args.d_model}, {args.tokens} tokens, float32, median of {args.repeats}"
        )
        print(f"  {'variant':<40} {'ms/step':>9} {'speed-up vs 1 thread':>21}")
        print(f"  {'one process, 1 BLAS thread':<40} {one * 1e3:9.1f} {1.0:21.2f}")
        print(f"  {f'one process, {p} BLAS threads':<40} {many * 1e3:9.1f} {one / many:21.2f}")
        print(f"  {f'tensor-parallel, {p} ranks x 1 thread':<40} {tp * 1e3:9.1f} {one / tp:21.2f}")
        verdict = "right" if good else "WRONG"
        print(f"  tensor-parallel is {many / tp:.2f}x as fast as {p} threads; results {verdict}")
    return good


def pipeline_part(cx: Any, comm: Any, args: Any, out: dict) -> bool:
    from .pipeline import pipeline_rows

    if args.plot_dir and comm.rank == 0:
        os.makedirs(args.plot_dir, exist_ok=True)  # a directory to come, like --json's file
    rows, good = pipeline_rows(cx, comm, args, args.plot_dir)
    out["pipeline"] = rows
    out["pipeline_results_ok"] = good
    if comm.rank == 0:
        cores = os.cpu_count() or 1
        load = f"; {comm.size} ranks on {cores} cores: oversubscribed" if comm.size > cores else ""
        print(
            f"\nPipeline of {comm.size} ranks x {args.pipe_layers} tanh layers of {args.pipe_width}, "
            f"micro-batches of {args.pipe_micro} rows, float32, 1 BLAS thread{load}"
        )
        cols = f"{'ms/step':>9} {'bubble':>7} {'formula':>8} {'peak live':>10} {'MiB':>7}"
        print(f"  {'schedule':<16} {'m':>3} {cols}")
        for r in rows:
            name = r["schedule"] + (f" v={r['v']}" if r["v"] > 1 else "")
            print(
                f"  {name:<16} {r['m']:>3} {r['ms']:9.1f} {r['bubble']:7.1%} {r['formula']:8.1%} "
                f"{r['peak_live']:>10} {r['peak_bytes'] / (1 << 20):7.1f}"
            )
        print(f"  results {'right' if good else 'WRONG'} (every stage's gradients against the unsplit model)")
    return good


def zero_part(cx: Any, comm: Any, args: Any, out: dict) -> bool:
    from .pipeline import zero_rows

    rows, good = zero_rows(cx, comm, args)
    out["zero"] = rows
    out["zero_results_ok"] = good
    if comm.rank == 0:
        base = rows[0]
        print(
            f"\nAdam step over {args.zero_params / 1e6:.1f} M float32 parameters on {comm.size} ranks "
            "(gradient exchange + update), median"
        )
        print(f"  {'variant':<38} {'ms/step':>9} {'x replicated':>13} {'state MiB':>10} {'x replicated':>13}")
        for r in rows:
            print(
                f"  {r['variant']:<38} {r['ms']:9.1f} {r['ms'] / base['ms']:13.2f} "
                f"{r['state_bytes'] / (1 << 20):10.1f} {r['state_bytes'] / base['state_bytes']:13.3f}"
            )
        print(f"  parameters {'equal' if good else 'DIFFERENT'} to replicated Adam's")
    return good


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-R", "--repeats", type=int, default=5)
    ap.add_argument("--iters", type=int, default=20000, help="ping-pong round trips per repeat")
    ap.add_argument("--d-model", type=int, default=1024)
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--tokens", default="16x128", help="batch x sequence")
    ap.add_argument("--only", default="p2p,tp,pipeline,zero", help="parts to run, comma separated")
    ap.add_argument("--pipe-width", type=int, default=512, help="pipeline stages' layer width")
    ap.add_argument("--pipe-layers", type=int, default=4, help="dense layers per rank")
    ap.add_argument("--pipe-micro", type=int, default=64, help="rows per micro-batch")
    ap.add_argument("--pipe-m", default="4,8,16", help="micro-batch counts")
    ap.add_argument(
        "--zero-params", type=int, default=1 << 23, help="parameters of the ShardedOptimizer model"
    )
    ap.add_argument("--plot-dir", help="write the pipeline timelines (m=8) here")
    ap.add_argument("--json", help="write the numbers to this file")
    args = ap.parse_args(argv)
    args.pipe_m = [int(m) for m in args.pipe_m.split(",")]
    parts = set(args.only.split(","))

    from mpi4py import MPI

    import collex as cx

    comm = MPI.COMM_WORLD
    cx.init()
    out: dict[str, Any] = {"ranks": comm.size}
    ok = True
    if comm.size >= 2 and "p2p" in parts:
        lat, good = ping_pong(cx, comm, args.repeats, args.iters)
        ok &= good
        out["p2p_8B_us"] = {k: v * 1e6 for k, v in lat.items()}
        if comm.rank == 0:
            c, m = lat["collex"] * 1e6, lat["mpi4py"] * 1e6
            print(f"8 B ping-pong, one-way, ranks 0 and 1 ({args.repeats} x {args.iters} round trips)")
            print(f"  collex send/recv   {c:7.2f} us")
            print(f"  mpi4py Send/Recv   {m:7.2f} us   (collex takes {c / m:.2f}x MPICH's time)")
    if "tp" in parts:
        ok &= tensor_parallel_part(cx, comm, args, out)
    if "pipeline" in parts and comm.size >= 2:
        ok &= pipeline_part(cx, comm, args, out)
    if "zero" in parts:
        ok &= zero_part(cx, comm, args, out)
    if comm.rank == 0:
        if args.json:
            with open(args.json, "w") as f:
                json.dump(out, f, indent=1)
    cx.finalize()
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
