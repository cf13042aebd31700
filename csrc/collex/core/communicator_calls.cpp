// The communicator's entry points: each checks what the core itself relies on
// (the Python layer checks the rest first, with the same message shape),
// describes the call and queues it; point-to-point is posted at once.
#include <cstdio>
#include <exception>
#include <string>

#include "collex/common/errors.h"
#include "collex/core/communicator.h"
#include "collex/core/topology.h"
#include "collex/transport/shm/huge_pages.h"
#include "collex/transport/shm/shared_pages.h"
#include "collex/transport/shm/shm_window.h"

namespace collex {
namespace {

// The message shape every argument error has, in Python's layer too:
// "collex.<op> [rank r]: <argument>: expected ..., got ...". `what` makes the
// text only when the check fails: the checks run on every call.
template <typename What>
void require(bool ok, int rank, Collective c, What&& what) {
  if (!ok)
    throw InvalidArgument(std::string("collex.") + collective_name(c) + " [rank " + std::to_string(rank) +
                          "]: " + what());
}

// The core runs on host memory; CUDA arrays are staged (or reduced over CUDA IPC)
// by python/collex/cuda/ before they reach it.
void require_host(int rank, Collective c, const char* argument, const Buffer& b) {
  require(b.on_host(), rank, c, [&] {
    return std::string(argument) + ": expected host memory, got cuda:" + std::to_string(b.device.id) +
           " (CUDA arrays go through collex.cuda)";
  });
}

std::string elements(const Buffer& b) { return std::to_string(b.count) + " " + dtype_name(b.dtype) + " elements"; }

std::string same_as_x(const Buffer& in, const Buffer& out) {
  return "out: expected " + elements(in) + " (as x), got " + elements(out);
}

std::string avg_needs_float(const Buffer& in) {
  return std::string("op='avg': expected a floating-point dtype, got ") + dtype_name(in.dtype);
}

std::string root_in_range(int root, int size) {
  return "root: expected 0 <= root < " + std::to_string(size) + ", got " + std::to_string(root);
}

// What every reduction into an `out` of x's size relies on (all-reduce, reduce).
void check_reduction(int rank, Collective c, const Buffer& in, const Buffer& out, ReduceOp op) {
  require_host(rank, c, "x", in);
  require_host(rank, c, "out", out);
  require(in.count == out.count && in.dtype == out.dtype, rank, c, [&] { return same_as_x(in, out); });
  require(op != ReduceOp::kAvg || dtype_is_float(in.dtype), rank, c, [&] { return avg_needs_float(in); });
}

}  // namespace

std::shared_ptr<Work> Communicator::allreduce(Buffer in, Buffer out, ReduceOp op, Algo algo, bool async) {
  return allreduce_with(in, out, op, nullptr, nullptr, async, algo);
}

std::shared_ptr<Work> Communicator::allreduce_with(Buffer in, Buffer out, ReduceOp op, Hook before, Hook after,
                                                   bool async, Algo algo) {
  check_reduction(rank_, Collective::kAllreduce, in, out, op);
  Call c;
  c.call.kind = Collective::kAllreduce;
  c.call.in = in;
  c.call.out = out;
  c.call.op = op;
  c.algo = algo;
  c.before = std::move(before);
  c.after = std::move(after);
  return submit(std::move(c), async);
}

bool Communicator::can_reduce_segments() const {
  const bool algo_allows = forced_algo_ == Algo::kAuto || forced_algo_ == Algo::kDirect;
  const ShmWindow* window = topo_->window.get();
  return size_ == 1 || (window && site_.local_size == size_ && window->can_read_peers() && algo_allows);
}

std::size_t Communicator::prepare_peer_reads(const std::vector<Span>& spans) {
  if (size_ == 1 || !can_reduce_segments()) return 0;  // nobody reads them through the window
  return shm::back_with_huge_pages(spans.data(), spans.size());
}

std::vector<Span> Communicator::shared_parts(const std::vector<Span>& spans) {
  std::vector<Span> parts(spans.size());
  const ShmWindow* window = topo_->window.get();
  if (size_ == 1 || site_.local_size < 2 || window == nullptr || !window->can_read_peers()) return parts;
  engine_.submit(
      [&] {
        for (std::size_t i = 0; i < spans.size(); ++i)
          parts[i] = window->own_shared_part(spans[i].address, spans[i].bytes);
      },
      false);
  return parts;
}

std::uint64_t Communicator::share_pages(Span array) {
  const ShmWindow* window = topo_->window.get();
  if (size_ == 1 || site_.local_size < 2 || window == nullptr || !window->can_read_peers()) return 0;
  std::uint64_t id = 0;
  std::string why_not;
  try {
    engine_.submit(
        [&] {
          try {
            id = shm::share(array.address, array.bytes, &why_not);
          } catch (const std::exception& e) {
            why_not = e.what();
          }
        },
        false);
  } catch (const std::exception& e) {  // shut down, or a queued operation failed: the call itself will say so
    why_not = e.what();
  }
  if (id == 0 && config_.debug >= 1)
    std::fprintf(stderr, "collex: [rank %d] an array of %zu B stays private (peers copy it through the kernel): %s\n",
                 rank_, array.bytes, why_not.c_str());
  return id;
}

void Communicator::release_pages(std::uint64_t id, bool keep_contents) { shm::release(id, keep_contents); }

std::shared_ptr<Work> Communicator::allreduce_segments(std::shared_ptr<const std::vector<Span>> segments,
                                                       std::shared_ptr<const std::vector<Span>> home, std::size_t count,
                                                       DType dtype, ReduceOp op, bool async) {
  require(can_reduce_segments(), rank_, Collective::kAllreduce, [&] {
    return "segments: expected every rank on one node with a shared window, got " +
           std::to_string(size_ - site_.local_size) + " ranks elsewhere or no window";
  });
  for (const auto* table : {segments.get(), home.get()}) {
    if (table == nullptr) continue;
    std::size_t bytes = 0;
    for (const Span& s : *table) bytes += s.bytes;
    require(bytes == count * dtype_size(dtype), rank_, Collective::kAllreduce, [&] {
      return std::string(table == home.get() ? "home" : "segments") + ": expected " +
             std::to_string(count * dtype_size(dtype)) + " bytes in all, got " + std::to_string(bytes);
    });
  }
  Call c;
  c.call.kind = Collective::kAllreduce;
  c.call.in = c.call.out = Buffer{nullptr, count, dtype};
  c.call.op = op;
  c.call.segments = segments.get();
  c.call.home = home.get();
  c.algo = Algo::kDirect;
  c.segments = std::move(segments);
  c.home = std::move(home);
  return submit(std::move(c), async);
}

std::shared_ptr<Work> Communicator::broadcast(Buffer buf, int root, Algo algo, bool async) {
  require_host(rank_, Collective::kBroadcast, "x", buf);
  require(root >= 0 && root < size_, rank_, Collective::kBroadcast, [&] { return root_in_range(root, size_); });
  Call c;
  c.call.kind = Collective::kBroadcast;
  c.call.in = c.call.out = buf;
  c.call.root = root;
  c.algo = algo;
  return submit(std::move(c), async);
}

std::shared_ptr<Work> Communicator::reduce(Buffer in, Buffer out, ReduceOp op, int root, bool async) {
  require(root >= 0 && root < size_, rank_, Collective::kReduce, [&] { return root_in_range(root, size_); });
  check_reduction(rank_, Collective::kReduce, in, out, op);
  Call c;
  c.call.kind = Collective::kReduce;
  c.call.in = in;
  c.call.out = out;
  c.call.op = op;
  c.call.root = root;
  return submit(std::move(c), async);
}

std::shared_ptr<Work> Communicator::allgather(Buffer in, Buffer out, bool async) {
  require_host(rank_, Collective::kAllgather, "x", in);
  require_host(rank_, Collective::kAllgather, "out", out);
  require(out.count == in.count * static_cast<std::size_t>(size_) && in.dtype == out.dtype, rank_,
          Collective::kAllgather, [&] {
            return "out: expected " + std::to_string(in.count * static_cast<std::size_t>(size_)) + " " +
                   dtype_name(in.dtype) + " elements (size * x.size), got " + elements(out);
          });
  Call c;
  c.call.kind = Collective::kAllgather;
  c.call.in = in;
  c.call.out = out;
  return submit(std::move(c), async);
}

std::shared_ptr<Work> Communicator::reduce_scatter(Buffer in, Buffer out, ReduceOp op, bool async) {
  require_host(rank_, Collective::kReduceScatter, "x", in);
  require_host(rank_, Collective::kReduceScatter, "out", out);
  require(out.count * static_cast<std::size_t>(size_) == in.count && in.dtype == out.dtype, rank_,
          Collective::kReduceScatter, [&] {
            return "x: expected " + std::to_string(out.count * static_cast<std::size_t>(size_)) + " " +
                   dtype_name(out.dtype) + " elements (size * out.size), got " + elements(in);
          });
  require(op != ReduceOp::kAvg || dtype_is_float(in.dtype), rank_, Collective::kReduceScatter,
          [&] { return avg_needs_float(in); });
  Call c;
  c.call.kind = Collective::kReduceScatter;
  c.call.in = in;
  c.call.out = out;
  c.call.op = op;
  return submit(std::move(c), async);
}

std::shared_ptr<Work> Communicator::barrier(bool async) { return meet(Collective::kBarrier, async); }

std::shared_ptr<Work> Communicator::meet(Collective kind, bool async) {
  Call c;
  c.call.kind = kind;
  c.call.in.dtype = c.call.out.dtype = DType::kUInt8;
  return submit(std::move(c), async);
}

void Communicator::check_p2p_args(Collective kind, int peer, int tag) const {
  const char* peer_name = kind == Collective::kSend ? "dst" : "src";
  require(peer >= 0 && peer < size_, rank_, kind, [&] {
    return std::string(peer_name) + ": expected 0 <= " + peer_name + " < " + std::to_string(size_) + ", got " +
           std::to_string(peer);
  });
  require(tag >= 0 && tag <= max_user_tag(), rank_, kind, [&] {
    return "tag: expected an int in [0, " + std::to_string(max_user_tag()) + "], got " + std::to_string(tag);
  });
  throw_if_broken(collective_name(kind));
}

std::shared_ptr<P2pWork> Communicator::send(Buffer buf, const MessageShape& shape, int dst, int tag) {
  require_host(rank_, Collective::kSend, "x", buf);
  check_p2p_args(Collective::kSend, dst, tag);
  return p2p_->send(buf, shape, dst, tag);
}

std::shared_ptr<P2pWork> Communicator::recv(Buffer buf, const MessageShape& shape, int src, int tag) {
  require_host(rank_, Collective::kRecv, "x", buf);
  check_p2p_args(Collective::kRecv, src, tag);
  return p2p_->recv(buf, shape, src, tag);
}

std::shared_ptr<P2pWork> Communicator::send_device(Buffer buf, const MessageShape& shape, int dst, int tag,
                                                   std::shared_ptr<DeviceEnd> device) {
  check_p2p_args(Collective::kSend, dst, tag);
  return p2p_->send_device(buf, shape, dst, tag, std::move(device));
}

std::shared_ptr<P2pWork> Communicator::recv_device(Buffer buf, const MessageShape& shape, int src, int tag,
                                                   std::shared_ptr<DeviceEnd> device) {
  check_p2p_args(Collective::kRecv, src, tag);
  return p2p_->recv_device(buf, shape, src, tag, std::move(device));
}

}  // namespace collex
