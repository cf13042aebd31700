#include "collex/algorithms/tree.h"

#include <algorithm>

#include "collex/algorithms/algorithm.h"
#include "collex/algorithms/message_runner.h"

namespace collex::tree {
namespace {

int position_of(int rank, int size, Layout layout, int root) {
  return layout == Layout::kRotated ? (rank - root + size) % size : size - 1 - rank;
}

int rank_of(int position, int size, Layout layout, int root) {
  return layout == Layout::kRotated ? (position + root) % size : size - 1 - position;
}

// One chunk's worth of each phase, so that all-reduce can interleave them. The
// first child's contribution meets the rank's input (its first touch of the
// chunk); a leaf sends its input as it is.
void reduce_chunk(Schedule& s, const Links& l, Range piece, bool is_root, bool average, int round_up, int channel) {
  for (int k = 0; k < l.num_children; ++k) {
    s.recv_reduce(l.children[k], piece.offset, piece.count, round_up, channel, /*from_input=*/k == 0);
  }
  if (!is_root) {
    s.send(l.parent, piece.offset, piece.count, round_up, channel, /*from_input=*/l.num_children == 0);
  } else if (average) {
    s.divide(piece.offset, piece.count, round_up);
  }
}

void broadcast_chunk(Schedule& s, const Links& l, Range piece, bool is_root, int round_down, int channel) {
  if (!is_root) s.recv_copy(l.parent, piece.offset, piece.count, round_down, channel);
  for (int k = 0; k < l.num_children; ++k) {
    s.send(l.children[k], piece.offset, piece.count, round_down, channel);
  }
}

}  // namespace

Links links(int rank, int size, Layout layout, int root) {
  Links l;
  const int pos = position_of(rank, size, layout, root);
  if (pos > 0) l.parent = rank_of((pos - 1) / 2, size, layout, root);
  for (int c = 2 * pos + 1; c <= 2 * pos + 2 && c < size; ++c) {
    l.children[l.num_children++] = rank_of(c, size, layout, root);
  }
  return l;
}

int root_rank(int size, Layout layout, int root) { return rank_of(0, size, layout, root); }

int depth(int size) {
  int d = 0;
  while ((1 << (d + 1)) - 1 < size) ++d;
  return d;
}

void reduce(Schedule& s, int rank, int size, Layout layout, int root, Range range, std::size_t chunk, bool average,
            int channel) {
  const Links l = links(rank, size, layout, root);
  const bool is_root = rank == root_rank(size, layout, root);
  const int round = depth(size) - 1;
  for (std::size_t c = 0; c < chunk_count(range.count, chunk); ++c) {
    reduce_chunk(s, l, chunk_of(range, chunk, c), is_root, average, round, channel);
  }
  s.rounds = std::max(s.rounds, depth(size));
}

void broadcast(Schedule& s, int rank, int size, Layout layout, int root, Range range, std::size_t chunk, int channel) {
  const Links l = links(rank, size, layout, root);
  const bool is_root = rank == root_rank(size, layout, root);
  for (std::size_t c = 0; c < chunk_count(range.count, chunk); ++c) {
    broadcast_chunk(s, l, chunk_of(range, chunk, c), is_root, 0, channel);
  }
  s.rounds = std::max(s.rounds, depth(size));
}

void allreduce(Schedule& s, int rank, int size, std::size_t count, std::size_t chunk, bool average) {
  if (size == 1) {
    // Nothing to exchange; an average over one rank is the value itself.
    return;
  }
  const Layout layouts[2] = {Layout::kRotated, Layout::kMirrored};
  const Range halves[2] = {block_range(count, 2, 0), block_range(count, 2, 1)};
  Links l[2];
  bool is_root[2];
  std::size_t chunks[2];
  for (int t = 0; t < 2; ++t) {
    l[t] = links(rank, size, layouts[t], 0);
    is_root[t] = rank == root_rank(size, layouts[t], 0);
    chunks[t] = chunk_count(halves[t].count, chunk);
  }
  // Broadcast of chunk c trails its reduction by about one tree depth of chunks,
  // so that reductions keep flowing up while results flow down. Every rank uses
  // the same lag, so every rank orders its steps alike.
  const std::size_t lag = static_cast<std::size_t>(depth(size));
  const std::size_t total = std::max(chunks[0], chunks[1]) + lag;
  const int d = depth(size);
  for (std::size_t c = 0; c < total; ++c) {
    for (int t = 0; t < 2; ++t) {
      if (c < chunks[t]) {
        reduce_chunk(s, l[t], chunk_of(halves[t], chunk, c), is_root[t], average, d - 1, 2 * t);
      }
      if (c >= lag && c - lag < chunks[t]) {
        broadcast_chunk(s, l[t], chunk_of(halves[t], chunk, c - lag), is_root[t], d, 2 * t + 1);
      }
    }
  }
  s.rounds = 2 * d;
}

}  // namespace collex::tree

// ---- the tree as an algorithm: its schedules on the communicator's transport ----

namespace collex {
namespace {

class Tree final : public Algorithm {
 public:
  Algo id() const override { return Algo::kTree; }

  // log2(p) steps each way. The double tree's all-reduce moves every byte up and
  // down (twice the ring's share); a broadcast, once per level.
  Offer offer(const CollectiveCall& c, const Site& site, const CostModel& model) const override {
    if (c.segments) return Offer::decline("segmented all-reduces need the node's window");
    const double depth = log2_ranks(site.size), n = static_cast<double>(c.in.bytes());
    switch (c.kind) {
      case Collective::kAllreduce: return Offer::at(model.messages.of(2 * depth, 2 * n));
      case Collective::kBroadcast: return Offer::at(model.messages.of(depth, model.tree_broadcast_bytes * n));
      case Collective::kReduce: return Offer::at(model.messages.of(depth, n));
      case Collective::kAllgather: return Offer::decline("the tree has no all-gather (the ring runs it)");
      case Collective::kReduceScatter: return Offer::decline("the tree has no reduce-scatter (the ring runs it)");
      default: return Offer::decline("the tree has no barrier");
    }
  }

  void run(const CollectiveCall& c, const Site& site) const override {
    MessageRunner& m = *site.messages;
    const std::size_t chunk = m.chunk_for(c, site);
    const bool average = c.op == ReduceOp::kAvg;
    Schedule s;
    switch (c.kind) {
      case Collective::kAllreduce:
        tree::allreduce(s, site.rank, site.size, c.in.count, chunk, average);
        return m.run_call(s, *site.world, c, c.out.data, c.in.data, "tree");
      case Collective::kBroadcast:
        tree::broadcast(s, site.rank, site.size, tree::Layout::kRotated, c.root, {0, c.in.count}, chunk);
        return m.run_call(s, *site.world, c, c.in.data, nullptr, "tree");
      case Collective::kReduce: {
        const tree::Links links = tree::links(site.rank, site.size, tree::Layout::kRotated, c.root);
        void* data = nullptr;
        if (site.rank == c.root) {
          data = c.out.data;
        } else if (links.num_children == 0) {
          data = c.in.data;  // a leaf only sends its input
        } else {
          // Interior ranks accumulate their children's values; the input stays untouched.
          site.scratch->resize(c.in.bytes());
          data = site.scratch->data();
        }
        tree::reduce(s, site.rank, site.size, tree::Layout::kRotated, c.root, {0, c.in.count}, chunk, average);
        return m.run_call(s, *site.world, c, data, c.in.data, "tree");
      }
      default: break;
    }
  }
};

}  // namespace

const Algorithm& tree_algorithm() {
  static const Tree tree;
  return tree;
}

}  // namespace collex
