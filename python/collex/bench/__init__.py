"""collex's microbenchmark suite: every collective against the MPI library's own
(through mpi4py) and torch.distributed/gloo, beside the machine's memory limit.

    mpirun -n 2 python -m collex.bench -b 8 -e 64M -f 4

See bench/README.md for the columns and the arithmetic.
"""
