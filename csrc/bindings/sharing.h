// Ordinary NumPy arrays moved onto shared pages when they come back to
// collectives (sharing.cpp says which, and when they are released).
#pragma once

#include <pybind11/pybind11.h>

#include "collex/core/communicator.h"

namespace collex::bindings {

namespace py = pybind11;

// Called with the GIL for each NumPy array a collective on `c` reads or writes:
// counts the array's owner and moves its pages once it keeps coming back, or
// at once with `now` (arrays that the caller says will be read step after
// step: a GradientReducer's gradients).
void offer_pages(Communicator& c, py::handle x, bool now = false);

// Releases the regions of owners whose memory moved since they were shared:
// before any call publishes addresses, so none names memory that is not its.
void release_moved_pages();

}  // namespace collex::bindings
