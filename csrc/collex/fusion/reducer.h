// Data-parallel gradient exchange: gradients are grouped into buckets (see
// bucketer.h) and each bucket is all-reduced asynchronously, to the average
// over the ranks, as soon as its last gradient is ready. On one node an
// uncompressed bucket is reduced where its gradients lie (the parts that peers
// cannot read in place, small arrays and large ones' private first and last
// pages, through copies that the all-reduce makes: staging.h); otherwise it
// is packed into a fusion buffer (converted to fp16 or bf16 on the way when compressing, with
// error feedback), reduced, and unpacked. Those packings and unpackings run on
// the communicator's engine around the bucket's all-reduce, so the caller's
// thread only marks gradients ready and goes on with its backward pass.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "collex/common/buffer.h"
#include "collex/common/memory.h"
#include "collex/fusion/bucketer.h"
#include "collex/fusion/staging.h"

namespace collex {
class Communicator;
class SymmetricMemory;
class Work;
}  // namespace collex

namespace collex::fusion {

enum class Compression { kNone, kFp16, kBf16 };

class GradientReducer {
 public:
  // Collective over `comm` (every rank passes gradients of the same counts and
  // dtypes in the same order). Gradients must be floating point and must not
  // overlap; they are referenced, not copied, until the reducer is destroyed.
  // `huge_pages`: gradients that peers will read in place are backed with huge
  // pages once, here (Communicator::prepare_peer_reads). `shapes_digest`: a hash
  // of what the caller knows of the gradients beyond their counts (their shapes),
  // compared across the ranks with the rest.
  GradientReducer(std::shared_ptr<Communicator> comm, std::vector<Buffer> gradients, std::size_t cap_bytes,
                  std::size_t first_cap_bytes, Compression compression, bool error_feedback, bool huge_pages,
                  std::uint64_t shapes_digest = 0);
  ~GradientReducer();  // waits for buckets still in flight
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  // Gradient i is final for this step. Buckets launch in bucket order, each as
  // soon as it and every bucket before it are complete (so every rank issues
  // the same all-reduces in the same order, whatever order ready() comes in).
  void ready(std::size_t i);
  // Waits for every bucket; the gradients then hold the average over the ranks.
  // Ends the step: ready() may be called again for the next one.
  void wait();
  // ready() for every gradient not yet marked (in backward order), then wait().
  void reduce();

  const std::vector<Bucket>& buckets() const { return buckets_; }
  // The dtype bucket b travels in, and how it is reduced: "span" (its gradients
  // fill one span of memory, reduced where it lies), "segments" (separate
  // arrays, read and written where they lie by the node's direct algorithm,
  // but for those in packed(b)) or "packed" (through a fusion buffer:
  // compression, or ranks on several nodes).
  DType wire_dtype(std::size_t b) const { return slots_[b].wire; }
  // The gradients of a "segments" bucket that peers read from its fusion buffer.
  const std::vector<std::size_t>& packed(std::size_t b) const { return slots_[b].packed; }
  const char* path(std::size_t b) const;
  bool symmetric() const { return symmetric_ != nullptr; }
  // Bytes of this rank's gradients that peers read in place and that lie on huge
  // pages after construction (whether it moved them or they were there already).
  std::size_t huge_page_bytes() const { return huge_page_bytes_; }
  // The rounding residual kept for gradient i (error feedback), or null.
  float* residual(std::size_t i);

 private:
  struct Slot {
    DType wire = DType::kFloat32;
    bool compressed = false;
    void* span = nullptr;                               // the members' memory when they fill one span; else null
    std::shared_ptr<const std::vector<Span>> segments;  // else the members' memory, when reduced where it lies
    std::vector<std::size_t> packed;                    // ... but for these gradients, copies in `fusion` (staging.h)
    std::size_t staged_count = 0;                   // elements staged in `fusion`: theirs and others' first and last
    std::shared_ptr<const std::vector<Span>> home;  // when some are: where the members lie (lay_out)
    char* fusion = nullptr;                         // the packed bucket otherwise
    float* residuals = nullptr;                     // error feedback for the bucket's elements, or null
    std::size_t pending = 0;                        // members not yet ready this step
    float amax = 0.0f;                              // fp16: the largest magnitude, over every rank
    float scale = 1.0f;                             // what the bucket was multiplied by when packed
    std::shared_ptr<Work> amax_work, work;
  };

  void launch(std::size_t b);
  void pack(std::size_t b);
  void unpack(std::size_t b);
  void find_local_amax(std::size_t b);
  void* find_span(const Bucket& bucket) const;
  // Per gradient: what of it peers would read from a copy (this rank's view;
  // the ranks then agree).
  std::vector<Staging> staging_wanted() const;
  void check_same_everywhere(const std::vector<Gradient>& shapes, std::size_t cap_bytes, std::size_t first_cap_bytes,
                             Compression compression, std::uint64_t shapes_digest);
  std::string prefix(const char* method) const;

  std::shared_ptr<Communicator> comm_;
  std::vector<Buffer> gradients_;
  std::vector<Bucket> buckets_;
  std::vector<Slot> slots_;
  std::vector<std::size_t> bucket_of_;  // gradient -> bucket
  std::vector<bool> marked_;            // gradient -> ready this step
  std::size_t next_launch_ = 0;
  std::shared_ptr<SymmetricMemory> symmetric_;  // fusion buffers, when the ranks share a window
  std::vector<char> private_fusion_;            // ... otherwise
  std::vector<float> residuals_;
  std::size_t huge_page_bytes_ = 0;
};

}  // namespace collex::fusion
