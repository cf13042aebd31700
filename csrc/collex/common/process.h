// Whether another process of this machine has ended, for the waits that watch
// their local peers.
#pragma once

#include <sys/types.h>

namespace collex {

// True when process `pid` is gone, or a zombie its parent has not reaped yet
// (under mpirun a dead rank stays a zombie until the launcher collects it).
bool process_ended(pid_t pid);

}  // namespace collex
