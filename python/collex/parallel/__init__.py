"""Model parallelism on collex's collectives: process grids and Megatron-style
tensor-parallel layers (``from collex import parallel as par``).

Every layer works on NumPy arrays and, unchanged, on CuPy arrays: the array
module is taken from the arrays it is given. Layers only compose the
communication regions of ``regions.py``, each a pair of collectives (one in
forward, its adjoint in backward), on the public collective API.
"""

from __future__ import annotations

from .attention import ParallelSelfAttention
from .grid import Grid
from .layers import ColumnParallelLinear, ParallelMLP, RowParallelLinear
from .regions import sequence_shard

__all__ = [
    "ColumnParallelLinear",
    "Grid",
    "ParallelMLP",
    "ParallelSelfAttention",
    "RowParallelLinear",
    "sequence_shard",
]
