#include "collex/core/fingerprint.h"

#include <sstream>
#include <vector>

#include "collex/algorithms/message_runner.h"
#include "collex/algorithms/ring.h"
#include "collex/common/errors.h"

namespace collex {
namespace {

// What the check compares: the call, and its sequence number.
struct Fingerprint {
  std::uint64_t seq = 0;
  CallPrint print{};
  bool operator==(const Fingerprint& o) const { return seq == o.seq && print == o.print; }
};

}  // namespace

void check_fingerprints(const CollectiveCall& call, const Site& site) {
  MessageRunner& m = *site.messages;
  std::vector<Fingerprint> all(static_cast<std::size_t>(site.size));
  all[static_cast<std::size_t>(site.rank)] = {call.seq, print_of(call)};
  Schedule s;
  const std::size_t n = sizeof(Fingerprint) * all.size();
  ring::allgather(s, site.rank, site.size, n, n, 0);
  // The ring uses channel 0 only, so the check's messages get channel 7 of this
  // operation, without the call's hash: they must meet whatever the ranks called.
  ExecArgs a =
      m.args(all.data(), DType::kUInt8, ReduceOp::kSum, m.tags().collective(call.seq, TagSpace::kCheckChannel, 0));
  a.op_mask = 0;
  a.call = nullptr;
  m.run(s, *site.world, a, OpLabel{site.rank, collective_name(call.kind), call.seq, "check", DType::kUInt8, n});
  bool same = true;
  for (const auto& f : all) same = same && f == all[0];
  if (same) return;
  std::ostringstream o;
  o << "[rank " << site.rank << "] collex." << collective_name(call.kind) << ": ranks issued different collectives:";
  for (const Fingerprint& f : all) {
    o << "\n  rank " << (&f - all.data()) << ": " << describe_call(f.print) << " seq=" << f.seq;
  }
  throw CollectiveMismatch(o.str());
}

}  // namespace collex
