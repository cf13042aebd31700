#include "collex/algorithms/ring.h"

#include <cstring>

#include "collex/algorithms/algorithm.h"
#include "collex/algorithms/message_runner.h"

namespace collex::ring {
namespace {

int mod(int a, int p) { return ((a % p) + p) % p; }

// Rank r sends block send_block(s) in round s and receives block recv_block(s),
// and recv_block(s) == send_block(s + 1): a received chunk is forwarded next round.
// That shared shape is both halves of the ring; `reduce` chooses the receive kind.
// When reducing, round 0 sends input and every receive is its block's first
// touch (input OP message), so the working buffer needs no copy of the input.
void ring_pass(Schedule& s, int rank, int size, std::size_t count, std::size_t chunk, int first_block, bool reduce,
               int first_round) {
  const int right = mod(rank + 1, size);
  const int left = mod(rank - 1, size);
  const int rounds = size - 1;
  auto send_block = [&](int round) { return mod(first_block - round, size); };

  const Range first = block_range(count, size, send_block(0));
  for (std::size_t c = 0; c < chunk_count(first.count, chunk); ++c) {
    Range piece = chunk_of(first, chunk, c);
    s.send(right, piece.offset, piece.count, first_round, 0, /*from_input=*/reduce);
  }
  for (int round = 0; round < rounds; ++round) {
    const Range in = block_range(count, size, send_block(round + 1));
    for (std::size_t c = 0; c < chunk_count(in.count, chunk); ++c) {
      Range piece = chunk_of(in, chunk, c);
      if (reduce) {
        s.recv_reduce(left, piece.offset, piece.count, first_round + round, 0, /*from_input=*/true);
      } else {
        s.recv_copy(left, piece.offset, piece.count, first_round + round);
      }
      if (round + 1 < rounds) s.send(right, piece.offset, piece.count, first_round + round + 1);
    }
  }
}

}  // namespace

void reduce_scatter(Schedule& s, int rank, int size, std::size_t count, std::size_t chunk, bool divide_own_block) {
  if (size > 1) {
    // Round 0 sends block r - 1; the last round receives (and completes) block r.
    ring_pass(s, rank, size, count, chunk, rank - 1, /*reduce=*/true, s.rounds);
    s.rounds += size - 1;
  }
  if (divide_own_block && size > 1) {  // an average over one rank is the value itself
    Range own = block_range(count, size, rank);
    if (own.count > 0) s.divide(own.offset, own.count, s.rounds);
  }
}

void allgather(Schedule& s, int rank, int size, std::size_t count, std::size_t chunk, int first_round) {
  if (size == 1) return;
  // Round 0 sends the rank's own block r; the last round receives block r + 1.
  ring_pass(s, rank, size, count, chunk, rank, /*reduce=*/false, first_round);
  s.rounds = first_round + size - 1;
}

void allreduce(Schedule& s, int rank, int size, std::size_t count, std::size_t chunk, bool average) {
  reduce_scatter(s, rank, size, count, chunk, average);
  allgather(s, rank, size, count, chunk, s.rounds);
}

void broadcast(Schedule& s, int rank, int size, int root, std::size_t count, std::size_t chunk) {
  if (size == 1) return;
  const int position = mod(rank - root, size);
  const int next = mod(rank + 1, size);
  const int prev = mod(rank - 1, size);
  const Range all{0, count};
  for (std::size_t c = 0; c < chunk_count(count, chunk); ++c) {
    Range piece = chunk_of(all, chunk, c);
    if (position > 0) s.recv_copy(prev, piece.offset, piece.count, position - 1);
    if (position < size - 1) s.send(next, piece.offset, piece.count, position);
  }
  s.rounds = size - 1;
}

}  // namespace collex::ring

// ---- the ring as an algorithm: its schedules on the communicator's transport ----

namespace collex {
namespace {

class Ring final : public Algorithm {
 public:
  Algo id() const override { return Algo::kRing; }

  // Each rank sends on one link: p - 1 steps per pass, carrying a share of the data.
  Offer offer(const CollectiveCall& c, const Site& site, const CostModel& model) const override {
    if (c.segments) return Offer::decline("segmented all-reduces need the node's window");
    const double p = site.size, n = static_cast<double>(c.in.bytes());
    switch (c.kind) {
      case Collective::kAllreduce: return Offer::at(model.messages.of(2 * (p - 1), 2 * (p - 1) / p * n));
      case Collective::kBroadcast: return Offer::at(model.messages.of(p - 1, n));
      case Collective::kAllgather: return Offer::at(model.messages.of(p - 1, (p - 1) * n));
      case Collective::kReduceScatter: return Offer::at(model.messages.of(p - 1, (p - 1) / p * n));
      case Collective::kReduce: return Offer::decline("the ring has no reduce (the tree runs it)");
      default: return Offer::decline("the ring has no barrier");
    }
  }

  void run(const CollectiveCall& c, const Site& site) const override {
    MessageRunner& m = *site.messages;
    const std::size_t chunk = m.chunk_for(c, site);
    const bool average = c.op == ReduceOp::kAvg;
    Schedule s;
    switch (c.kind) {
      case Collective::kAllreduce:
        ring::allreduce(s, site.rank, site.size, c.in.count, chunk, average);
        return m.run_call(s, *site.world, c, c.out.data, c.in.data, "ring");
      case Collective::kBroadcast:
        ring::broadcast(s, site.rank, site.size, c.root, c.in.count, chunk);
        return m.run_call(s, *site.world, c, c.in.data, nullptr, "ring");
      case Collective::kAllgather: {
        char* own = c.out.bytes_at(static_cast<std::size_t>(site.rank) * c.in.count);
        if (own != c.in.data && c.in.count > 0) std::memmove(own, c.in.data, c.in.bytes());
        ring::allgather(s, site.rank, site.size, c.out.count, chunk);
        return m.run_call(s, *site.world, c, c.out.data, nullptr, "ring");
      }
      case Collective::kReduceScatter: {
        // Partial blocks pass through a scratch buffer; the input stays untouched.
        std::vector<char>& scratch = *site.scratch;
        scratch.resize(c.in.bytes());
        ring::reduce_scatter(s, site.rank, site.size, c.in.count, chunk, average);
        m.run_call(s, *site.world, c, scratch.data(), c.in.data, "ring");
        if (c.out.count > 0)
          std::memcpy(c.out.data, scratch.data() + static_cast<std::size_t>(site.rank) * c.out.bytes(), c.out.bytes());
        return;
      }
      default: break;
    }
  }
};

}  // namespace

const Algorithm& ring_algorithm() {
  static const Ring ring;
  return ring;
}

}  // namespace collex
