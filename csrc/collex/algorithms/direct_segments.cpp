// The direct all-reduce of data that lies in many pieces (direct.h,
// allreduce_segments): peers' pieces are read where they lie and the results
// written back where they belong.
#include "collex/algorithms/direct_steps.h"

namespace collex::direct {
using namespace detail;  // NOLINT: the steps of direct_steps.h are these files' vocabulary

namespace {

// Where each segment starts in the bytes of the whole (the same on every rank).
std::vector<std::size_t> segment_starts(const std::vector<Span>& segments) {
  std::vector<std::size_t> starts(segments.size());
  std::size_t at = 0;
  for (std::size_t i = 0; i < segments.size(); ++i) {
    starts[i] = at;
    at += segments[i].bytes;
  }
  return starts;
}

// The spans of `table` that hold bytes [first, first + bytes) of the whole.
void slice(const std::vector<Span>& table, const std::vector<std::size_t>& starts, std::size_t first, std::size_t bytes,
           std::vector<Span>& out) {
  out.clear();
  if (bytes == 0) return;
  std::size_t i = static_cast<std::size_t>(std::upper_bound(starts.begin(), starts.end(), first) - starts.begin()) - 1;
  std::size_t offset = first - starts[i];
  for (; bytes > 0; ++i, offset = 0) {
    const std::size_t take = std::min(bytes, table[i].bytes - offset);
    if (take > 0) out.push_back(Span{table[i].address + offset, take});
    bytes -= take;
  }
}

// Segments at least this large get pieces of their own, reduced straight into
// them; smaller ones go together through a buffer (one read per peer for many).
constexpr std::size_t kOwnPiecesBytes = 64 * 1024;

// Bytes of the next piece from byte `first` of the whole, at most `most`. A
// piece ends where this rank's segment ends when that segment is large, so the
// piece lies inside it; small segments are taken together up to the next large one.
std::size_t next_piece(const std::vector<Span>& table, const std::vector<std::size_t>& starts, std::size_t first,
                       std::size_t most) {
  std::size_t i = static_cast<std::size_t>(std::upper_bound(starts.begin(), starts.end(), first) - starts.begin()) - 1;
  std::size_t take = starts[i] + table[i].bytes - first;
  if (table[i].bytes < kOwnPiecesBytes) {
    for (++i; i < table.size() && take < most && table[i].bytes < kOwnPiecesBytes; ++i) take += table[i].bytes;
  }
  return std::min(take, most);
}

// `take` bytes from byte `first` of the whole, or fewer so that the piece does
// not straddle an edge of the part of its segment that lies on shared pages (a
// large array's first and last pages stay private): pieces inside that part
// are read in place by the peers, whose arrays lie alike in their pages where
// malloc gave each its own mapping.
std::size_t shared_edge(const Window& w, const std::vector<Span>& table, const std::vector<std::size_t>& starts,
                        std::size_t first, std::size_t take) {
  const std::size_t i =
      static_cast<std::size_t>(std::upper_bound(starts.begin(), starts.end(), first) - starts.begin()) - 1;
  if (table[i].bytes < kOwnPiecesBytes) return take;
  // The segment's bytes as elements of one byte: the edges of direct_steps.h.
  return up_to_edge(first - starts[i], take, shared_elements(w, w.rank(), table[i].address, table[i].bytes, 1));
}

// Copies the bytes the spans `from` hold, in order, into the spans `to` (as
// many bytes), leaving parts that already lie where they go.
void copy_across(const Span* from, std::size_t n_from, const Span* to, std::size_t n_to,
                 kernels::Stores stores = kernels::Stores::kOrdinary) {
  std::size_t i = 0, j = 0, at_from = 0, at_to = 0;
  while (i < n_from && j < n_to) {
    const std::size_t k = std::min(from[i].bytes - at_from, to[j].bytes - at_to);
    const auto* src = reinterpret_cast<const char*>(from[i].address + at_from);
    auto* dst = reinterpret_cast<char*>(to[j].address + at_to);
    if (k > 0 && src != dst) kernels::copy_result(dst, src, k, 0, stores);
    at_from += k;
    at_to += k;
    if (at_from == from[i].bytes) ++i, at_from = 0;
    if (at_to == to[j].bytes) ++j, at_to = 0;
  }
}
void copy_across(const std::vector<Span>& from, const std::vector<Span>& to,
                 kernels::Stores stores = kernels::Stores::kOrdinary) {
  copy_across(from.data(), from.size(), to.data(), to.size(), stores);
}
// The spans, in order, into `to`; and back: `from` into the spans.
void gather(const std::vector<Span>& spans, char* to) {
  std::size_t bytes = 0;
  for (const Span& s : spans) bytes += s.bytes;
  const Span local{reinterpret_cast<std::uintptr_t>(to), bytes};
  copy_across(spans.data(), spans.size(), &local, 1);
}
void scatter(const char* from, const std::vector<Span>& spans, kernels::Stores stores = kernels::Stores::kOrdinary) {
  std::size_t bytes = 0;
  for (const Span& s : spans) bytes += s.bytes;
  const Span local{reinterpret_cast<std::uintptr_t>(from), bytes};
  copy_across(&local, 1, spans.data(), spans.size(), stores);
}

bool same_spans(const std::vector<Span>& a, const std::vector<Span>& b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](const Span& x, const Span& y) {
           return x.address == y.address && x.bytes == y.bytes;
         });
}

}  // namespace

void allreduce_segments(Window& w, const Op& o) {
  Ctx c{w, o, w.rank(), w.size(), dtype_size(o.dtype)};
  const std::vector<Span>& mine = *o.segments;              // what peers read
  const std::vector<Span>& home = o.home ? *o.home : mine;  // where this rank's elements lie
  const bool staging = &home != &mine;
  const std::vector<std::size_t> starts = segment_starts(mine);
  const std::vector<std::size_t> home_starts = staging ? segment_starts(home) : starts;
  std::vector<Span> spans, own, published;
  // Results are written past the cache when the bucket is large (or as chosen
  // while running); copies in the staging area, which peers read within the
  // operation as they read results, likewise: with ordinary stores ResNet-50's
  // reducer took 0.06-0.5 ms a step longer at times when the VM's cores passed
  // data between their caches slowly (5 runs), and the same otherwise.
  const bool streaming = streams_results(o, o.count * c.es);
  const kernels::Stores staged_stores = streaming ? kernels::Stores::kStreaming : kernels::Stores::kOrdinary;

  // The parts of the peers' blocks that they read from a staging area: copied
  // there first (the last operation ended with every peer done reading it).
  for (int r = 0; r < c.p && staging; ++r) {
    const Range b = block_range(o.count, c.p, r);
    if (r == c.me || b.count == 0) continue;
    slice(home, home_starts, b.offset * c.es, b.count * c.es, own);
    slice(mine, starts, b.offset * c.es, b.count * c.es, published);
    copy_across(own, published, staged_stores);
  }
  w.publish(reinterpret_cast<std::uintptr_t>(mine.data()), 0);
  w.publish_spans(mine.data(), mine.size());
  c.sync(1, 3);

  // Every rank's table of where its segments lie.
  std::vector<std::vector<Span>> tables(static_cast<std::size_t>(c.p));
  for (int r = 0; r < c.p; ++r) {
    auto& t = tables[static_cast<std::size_t>(r)];
    if (r == c.me) {
      t = mine;
    } else if (!mine.empty()) {
      t.resize(mine.size());
      w.read(r, w.peer_input(r), t.data(), mine.size() * sizeof(Span), kernels::Stores::kOrdinary);
    }
  }

  // Reduce-scatter: this rank's block, a piece at a time, from every rank's segments.
  const std::size_t piece = std::max<std::size_t>(1, piece_bytes() / c.es);
  const PieceBuffers tmp = piece_buffers(c, piece);
  char* acc = tmp[2];  // the reduced piece, or this rank's part set aside
  const Range block = block_range(o.count, c.p, c.me);
  std::vector<const char*> peer_at(static_cast<std::size_t>(c.p));
  for (std::size_t done = 0, k = 0; done < block.count && c.p > 1; done += k) {
    const std::size_t first = (block.offset + done) * c.es;
    k = shared_edge(w, mine, starts, first,
                    next_piece(mine, starts, first, std::min(piece, block.count - done) * c.es)) /
        c.es;
    const std::size_t bytes = k * c.es;
    slice(home, home_starts, first, bytes, own);
    // A piece in a staging area: its result goes home and there, for the peers.
    if (staging) slice(mine, starts, first, bytes, published);
    const bool staged = staging && !same_spans(own, published);
    // Each peer's elements of the piece in place, where they lie in one segment
    // that the peer shares (a large array, or its staging area) and this rank
    // maps: combined there (the peer writes only its own block meanwhile), as
    // reduce_from_inputs does; copying them into cache first cost 1.4x the flat
    // all-reduce's time on ResNet-50's large gradients.
    bool all_mapped = true;
    for (int r = 0; r < c.p; ++r) {
      if (r == c.me) continue;
      slice(tables[static_cast<std::size_t>(r)], starts, first, bytes, spans);
      peer_at[static_cast<std::size_t>(r)] = spans.size() == 1 ? w.mapped(r, spans[0].address, bytes) : nullptr;
      all_mapped = all_mapped && peer_at[static_cast<std::size_t>(r)] != nullptr;
    }
    if ((own.size() > 1 || staged) && all_mapped) {
      // This rank's elements lie in several places (small arrays), or not where
      // its peers read them (staged): reduced into each place where they lie,
      // then copied to the staging area for the peers' all-gather.
      std::size_t at = 0;
      for (const Span& part : own) {
        char* to = reinterpret_cast<char*>(part.address);
        if (c.me >= 2) std::memcpy(acc, to, part.bytes);
        combine_ranks(c, to, part.bytes / c.es, tmp, false, [&](int r, char*) -> const char* {
          return r == c.me ? (c.me < 2 ? to : acc) : peer_at[static_cast<std::size_t>(r)] + at;
        });
        at += part.bytes;
      }
      if (staged) copy_across(own, published, staged_stores);
      continue;
    }
    // A piece inside one of this rank's segments is reduced straight into it
    // (streaming past the cache when the bucket is large). Ranks 0 and 1 read
    // their own part in place there, as the first or second source of the first
    // combination (which reads every element before writing it, as
    // reduce_from_inputs relies on too); a later rank's would be overwritten
    // before it is read, so it is copied aside first.
    const bool in_place = own.size() == 1 && !staged;
    char* to = in_place ? reinterpret_cast<char*>(own[0].address) : acc;
    if (in_place && c.me >= 2) std::memcpy(acc, to, bytes);
    combine_ranks(c, to, k, tmp, streaming && in_place, [&](int r, char* into) -> const char* {
      if (r == c.me && in_place) return c.me < 2 ? to : acc;
      if (r == c.me) {
        gather(own, into);
        return into;
      }
      if (const char* there = peer_at[static_cast<std::size_t>(r)]) return there;
      slice(tables[static_cast<std::size_t>(r)], starts, first, bytes, spans);
      const Span local{reinterpret_cast<std::uintptr_t>(into), bytes};
      w.read_spans(r, spans.data(), spans.size(), &local, 1, kernels::Stores::kOrdinary);  // into a piece buffer
      return into;
    });
    if (!in_place) scatter(acc, own);
    if (staged) scatter(acc, published, staged_stores);
  }
  c.sync(2, 3);  // every block reduced where it lies

  // All-gather: every peer's reduced block, straight from its segments into ours.
  std::vector<Span> local;
  for (int r = 0; r < c.p; ++r) {
    const Range b = block_range(o.count, c.p, r);
    if (r == c.me || b.count == 0) continue;
    slice(tables[static_cast<std::size_t>(r)], starts, b.offset * c.es, b.count * c.es, spans);
    slice(home, home_starts, b.offset * c.es, b.count * c.es, local);
    w.read_spans(r, spans.data(), spans.size(), local.data(), local.size(), o.result_stores);
  }
  c.sync(3, 3);  // nobody reads our segments any more
}

}  // namespace collex::direct
