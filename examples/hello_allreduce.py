"""The smallest collex program: every rank contributes its rank number.

mpirun -n 4 python -m mpi4py examples/hello_allreduce.py
"""

import collex as cx
import numpy as np

cx.init()
x = np.full(4, cx.rank(), dtype=np.float32)
cx.allreduce(x)  # in place: the sum over ranks
expected = sum(range(cx.size()))
assert (x == expected).all(), x
avg = cx.allreduce(np.full(4, cx.rank(), dtype=np.float32), op="avg")
gathered = cx.allgather(np.array([cx.rank()]))
print(f"rank {cx.rank()} of {cx.size()}: sum={x[0]:g} avg={avg[0]:g} gathered={gathered.ravel().tolist()}")
cx.finalize()
