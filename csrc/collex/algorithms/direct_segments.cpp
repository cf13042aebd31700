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

// Copies the spans, in order, into `to`; and back: `from` into the spans.
void gather(const std::vector<Span>& spans, char* to) {
  for (const Span& s : spans) {
    std::memcpy(to, reinterpret_cast<const void*>(s.address), s.bytes);
    to += s.bytes;
  }
}
void scatter(const char* from, const std::vector<Span>& spans) {
  for (const Span& s : spans) {
    std::memcpy(reinterpret_cast<void*>(s.address), from, s.bytes);
    from += s.bytes;
  }
}

}  // namespace

void allreduce_segments(Window& w, const Op& o) {
  Ctx c{w, o, w.rank(), w.size(), dtype_size(o.dtype)};
  const std::vector<Span>& mine = *o.segments;
  const std::vector<std::size_t> starts = segment_starts(mine);
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
  const bool streaming = streams_results(o, o.count * c.es);
  std::vector<Span> spans, own;
  const Range block = block_range(o.count, c.p, c.me);
  for (std::size_t done = 0, k = 0; done < block.count && c.p > 1; done += k) {
    const std::size_t first = (block.offset + done) * c.es;
    k = shared_edge(w, mine, starts, first,
                    next_piece(mine, starts, first, std::min(piece, block.count - done) * c.es)) /
        c.es;
    const std::size_t bytes = k * c.es;
    slice(mine, starts, first, bytes, own);
    // A piece inside one of this rank's segments is reduced straight into it
    // (streaming past the cache when the bucket is large). Ranks 0 and 1 read
    // their own part in place there, as the first or second source of the first
    // combination (which reads every element before writing it, as
    // reduce_from_inputs relies on too); a later rank's would be overwritten
    // before it is read, so it is copied aside first.
    const bool in_place = own.size() == 1;
    char* to = in_place ? reinterpret_cast<char*>(own[0].address) : acc;
    if (in_place && c.me >= 2) std::memcpy(acc, to, bytes);
    combine_ranks(c, to, k, tmp, streaming && in_place, [&](int r, char* into) -> const char* {
      if (r == c.me && in_place) return c.me < 2 ? to : acc;
      if (r == c.me) {
        gather(own, into);
        return into;
      }
      slice(tables[static_cast<std::size_t>(r)], starts, first, bytes, spans);
      // A piece of one large segment that the peer shares is combined where it
      // lies (the peer writes only its own block meanwhile), as
      // reduce_from_inputs does: copying it into cache first cost 1.4x the
      // flat all-reduce's time on ResNet-50's large gradients.
      if (spans.size() == 1) {
        if (const char* in_place = w.mapped(r, spans[0].address, bytes)) return in_place;
      }
      const Span local{reinterpret_cast<std::uintptr_t>(into), bytes};
      w.read_spans(r, spans.data(), spans.size(), &local, 1, kernels::Stores::kOrdinary);  // into a piece buffer
      return into;
    });
    if (!in_place) scatter(acc, own);
  }
  c.sync(2, 3);  // every block reduced where it lies

  // All-gather: every peer's reduced block, straight from its segments into ours.
  std::vector<Span> local;
  for (int r = 0; r < c.p; ++r) {
    const Range b = block_range(o.count, c.p, r);
    if (r == c.me || b.count == 0) continue;
    slice(tables[static_cast<std::size_t>(r)], starts, b.offset * c.es, b.count * c.es, spans);
    slice(mine, starts, b.offset * c.es, b.count * c.es, local);
    w.read_spans(r, spans.data(), spans.size(), local.data(), local.size(), o.result_stores);
  }
  c.sync(3, 3);  // nobody reads our segments any more
}

}  // namespace collex::direct
