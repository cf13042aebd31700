// Tree schedules: pipelined binary trees for reduce, broadcast and all-reduce.
// A tree is laid out in heap order over positions (position i has children
// 2i + 1 and 2i + 2); a `TreeLayout` maps positions to ranks. Two layouts that
// mirror each other make a double binary tree: the ranks that are interior in one
// are leaves in the other, so all-reduce splits its data across both and every
// rank's links carry about the same load.
#pragma once

#include <cstddef>

#include "collex/algorithms/schedule.h"

namespace collex::tree {

struct Links {
  int parent = -1;  // -1 at the root
  int children[2] = {-1, -1};
  int num_children = 0;
};

enum class Layout {
  kRotated,   // rank = (position + root) % size: rooted anywhere
  kMirrored,  // rank = size - 1 - position: the second tree of a double tree
};

// The links of `rank` in the tree of `size` ranks, as ranks.
Links links(int rank, int size, Layout layout, int root = 0);

// The root's rank of a layout.
int root_rank(int size, Layout layout, int root = 0);

// Depth of a heap-ordered tree of `size` nodes (0 for one node).
int depth(int size);

// Reduce [range] to the root, chunk by chunk; children are reduced in in order.
// With `average` the root divides the final value by size.
void reduce(Schedule& s, int rank, int size, Layout layout, int root, Range range, std::size_t chunk, bool average,
            int channel = 0);

// Broadcast [range] from the root, chunk by chunk.
void broadcast(Schedule& s, int rank, int size, Layout layout, int root, Range range, std::size_t chunk,
               int channel = 0);

// Double binary tree all-reduce: the first half of the buffer reduces up and comes
// back down the rotated tree, the second half the mirrored tree; reduction and
// broadcast are interleaved chunk by chunk so that the pipeline stays full.
void allreduce(Schedule& s, int rank, int size, std::size_t count, std::size_t chunk, bool average);

}  // namespace collex::tree
