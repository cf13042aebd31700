#include "collex/algorithms/message_runner.h"

#include <algorithm>

#include "collex/transport/transport.h"

namespace collex {

ExecArgs MessageRunner::args(void* data, DType dtype, ReduceOp op, std::uint32_t tag_base) const {
  ExecArgs a;
  a.data = data;
  a.dtype = dtype;
  a.op = op;
  a.divisor = static_cast<double>(settings_.size);
  a.tag_base = tag_base;
  a.timeout_s = settings_.timeout_s;
  a.warn_after_s = settings_.warn_after_s;
  a.op_mask = tags_.op_mask();
  a.hash_mask = tags_.hash_mask();
  a.watch = watch_;
  a.call = running_;
  return a;
}

std::uint32_t MessageRunner::tag(const CollectiveCall& call, int channel) const {
  return tags_.collective(call.seq, channel, print_hash(print_of(call)));
}

// Between nodes every message costs a round trip (a rendezvous, over TCP), and
// over a TCP link 512 KiB chunks made 64 MiB all-reduces stall now and then for a
// retransmission timeout (bench/README.md): there, large blocks go in chunks of
// up to 4 MiB, at least 4 per block so that the pipeline stays full.
constexpr std::size_t kNetworkChunkBytes = 4 * 1024 * 1024;

std::size_t MessageRunner::chunk_elements(std::size_t block_bytes, DType dtype, bool across_nodes) const {
  std::size_t bytes = settings_.chunk_bytes;
  if (across_nodes && !settings_.chunk_bytes_set && bytes < kNetworkChunkBytes) {
    bytes = std::clamp(block_bytes / 4, bytes, kNetworkChunkBytes);
  }
  return std::max<std::size_t>(1, bytes / dtype_size(dtype));
}

std::size_t MessageRunner::chunk_for(const CollectiveCall& call, const Site& site) const {
  const std::size_t message = std::max(call.in.bytes(), call.out.bytes());
  return chunk_elements(message / static_cast<std::size_t>(site.size), call.in.dtype, site.across_nodes());
}

void MessageRunner::run_call(const Schedule& schedule, Transport& transport, const CollectiveCall& call, void* data,
                             const void* input, const char* algo) {
  const bool bytewise = meets_only(call.kind);
  ExecArgs a = args(data, bytewise ? DType::kUInt8 : call.in.dtype, call.op, tag(call));
  a.input = input;
  const OpLabel label{settings_.rank, collective_name(call.kind), call.seq, algo, call.in.dtype, call.in.bytes()};
  note_label(settings_.debug, label);
  run(schedule, transport, a, label);
}

void MessageRunner::run(const Schedule& schedule, Transport& transport, const ExecArgs& args, const OpLabel& label) {
  execute(schedule, transport, args, label, staging_);
}

void MessageRunner::abandon_staging() {
  new std::vector<char>(std::move(staging_.bytes));  // NOLINT: deliberate leak
}

}  // namespace collex
