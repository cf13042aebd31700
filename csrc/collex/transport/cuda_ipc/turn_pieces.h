// How a Piece of a turn (turns.h) is worked, for host and device alike: a
// worker takes vectors first, first + step, ... (one host thread: 0, 1, ...; a
// CUDA thread: its index in the grid, by the grid's size), so the kernel and
// its CPU stand-in run the same loop.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "collex/kernels/combine.h"
#include "collex/transport/cuda_ipc/turns.h"

namespace collex::ipc {

// Whole vectors where every address of the piece is 16-byte aligned (staging
// buffers are; a user's array at an odd offset is not), else element by element.
COLLEX_LANES bool piece_aligned(const Piece& p) {
  bool ok = true;
  for (int k = 0; k < p.outs; ++k) ok = ok && reinterpret_cast<std::uintptr_t>(p.out[k]) % kVector == 0;
  for (int q = 0; q < p.count; ++q) ok = ok && reinterpret_cast<std::uintptr_t>(p.src[q]) % kVector == 0;
  return ok;
}

// This worker's vectors and elements of `p`. Each vector (element) is read from
// every source before any out is written, so an out may be one of the sources
// (in place), as long as no other worker reads it.
template <typename Tr, ReduceOp Op>
COLLEX_LANES void work_piece(const Piece& p, std::size_t first, std::size_t step) {
  namespace el = kernels::elements;
  using S = typename Tr::S;
  const std::size_t whole = piece_aligned(p) ? p.bytes / kVector : 0;
  for (std::size_t v = first; v < whole; v += step) {
    alignas(kVector) char value[kVector];
    if (p.count == 1) {
      el::copy_vector(value, p.src[0] + v * kVector);
    } else {
      el::combine_vector_to<Tr, Op>(value, p.src, p.count, v);
    }
    for (int k = 0; k < p.outs; ++k) el::copy_vector(p.out[k] + v * kVector, value);
  }
  for (std::size_t e = whole * kVector / sizeof(S) + first; e < p.bytes / sizeof(S); e += step) {
    if (p.count == 1) {
      std::memcpy(p.out[0] + e * sizeof(S), p.src[0] + e * sizeof(S), sizeof(S));
    } else {
      el::combine_element<Tr, Op>(p.out[0], p.src, p.count, e);
    }
    for (int k = 1; k < p.outs; ++k) std::memcpy(p.out[k] + e * sizeof(S), p.out[0] + e * sizeof(S), sizeof(S));
  }
}

}  // namespace collex::ipc
