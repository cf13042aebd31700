// What a failure message says about the operation being run. Kept as plain
// fields and formatted only when a message is needed: collectives run far more
// often than they fail.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "collex/common/dtype.h"

namespace collex {

struct OpLabel {
  int rank = 0;
  const char* collective = "";
  std::uint64_t seq = 0;
  const char* algo = "";
  DType dtype = DType::kUInt8;
  std::size_t bytes = 0;

  std::string describe() const;  // "[rank 1] allreduce seq=42 float32 4194304 B algo=ring"
};

// Prints an operation's label to stderr when COLLEX_DEBUG is 1 or more.
void note_label(int debug, const OpLabel& label);

}  // namespace collex
