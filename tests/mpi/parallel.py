"""Tensor parallelism under mpirun: every layer against an unsplit NumPy
reference written here (forward, dx and the full weight gradients), attention's
backward against finite differences, sequence-parallel against not, bitwise
agreement across ranks and runs, and process grids. The layers' group is the
whole world (1 to 4 ranks; the sizes below divide by each)."""

from __future__ import annotations

import math
import sys

import collex as cx
import numpy as np
from _harness import Cases, identical_on_all_ranks, raises
from collex import parallel as par

cx.init()
rank, size = cx.rank(), cx.size()
world = cx.world()
cases = Cases("parallel")
TOL = {np.float32: dict(rtol=2e-4, atol=2e-5), np.float64: dict(rtol=1e-10, atol=1e-12)}


def rand(shape, dtype, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def close(a, b, dtype, what):
    assert np.allclose(a, b, **TOL[dtype]), f"{what}: max diff {np.max(np.abs(a - b))}"


def ref_linear_grads(x, w, dy):
    x2, dy2 = x.reshape(-1, x.shape[-1]), dy.reshape(-1, dy.shape[-1])
    return dy @ w.T, x2.T @ dy2, dy2.sum(0)


def gelu(h):
    c = math.sqrt(2 / math.pi)
    return 0.5 * h * (1 + np.tanh(c * (h + 0.044715 * h**3)))


def gelu_grad(h):
    c = math.sqrt(2 / math.pi)
    t = np.tanh(c * (h + 0.044715 * h**3))
    return 0.5 * (1 + t) + 0.5 * h * (1 - t**2) * c * (1 + 3 * 0.044715 * h**2)


ACT = {"gelu": (gelu, gelu_grad), "relu": (lambda h: np.maximum(h, 0), lambda h: (h > 0).astype(h.dtype))}


def column_linear():
    for dtype in (np.float32, np.float64):
        for gather in (False, True):
            w, b = rand((12, 24), dtype, 1), rand(24, dtype, 2)
            x, dy = rand((2, 3, 12), dtype, 3), rand((2, 3, 24), dtype, 4)
            layer = par.ColumnParallelLinear(w, b, world, gather_output=gather)
            y = layer.forward(x)
            cols = slice(rank * 24 // size, (rank + 1) * 24 // size)
            want = x @ w + b
            close(y, want if gather else want[..., cols], dtype, "column forward")
            dx = layer.backward(dy if gather else np.ascontiguousarray(dy[..., cols]))
            rdx, rdw, rdb = ref_linear_grads(x, w, dy)
            close(dx, rdx, dtype, "column dx")
            fw, fb = layer.full_grads()
            close(fw, rdw, dtype, "column dW")
            close(fb, rdb, dtype, "column db")
            pw, pb = layer.full_params()
            assert np.array_equal(pw, w) and np.array_equal(pb, b)
            assert identical_on_all_ranks(dx) and identical_on_all_ranks(fw)
            layer.zero_grad()
            assert all((g == 0).all() for g in layer.grads)


def row_linear():
    for dtype in (np.float32, np.float64):
        for parallel_in in (True, False):
            w, b = rand((24, 12), dtype, 5), rand(12, dtype, 6)
            x, dy = rand((4, 24), dtype, 7), rand((4, 12), dtype, 8)
            layer = par.RowParallelLinear(w, b, world, input_is_parallel=parallel_in)
            rows = slice(rank * 24 // size, (rank + 1) * 24 // size)
            y = layer.forward(np.ascontiguousarray(x[:, rows]) if parallel_in else x)
            close(y, x @ w + b, dtype, "row forward")
            assert identical_on_all_ranks(y)
            dx = layer.backward(dy)
            rdx, rdw, rdb = ref_linear_grads(x, w, dy)
            close(dx, rdx[:, rows] if parallel_in else rdx, dtype, "row dx")
            fw, fb = layer.full_grads()
            close(fw, rdw, dtype, "row dW")
            close(fb, rdb, dtype, "row db")


def mlp_reference(x, w1, b1, w2, b2, dy, act):
    f, fg = ACT[act]
    h = x @ w1 + b1
    a = f(h)
    y = a @ w2 + b2
    da = dy @ w2.T
    dh = da * fg(h)
    dx, dw1, db1 = ref_linear_grads(x, w1, dh)
    _, dw2, db2 = ref_linear_grads(a, w2, dy)
    return y, dx, [dw1, db1, dw2, db2]


def mlp_weights(dtype, d=12, hidden=48):
    return [rand((d, hidden), dtype, 11) * 0.3, rand(hidden, dtype, 12), rand((hidden, d), dtype, 13) * 0.2,
            rand(d, dtype, 14)]  # fmt: skip


def mlp():
    for dtype in (np.float32, np.float64):
        for act in ("gelu", "relu"):
            ws = mlp_weights(dtype)
            x, dy = rand((2, 4, 12), dtype, 15), rand((2, 4, 12), dtype, 16)
            layer = par.ParallelMLP(*ws, world, activation=act)
            y = layer.forward(x)
            dx = layer.backward(dy)
            ry, rdx, rgrads = mlp_reference(x, *ws, dy, act)
            close(y, ry, dtype, f"mlp {act} forward")
            close(dx, rdx, dtype, f"mlp {act} dx")
            for g, r, name in zip(layer.full_grads(), rgrads, ("dW1", "db1", "dW2", "db2")):
                close(g, r, dtype, f"mlp {act} {name}")
            assert identical_on_all_ranks(y) and identical_on_all_ranks(dx)


def attention_reference(x, w_qkv, b_qkv, w_out, b_out, n_heads, causal=True):
    bsz, s, d = x.shape
    dh = d // n_heads
    qkv = x @ w_qkv + b_qkv
    out = np.zeros((bsz, s, d), x.dtype)
    for h in range(n_heads):
        q = qkv[..., h * dh : (h + 1) * dh]
        k = qkv[..., d + h * dh : d + (h + 1) * dh]
        v = qkv[..., 2 * d + h * dh : 2 * d + (h + 1) * dh]
        sc = q @ k.transpose(0, 2, 1) / math.sqrt(dh)
        if causal:
            sc = np.where(np.triu(np.ones((s, s), bool), 1), -np.inf, sc)
        p = np.exp(sc - sc.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        out[..., h * dh : (h + 1) * dh] = p @ v
    return out @ w_out + b_out


def attention_weights(dtype, d=24):
    return [rand((d, 3 * d), dtype, 21) * 0.3, rand(3 * d, dtype, 22) * 0.1, rand((d, d), dtype, 23) * 0.2,
            rand(d, dtype, 24)]  # fmt: skip


def attention():
    n_heads = 12
    for dtype in (np.float32, np.float64):
        for causal in (True, False):
            ws = attention_weights(dtype)
            x = rand((2, 6, 24), dtype, 25)
            layer = par.ParallelSelfAttention(*ws, n_heads, world, causal=causal)
            y = layer.forward(x)
            close(y, attention_reference(x, *ws, n_heads, causal), dtype, "attention forward")
            assert identical_on_all_ranks(y)
            full = layer.full_params()
            assert all(np.array_equal(a, b) for a, b in zip(full, ws)), "attention full_params"


def attention_backward_by_differences():
    """Directional derivatives of L = sum(y * dy) in float64 against central differences."""
    n_heads, dtype, eps = 12, np.float64, 1e-6
    ws = attention_weights(dtype)
    x, dy = rand((2, 5, 24), dtype, 31), rand((2, 5, 24), dtype, 32)
    layer = par.ParallelSelfAttention(*ws, n_heads, world)
    layer.forward(x)
    dx = layer.backward(dy)
    grads = layer.full_grads()

    def loss(xx, wss):
        return float((attention_reference(xx, *wss, n_heads) * dy).sum())

    v = rand(x.shape, dtype, 33)
    numeric = (loss(x + eps * v, ws) - loss(x - eps * v, ws)) / (2 * eps)
    assert abs(numeric - (dx * v).sum()) < 1e-6 * max(1, abs(numeric)), ("dx", numeric, (dx * v).sum())
    for i in range(4):
        v = rand(ws[i].shape, dtype, 40 + i)
        up = [w + eps * v if j == i else w for j, w in enumerate(ws)]
        down = [w - eps * v if j == i else w for j, w in enumerate(ws)]
        numeric = (loss(x, up) - loss(x, down)) / (2 * eps)
        got = float((grads[i] * v).sum())
        assert abs(numeric - got) < 1e-6 * max(1, abs(numeric)), (i, numeric, got)


def sequence_parallel():
    """The sequence-parallel block on this rank's tokens equals the plain block:
    its output and dx are this rank's tokens of the plain block's, its full
    gradients the same (the output bias's over all tokens on every rank)."""
    for dtype in (np.float32, np.float64):
        blocks = [
            (lambda sp, d=dtype: par.ParallelMLP(*mlp_weights(d), world, sequence_parallel=sp), 12),
            (lambda sp, d=dtype: par.ParallelSelfAttention(
                *attention_weights(d), 12, world, sequence_parallel=sp), 24),
        ]  # fmt: skip
        for make, d in blocks:
            x, dy = rand((2, 12, d), dtype, 51), rand((2, 12, d), dtype, 52)
            plain, sp = make(False), make(True)
            y, dx = plain.forward(x), None
            dx = plain.backward(dy)
            ys = sp.forward(par.sequence_shard(x, world))
            dxs = sp.backward(par.sequence_shard(dy, world))
            close(ys, par.sequence_shard(y, world), dtype, "sp forward")
            close(dxs, par.sequence_shard(dx, world), dtype, "sp dx")
            for a, b in zip(sp.full_grads(), plain.full_grads()):
                close(a, b, dtype, "sp grads")
            bias_grad = sp.grads[-1]
            assert identical_on_all_ranks(bias_grad), "the output bias's gradient differs across ranks"


def contexts_in_flight():
    """Two forwards before their backwards (forward_ctx/backward_ctx), as a pipeline
    runs micro-batches: each dx is its own input's, the gradients their sum."""
    ws = mlp_weights(np.float64)
    x1, x2 = rand((2, 4, 12), np.float64, 71), rand((3, 4, 12), np.float64, 72)
    d1, d2 = rand((2, 4, 12), np.float64, 73), rand((3, 4, 12), np.float64, 74)
    layer = par.ParallelMLP(*ws, world)
    (y1, c1), (y2, c2) = layer.forward_ctx(x1), layer.forward_ctx(x2)
    dx2, dx1 = layer.backward_ctx(d2, c2), layer.backward_ctx(d1, c1)
    r1, rd1, g1 = mlp_reference(x1, *ws, d1, "gelu")
    r2, rd2, g2 = mlp_reference(x2, *ws, d2, "gelu")
    for a, b in ((y1, r1), (y2, r2), (dx1, rd1), (dx2, rd2)):
        close(a, b, np.float64, "mlp in flight")
    for g, a, b in zip(layer.full_grads(), g1, g2):
        close(g, a + b, np.float64, "mlp in flight grads")
    attn = par.ParallelSelfAttention(*attention_weights(np.float64), 12, world)
    a1, a2 = rand((2, 5, 24), np.float64, 75), rand((2, 5, 24), np.float64, 76)
    (z1, k1), (z2, k2) = attn.forward_ctx(a1), attn.forward_ctx(a2)
    close(z1, attention_reference(a1, *attention_weights(np.float64), 12), np.float64, "attention in flight")
    attn.backward_ctx(z2, k2)
    e1 = attn.backward_ctx(z1, k1)
    solo = par.ParallelSelfAttention(*attention_weights(np.float64), 12, world)
    solo.forward(a1)
    close(e1, solo.backward(z1), np.float64, "attention in flight dx")
    try:
        solo.backward(z1)
    except RuntimeError as e:
        assert "no forward" in str(e)
    else:
        raise AssertionError("a second backward without a forward was accepted")


def determinism():
    """Same seed and inputs: the same bits on every rank and on a second run."""

    def run():
        layer = par.ParallelMLP.init(12, 48, world, seed=7)
        attn = par.ParallelSelfAttention(*attention_weights(np.float32), 12, world)
        x = rand((3, 4, 12), np.float32, 61)
        outs = []
        for _ in range(3):  # a few steps of plain SGD
            y = layer.forward(x)
            layer.backward(y * 0.1)
            for p, g in zip(layer.params, layer.grads):
                p -= 0.05 * g
            layer.zero_grad()
            outs.append(y)
        z = attn.forward(rand((2, 4, 24), np.float32, 62))
        attn.backward(z)
        return outs + layer.full_params() + [z] + attn.full_grads()

    first, second = run(), run()
    for a, b in zip(first, second):
        assert np.array_equal(a, b), "a second run gave other bits"
        assert identical_on_all_ranks(a), "ranks disagree"


def init_matches_unsplit():
    col = par.ColumnParallelLinear.init(12, 24, world, seed=3, dtype=np.float64)
    row = par.RowParallelLinear.init(12, 24, world, seed=3, dtype=np.float64)
    alone = par.ColumnParallelLinear.init(12, 24, world.split(rank), seed=3, dtype=np.float64)
    for a, b in zip(col.full_params(), alone.params):
        assert np.array_equal(a, b)
    for a, b in zip(row.full_params(), col.full_params()):
        assert np.array_equal(a, b)


def bad_sizes():
    if size > 1:
        p = size
        raises(
            lambda: par.ColumnParallelLinear(np.ones((4, 4 * p + 1)), None, world),
            ValueError,
            "out_features",
            str(4 * p + 1),
        )
        raises(lambda: par.RowParallelLinear(np.ones((4 * p + 1, 4)), None, world), ValueError, "in_features")
        w = attention_weights(np.float32)
        heads = next(h for h in (3, 4, 6, 8, 12, 24) if h % p)  # divides d_model, not the group
        raises(
            lambda: par.ParallelSelfAttention(*w, heads, world),
            ValueError,
            f"n_heads={heads}",
            f"group size {p}",
        )
        raises(lambda: par.sequence_shard(np.ones((2, p + 1, 3)), world), ValueError, "sequence length")
    raises(
        lambda: par.ParallelMLP(*mlp_weights(np.float32), world, activation="tanh"),
        ValueError,
        "activation='tanh'",
    )
    raises(lambda: par.ColumnParallelLinear(np.ones(4), None, world), ValueError, "weight")


def layer_errors():
    # Constructors are collective: ranks holding different layers, or one holding
    # an invalid layer, all raise instead of computing with shards that do not
    # belong together (before, each rank built its own and the products came
    # out silently wrong).
    if size == 1:
        return
    p = size
    raises(
        lambda: par.ColumnParallelLinear(np.ones((8 if rank == 0 else 4, 4 * p)), None, world),
        ValueError,
        "ColumnParallelLinear: the ranks disagree",
        f"rank 0: in_features=8, out_features={4 * p}, bias=False",
        f"rank 1: in_features=4, out_features={4 * p}",
    )
    mixed = np.ones((4 * p, 4), np.float64 if rank == 0 else np.float32)
    raises(
        lambda: par.RowParallelLinear(mixed, None, world),
        ValueError,
        "rank 0: in_features",
        "dtype=float64",
        "rank 1: in_features",
        "dtype=float32",
    )
    raises(
        lambda: par.RowParallelLinear(np.ones((4 * p + (rank == 0), 4)), None, world),
        ValueError,
        f"in_features={4 * p + 1} is not divisible" if rank == 0 else "rank 0: invalid",
    )
    raises(
        lambda: par.ParallelMLP(*mlp_weights(np.float32), world, activation="relu" if rank else "gelu"),
        ValueError,
        "ParallelMLP: the ranks disagree",
    )
    heads = next(h for h in (4, 6, 8, 12, 24) if h % p == 0)
    raises(
        lambda: par.ParallelSelfAttention(*attention_weights(np.float32), heads, world, causal=rank != 0),
        ValueError,
        "rank 0: d_model=24",
        "causal=False",
        "causal=True",
    )
    # The group still builds layers that agree.
    layer = par.ColumnParallelLinear.init(12, 4 * p, world, seed=1)
    assert layer.params[0].shape == (12, 4)


def grids():
    expect_sizes = {
        4: [(2, 1, 2), (1, 2, 2), (4, 1, 1), (1, 1, 4)],
        2: [(2, 1, 1), (1, 1, 2), (1, 2, 1)],
        3: [(3, 1, 1), (1, 3, 1)],
        1: [(1, 1, 1)],
    }[size]
    for dp, pp, tp in expect_sizes:
        g = par.Grid(dp=dp, pp=pp, tp=tp)
        coords = (rank // (pp * tp), (rank // tp) % pp, rank % tp)
        assert tuple(g.coords[a] for a in ("dp", "pp", "tp")) == coords, (g.coords, coords)
        for axis, i in (("dp", 0), ("pp", 1), ("tp", 2)):
            members = [
                r for r in range(size)
                if all((r // (pp * tp), (r // tp) % pp, r % tp)[j] == coords[j] for j in range(3) if j != i)
            ]  # fmt: skip
            c = g.comm(axis)
            got = c.allgather(np.array([rank]))[:, 0].tolist()
            assert got == members, (axis, got, members)
            assert g.size(axis) == (dp, pp, tp)[i] == c.size and g.rank(axis) == coords[i] == c.rank
    if size == 4:
        g = par.Grid(tp=2)
        assert g.sizes == {"dp": 2, "pp": 1, "tp": 2}
        # Collectives on two groups interleave in either order on a rank.
        a = np.full(1000, rank, np.float64)
        b = np.full(1000, 10.0 * rank)
        first, second = ("tp", "dp") if rank % 2 else ("dp", "tp")
        w1 = g.comm(first).allreduce(a if first == "tp" else b, async_op=True)
        w2 = g.comm(second).allreduce(a if second == "tp" else b, async_op=True)
        w1.wait(), w2.wait()
        tp_peers = [r for r in range(4) if r // 2 == rank // 2]
        dp_peers = [r for r in range(4) if r % 2 == rank % 2]
        assert (a == sum(tp_peers)).all() and (b == 10.0 * sum(dp_peers)).all()


def grid_errors():
    raises(lambda: par.Grid(dp=size + 1), ValueError, "dp=", "ranks")
    raises(lambda: par.Grid(tp=0), ValueError, "tp=0")
    raises(lambda: par.Grid(ep=2), ValueError, "unknown axes", "ep")
    raises(lambda: par.Grid(order=("dp", "tp", "xx")), ValueError, "order=")
    if size > 1:
        raises(lambda: par.Grid(tp=size + 1), ValueError, "does not divide")
    raises(lambda: par.Grid().comm("ep"), ValueError, "unknown axis")
    if size > 1:
        # Ranks that build different grids, or one whose grid is invalid: every
        # rank raises, and none waits in a split that the others never join.
        raises(
            lambda: par.Grid(tp=size if rank == 0 else 1),
            ValueError,
            "the ranks disagree",
            f"rank 0: dp=1 x pp=1 x tp={size}",
            f"rank 1: dp={size} x pp=1 x tp=1",
        )
        raises(
            lambda: par.Grid(tp=0 if rank == 0 else 1), ValueError, "tp=0" if rank == 0 else "rank 0: invalid"
        )
        raises(
            lambda: par.Grid(order=("tp", "pp", "dp") if rank else ("dp", "pp", "tp")),
            ValueError,
            "the ranks disagree",
        )
        g = par.Grid()  # and the communicator still works
        assert g.comm("dp").size == size


for label, fn in [
    ("column", column_linear),
    ("row", row_linear),
    ("mlp", mlp),
    ("attention", attention),
    ("attention backward", attention_backward_by_differences),
    ("sequence parallel", sequence_parallel),
    ("contexts in flight", contexts_in_flight),
    ("determinism", determinism),
    ("init", init_matches_unsplit),
    ("bad sizes", bad_sizes),
    ("layer errors", layer_errors),
    ("grids", grids),
    ("grid errors", grid_errors),
]:
    if len(sys.argv) < 2 or label in sys.argv[1:]:
        cases.run(label, fn)
cases.finish()
