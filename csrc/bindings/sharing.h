// Ordinary NumPy arrays moved onto shared pages when they come back to
// collectives (sharing.cpp says which, and when they are released).
#pragma once

#include <pybind11/pybind11.h>

#include "collex/core/communicator.h"

namespace collex::bindings {

namespace py = pybind11;

// Called with the GIL for each NumPy array a collective on `c` reads or writes:
// counts the array's owner and moves its pages on the second call.
void offer_pages(Communicator& c, py::handle x);

// Releases the regions of owners whose memory moved since they were shared:
// before any call publishes addresses, so none names memory that is not its.
void release_moved_pages();

}  // namespace collex::bindings
