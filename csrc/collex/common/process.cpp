#include "collex/common/process.h"

#include <signal.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace collex {

bool process_ended(pid_t pid) {
  if (pid <= 0) return false;
  if (kill(pid, 0) != 0) return errno == ESRCH;
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
  FILE* f = std::fopen(path, "r");
  if (f == nullptr) return false;
  char buf[256] = {};
  const std::size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  const char* close = std::strrchr(buf, ')');  // "pid (name) state ..."
  return n > 0 && close != nullptr && close[1] == ' ' && close[2] == 'Z';
}

}  // namespace collex
