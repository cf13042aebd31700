// A call's print (what peers compare), its hash (what tags carry) and its
// description (what mismatch messages say).
#include <initializer_list>
#include <sstream>

#include "collex/algorithms/algorithm.h"
#include "collex/common/fingerprint_hash.h"

namespace collex {

CallPrint print_of(const CollectiveCall& c) {
  CallPrint p;
  p.kind = static_cast<std::uint32_t>(c.kind);
  p.dtype = static_cast<std::uint32_t>(c.in.dtype);
  p.op = reduces(c.kind) ? static_cast<std::uint32_t>(c.op) : 0;
  p.root = rooted(c.kind) ? c.root : 0;
  p.count = c.count();
  return p;
}

std::uint32_t print_hash(const CallPrint& p) {
  Fnv1a hash;
  for (std::uint64_t v : {std::uint64_t{p.kind}, std::uint64_t{p.dtype}, std::uint64_t{p.op},
                          static_cast<std::uint64_t>(static_cast<std::uint32_t>(p.root)), p.count}) {
    hash.mix(v);
  }
  const std::uint64_t h = hash.value();
  return static_cast<std::uint32_t>(h ^ (h >> 32));
}

std::string describe_call(const CallPrint& c) {
  const auto kind = static_cast<Collective>(c.kind);
  std::ostringstream o;
  if (meets_only(kind) && c.count == 0) return std::string(collective_name(kind)) + "()";
  o << collective_name(kind) << "(count=" << c.count << ", " << dtype_name(static_cast<DType>(c.dtype));
  if (reduces(kind)) o << ", op=" << reduce_op_name(static_cast<ReduceOp>(c.op));
  if (rooted(kind)) o << ", root=" << c.root;
  o << ")";
  return o.str();
}

}  // namespace collex
