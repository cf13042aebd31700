// The communicator's entry points: each checks what the core itself relies on
// (the Python layer checks the rest first, with the same message shape),
// describes the call and queues it; point-to-point is posted at once.
#include "collex/common/errors.h"
#include "collex/core/communicator.h"
#include "collex/core/topology.h"
#include "collex/transport/shm/shm_window.h"

namespace collex {
namespace {

void require(bool ok, int rank, Collective c, const std::string& what) {
  if (!ok) throw InvalidArgument("[rank " + std::to_string(rank) + "] collex." + collective_name(c) + ": " + what);
}

}  // namespace

std::shared_ptr<Work> Communicator::allreduce(Buffer in, Buffer out, ReduceOp op, Algo algo, bool async) {
  return allreduce_with(in, out, op, nullptr, nullptr, async, algo);
}

std::shared_ptr<Work> Communicator::allreduce_with(Buffer in, Buffer out, ReduceOp op, Hook before, Hook after,
                                                   bool async, Algo algo) {
  require(in.count == out.count && in.dtype == out.dtype, rank_, Collective::kAllreduce,
          "out must match x in size and dtype");
  require(op != ReduceOp::kAvg || dtype_is_float(in.dtype), rank_, Collective::kAllreduce,
          "op='avg' needs a floating-point dtype");
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

std::shared_ptr<Work> Communicator::allreduce_segments(std::shared_ptr<const std::vector<Span>> segments,
                                                       std::size_t count, DType dtype, ReduceOp op, bool async) {
  require(can_reduce_segments(), rank_, Collective::kAllreduce,
          "segmented all-reduce needs every rank on one node with a shared window");
  std::size_t bytes = 0;
  for (const Span& s : *segments) bytes += s.bytes;
  require(bytes == count * dtype_size(dtype), rank_, Collective::kAllreduce, "segments do not add up to count");
  Call c;
  c.call.kind = Collective::kAllreduce;
  c.call.in = c.call.out = Buffer{nullptr, count, dtype};
  c.call.op = op;
  c.call.segments = segments.get();
  c.algo = Algo::kDirect;
  c.segments = std::move(segments);
  return submit(std::move(c), async);
}

std::shared_ptr<Work> Communicator::broadcast(Buffer buf, int root, Algo algo, bool async) {
  require(root >= 0 && root < size_, rank_, Collective::kBroadcast, "root out of range");
  Call c;
  c.call.kind = Collective::kBroadcast;
  c.call.in = c.call.out = buf;
  c.call.root = root;
  c.algo = algo;
  return submit(std::move(c), async);
}

std::shared_ptr<Work> Communicator::reduce(Buffer in, Buffer out, ReduceOp op, int root, bool async) {
  require(root >= 0 && root < size_, rank_, Collective::kReduce, "root out of range");
  require(in.count == out.count && in.dtype == out.dtype, rank_, Collective::kReduce,
          "out must match x in size and dtype");
  require(op != ReduceOp::kAvg || dtype_is_float(in.dtype), rank_, Collective::kReduce,
          "op='avg' needs a floating-point dtype");
  Call c;
  c.call.kind = Collective::kReduce;
  c.call.in = in;
  c.call.out = out;
  c.call.op = op;
  c.call.root = root;
  return submit(std::move(c), async);
}

std::shared_ptr<Work> Communicator::allgather(Buffer in, Buffer out, bool async) {
  require(out.count == in.count * static_cast<std::size_t>(size_) && in.dtype == out.dtype, rank_,
          Collective::kAllgather, "out must hold size * x.size elements of x's dtype");
  Call c;
  c.call.kind = Collective::kAllgather;
  c.call.in = in;
  c.call.out = out;
  return submit(std::move(c), async);
}

std::shared_ptr<Work> Communicator::reduce_scatter(Buffer in, Buffer out, ReduceOp op, bool async) {
  require(out.count * static_cast<std::size_t>(size_) == in.count && in.dtype == out.dtype, rank_,
          Collective::kReduceScatter, "x must hold size * out.size elements of out's dtype");
  require(op != ReduceOp::kAvg || dtype_is_float(in.dtype), rank_, Collective::kReduceScatter,
          "op='avg' needs a floating-point dtype");
  Call c;
  c.call.kind = Collective::kReduceScatter;
  c.call.in = in;
  c.call.out = out;
  c.call.op = op;
  return submit(std::move(c), async);
}

std::shared_ptr<Work> Communicator::barrier(bool async) {
  Call c;
  c.call.kind = Collective::kBarrier;
  c.call.in.dtype = c.call.out.dtype = DType::kUInt8;
  return submit(std::move(c), async);
}

void Communicator::check_p2p_args(Collective kind, int peer, int tag) const {
  const char* peer_name = kind == Collective::kSend ? "dst" : "src";
  require(peer >= 0 && peer < size_, rank_, kind, std::string(peer_name) + " out of range");
  require(tag >= 0 && tag <= max_user_tag(), rank_, kind, "tag out of range");
  throw_if_broken(collective_name(kind));
}

std::shared_ptr<P2pWork> Communicator::send(Buffer buf, const MessageShape& shape, int dst, int tag) {
  check_p2p_args(Collective::kSend, dst, tag);
  return p2p_->send(buf, shape, dst, tag);
}

std::shared_ptr<P2pWork> Communicator::recv(Buffer buf, const MessageShape& shape, int src, int tag) {
  check_p2p_args(Collective::kRecv, src, tag);
  return p2p_->recv(buf, shape, src, tag);
}

}  // namespace collex
