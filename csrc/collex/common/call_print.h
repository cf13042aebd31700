// What one rank called (collective, dtype, op, root, element count), as its
// peers compare it: on the shared window every rank publishes its own beside its
// progress marker, and a rank that sees a peer's marker of the same operation
// compares the two before it reads anything the peer wrote; over MPI a rank that
// waits long tells the peer it waits for. Ranks that called different operations
// (or the same one on different sizes or dtypes) then raise instead of combining
// unrelated bytes. The fields are opaque here; a CallDescriber names them.
#pragma once

#include <cstdint>
#include <string>

namespace collex {

struct CallPrint {
  std::uint32_t kind = 0, dtype = 0, op = 0;
  std::int32_t root = 0;
  std::uint64_t count = 0;
  bool operator==(const CallPrint& o) const {
    return kind == o.kind && dtype == o.dtype && op == o.op && root == o.root && count == o.count;
  }
  bool operator!=(const CallPrint& o) const { return !(*this == o); }
};
using CallDescriber = std::string (*)(const CallPrint&);

}  // namespace collex
