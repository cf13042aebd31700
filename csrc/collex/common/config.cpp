#include "collex/common/config.h"

#include <cerrno>
#include <cstdlib>
#include <string>

#include "collex/common/errors.h"

namespace collex {
namespace {

const char* env(const char* name) {
  const char* v = std::getenv(name);
  return (v != nullptr && *v != '\0') ? v : nullptr;
}

[[noreturn]] void bad(const char* name, const char* value, const char* expected) {
  throw InvalidArgument(std::string("collex: environment variable ") + name + "=" + value + ": expected " + expected);
}

double parse_positive_double(const char* name, const char* v) {
  char* end = nullptr;
  errno = 0;
  double d = std::strtod(v, &end);
  if (errno != 0 || end == v || *end != '\0' || !(d > 0)) bad(name, v, "a positive number");
  return d;
}

long long parse_int(const char* name, const char* v, long long lo) {
  char* end = nullptr;
  errno = 0;
  long long x = std::strtoll(v, &end, 10);
  // Accept K/M/G suffixes for byte counts.
  if (end != v && (*end == 'K' || *end == 'k'))
    x <<= 10, ++end;
  else if (end != v && (*end == 'M' || *end == 'm'))
    x <<= 20, ++end;
  else if (end != v && (*end == 'G' || *end == 'g'))
    x <<= 30, ++end;
  if (errno != 0 || end == v || *end != '\0' || x < lo) bad(name, v, "an integer");
  return x;
}

}  // namespace

Config Config::from_env(double timeout_s) {
  Config c;
  // An explicit timeout (init(timeout=)) wins; otherwise COLLEX_TIMEOUT, else 300 s.
  c.timeout_s = timeout_s > 0 ? timeout_s : 300.0;
  if (const char* v = env("COLLEX_ALGO")) {
    std::string s(v);
    if (s != "auto" && s != "ring" && s != "tree" && s != "direct" && s != "hier") {
      bad("COLLEX_ALGO", v, "auto, ring, tree, direct or hier");
    }
    c.algo = s;
  }
  if (const char* v = env("COLLEX_TRANSPORT")) {
    std::string s(v);
    if (s != "auto" && s != "mpi" && s != "shm") bad("COLLEX_TRANSPORT", v, "auto, mpi or shm");
    c.transport = s;
  }
  if (const char* v = env("COLLEX_MIDSIZE_COPY")) {
    std::string s(v);
    if (s != "auto" && s != "slots" && s != "attach") bad("COLLEX_MIDSIZE_COPY", v, "auto, slots or attach");
    c.midsize_copy = s;
  }
  if (const char* v = env("COLLEX_STAGE_WRITES")) {
    std::string s(v);
    if (s != "auto" && s != "ordinary" && s != "streaming")
      bad("COLLEX_STAGE_WRITES", v, "auto, ordinary or streaming");
    c.stage_writes = s;
  }
  if (const char* v = env("COLLEX_RESULT_WRITES")) {
    std::string s(v);
    if (s != "auto" && s != "size" && s != "ordinary" && s != "streaming")
      bad("COLLEX_RESULT_WRITES", v, "auto, size, ordinary or streaming");
    c.result_writes = s;
  }
  if (const char* v = env("COLLEX_COPY_LOOP")) {
    std::string s(v);
    if (s != "auto" && s != "one-stream" && s != "two-pages")
      bad("COLLEX_COPY_LOOP", v, "auto, one-stream or two-pages");
    c.copy_loop = s;
  }
  if (const char* v = env("COLLEX_CUDA_IPC")) c.cuda_ipc = v;
  if (const char* v = env("COLLEX_CUDA_ORDER")) c.cuda_order = v;
  if (const char* v = env("COLLEX_CHUNK_BYTES")) {
    c.chunk_bytes = static_cast<std::size_t>(parse_int("COLLEX_CHUNK_BYTES", v, 64));
    c.chunk_bytes_set = true;
  }
  if (const char* v = env("COLLEX_TIMEOUT"); v != nullptr && !(timeout_s > 0))
    c.timeout_s = parse_positive_double("COLLEX_TIMEOUT", v);
  if (const char* v = env("COLLEX_WARN_AFTER")) c.warn_after_s = parse_positive_double("COLLEX_WARN_AFTER", v);
  if (const char* v = env("COLLEX_CHECK")) c.check = parse_int("COLLEX_CHECK", v, 0) != 0;
  if (const char* v = env("COLLEX_SHARE_PAGES")) c.share_pages = parse_int("COLLEX_SHARE_PAGES", v, 0) != 0;
  if (const char* v = env("COLLEX_DEBUG")) c.debug = static_cast<int>(parse_int("COLLEX_DEBUG", v, 0));
  if (const char* v = env("COLLEX_NODE_SIZE")) c.node_size = static_cast<int>(parse_int("COLLEX_NODE_SIZE", v, 1));
  return c;
}

std::vector<std::pair<std::string, std::string>> Config::shared_settings() const {
  return {{"COLLEX_ALGO", algo},
          {"COLLEX_TRANSPORT", transport},
          {"COLLEX_CHUNK_BYTES", chunk_bytes_set ? std::to_string(chunk_bytes) : "unset"},
          {"COLLEX_CHECK", check ? "1" : "0"},
          {"COLLEX_NODE_SIZE", node_size > 0 ? std::to_string(node_size) : "unset"},
          {"COLLEX_MIDSIZE_COPY", midsize_copy},
          {"COLLEX_STAGE_WRITES", stage_writes},
          {"COLLEX_RESULT_WRITES", result_writes},
          {"COLLEX_CUDA_IPC", cuda_ipc.empty() ? "unset" : cuda_ipc},
          {"COLLEX_CUDA_ORDER", cuda_order.empty() ? "unset" : cuda_order}};
}

}  // namespace collex
