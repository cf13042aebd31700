// How the bindings' files (module.cpp, calls.cpp, testing.cpp,
// fusion.cpp) hand their parts to the module.
#pragma once

#include <pybind11/pybind11.h>

#include <memory>

#include "collex/core/communicator.h"

namespace collex::bindings {

using CommunicatorClass = pybind11::class_<Communicator, std::shared_ptr<Communicator>>;

// The checked entry of each collective and send/recv (allreduce_call, ...) on the Communicator class.
void bind_calls(CommunicatorClass& c);
// Hooks for tests: the kernels, the schedules, the copy-way chooser, and
// algorithms run on threads of this process (core/in_process.h).
void bind_testing(pybind11::module_& m);
// What a DLPack capsule describes (dlpack.cpp), for CUDA arrays without __cuda_array_interface__.
void bind_dlpack(pybind11::module_& m);

}  // namespace collex::bindings
