"""Model parallelism on collex's collectives and point-to-point: process grids,
Megatron-style tensor-parallel layers, pipelines and sharded data parallelism
(``from collex import parallel as par``).

Every layer works on NumPy arrays and, unchanged, on CuPy arrays: the array
module is taken from the arrays it is given. Layers only compose the
communication regions of ``regions.py``, each a pair of collectives (one in
forward, its adjoint in backward), on the public collective API.
"""

from __future__ import annotations

from .attention import ParallelSelfAttention
from .grid import Grid
from .layers import ColumnParallelLinear, ParallelMLP, RowParallelLinear
from .pipeline import Pipeline, PipelineAborted, bubble_fraction, plot_timeline
from .regions import sequence_shard
from .stages import DenseStage
from .zero import ShardedOptimizer

__all__ = [
    "ColumnParallelLinear",
    "DenseStage",
    "Grid",
    "ParallelMLP",
    "ParallelSelfAttention",
    "Pipeline",
    "PipelineAborted",
    "RowParallelLinear",
    "ShardedOptimizer",
    "bubble_fraction",
    "plot_timeline",
    "sequence_shard",
]
