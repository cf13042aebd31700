// Settings read from COLLEX_* environment variables, once per communicator.
#pragma once

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

namespace collex {

struct Config {
  std::string algo = "auto";             // COLLEX_ALGO: auto|ring|tree|direct|hier
  std::string transport = "auto";        // COLLEX_TRANSPORT: auto|mpi|shm
  std::size_t chunk_bytes = 512 * 1024;  // COLLEX_CHUNK_BYTES: pipelining granularity
  bool chunk_bytes_set = false;          // COLLEX_CHUNK_BYTES was given (no larger chunks between nodes)
  double timeout_s = 300.0;              // COLLEX_TIMEOUT (init(timeout=) when not set)
  double warn_after_s = 60.0;            // COLLEX_WARN_AFTER: a wait this long says who is missing
  bool check = false;                    // COLLEX_CHECK: compare call fingerprints
  int debug = 0;                         // COLLEX_DEBUG: 0 quiet, 1 ops, 2 steps
  int node_size = 0;                     // COLLEX_NODE_SIZE: pretend nodes of k ranks (0: real nodes)
  std::string midsize_copy = "auto";     // COLLEX_MIDSIZE_COPY: auto|slots|attach (see Communicator)
  std::string stage_writes = "auto";     // COLLEX_STAGE_WRITES: auto|ordinary|streaming (direct::Op::stream_stage)
  std::string result_writes = "auto";  // COLLEX_RESULT_WRITES: auto|size|ordinary|streaming (direct::Op::result_stores)
  bool share_pages = true;             // COLLEX_SHARE_PAGES: move reused arrays onto shared pages
  std::string copy_loop = "auto";      // COLLEX_COPY_LOOP: auto|one-stream|two-pages (kernels::CopyLoop)
  // Read by the Python layer at each call of CUDA arrays (collex.cuda); here as
  // given at creation, only to be compared across the ranks ("": unset).
  std::string cuda_ipc, cuda_order;  // COLLEX_CUDA_IPC, COLLEX_CUDA_ORDER

  // The settings that choose a communicator's protocol, as (variable, value):
  // every rank of a communicator must have the same (Topology checks). The
  // others (timeouts, debug output, the copy loop, shared pages) may differ.
  std::vector<std::pair<std::string, std::string>> shared_settings() const;

  // Reads the environment. `timeout_s` > 0 is an explicit timeout that wins over
  // COLLEX_TIMEOUT; pass 0 when the caller gave none.
  // Throws InvalidArgument naming the variable when a value cannot be parsed.
  static Config from_env(double timeout_s);
};

}  // namespace collex
