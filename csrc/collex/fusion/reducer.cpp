#include "collex/fusion/reducer.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "collex/common/errors.h"
#include "collex/common/fingerprint_hash.h"
#include "collex/common/memory.h"
#include "collex/core/communicator.h"
#include "collex/kernels/compress_segments.h"
#include "collex/kernels/convert.h"

namespace collex::fusion {
namespace {

constexpr std::size_t kAlign = 64;

std::size_t align_up(std::size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

}  // namespace

std::string GradientReducer::prefix(const char* method) const {
  return "[rank " + std::to_string(comm_->rank()) + "] GradientReducer." + method + ": ";
}

GradientReducer::GradientReducer(std::shared_ptr<Communicator> comm, std::vector<Buffer> gradients,
                                 std::size_t cap_bytes, std::size_t first_cap_bytes, Compression compression,
                                 bool error_feedback, bool huge_pages, std::uint64_t shapes_digest)
    : comm_(std::move(comm)), gradients_(std::move(gradients)) {
  std::vector<Gradient> shapes;
  for (std::size_t i = 0; i < gradients_.size(); ++i) {
    if (!dtype_is_float(gradients_[i].dtype)) {
      throw InvalidArgument(prefix("__init__") + "gradient " + std::to_string(i) + " is " +
                            dtype_name(gradients_[i].dtype) + "; gradients must be floating point");
    }
    shapes.push_back(Gradient{gradients_[i].count, gradients_[i].dtype});
  }
  // Overlapping gradients would be packed from and unpacked into the same memory twice.
  std::vector<std::size_t> by_address(gradients_.size());
  for (std::size_t i = 0; i < by_address.size(); ++i) by_address[i] = i;
  std::sort(by_address.begin(), by_address.end(),
            [&](std::size_t a, std::size_t b) { return gradients_[a].data < gradients_[b].data; });
  for (std::size_t k = 1; k < by_address.size(); ++k) {
    const Buffer& lo = gradients_[by_address[k - 1]];
    const Buffer& hi = gradients_[by_address[k]];
    if (lo.bytes() > 0 && hi.bytes() > 0 && lo.bytes_at(lo.count) > static_cast<char*>(hi.data)) {
      throw InvalidArgument(prefix("__init__") + "gradients " + std::to_string(by_address[k - 1]) + " and " +
                            std::to_string(by_address[k]) + " overlap in memory");
    }
  }

  check_same_everywhere(shapes, cap_bytes, first_cap_bytes, compression, shapes_digest);
  buckets_ = assign_buckets(shapes, cap_bytes, first_cap_bytes);
  slots_.resize(buckets_.size());
  bucket_of_.resize(gradients_.size());
  marked_.assign(gradients_.size(), false);

  // Only float32 buckets are compressed. A bucket whose gradients fill one span
  // of memory on every rank is reduced where it lies (no packing); ranks agree
  // on which, since the reduction differs.
  // So do they on which parts of the gradients of the other buckets peers read
  // from copies (staging.h; from staging_at on), when buckets are reduced where they lie.
  const bool segments = comm_->can_reduce_segments();  // alike on every rank: same window, same settings
  const std::size_t staging_at = buckets_.size();
  std::vector<void*> local_spans(buckets_.size(), nullptr);
  std::vector<std::int32_t> agreed(buckets_.size() + (segments ? kWordsPerGradient * gradients_.size() : 0), 1);
  for (std::size_t b = 0; b < buckets_.size(); ++b) {
    Slot& s = slots_[b];
    s.compressed = compression != Compression::kNone && buckets_[b].dtype == DType::kFloat32;
    if (!s.compressed) local_spans[b] = find_span(buckets_[b]);
    agreed[b] = local_spans[b] != nullptr;
  }
  std::vector<Staging> staging(segments ? gradients_.size() : 0);
  if (segments) {
    const std::vector<Staging> wanted = staging_wanted();
    for (std::size_t i = 0; i < wanted.size(); ++i) to_words(wanted[i], &agreed[staging_at + kWordsPerGradient * i]);
  }
  if (!agreed.empty()) {
    Buffer flags{agreed.data(), agreed.size(), DType::kInt32};
    comm_->allreduce(flags, flags, ReduceOp::kMin, Algo::kAuto, /*async=*/false);
  }
  for (std::size_t i = 0; i < staging.size(); ++i) staging[i] = from_words(&agreed[staging_at + kWordsPerGradient * i]);

  std::size_t fusion_bytes = 0, residual_count = 0;
  std::vector<std::size_t> fusion_at(buckets_.size()), residual_at(buckets_.size());
  std::vector<Span> read_in_place;               // this rank's memory that peers will read where it lies
  std::vector<bool> segmented(buckets_.size());  // buckets reduced where their gradients lie, but not one span
  for (std::size_t b = 0; b < buckets_.size(); ++b) {
    Slot& s = slots_[b];
    const Bucket& bucket = buckets_[b];
    for (const Member& m : bucket.members) bucket_of_[m.gradient] = b;
    s.pending = bucket.members.size();
    s.wire = !s.compressed ? bucket.dtype : compression == Compression::kFp16 ? DType::kFloat16 : DType::kBFloat16;
    if (agreed[b] != 0) {
      s.span = local_spans[b];
      read_in_place.push_back(Span{reinterpret_cast<std::uintptr_t>(s.span), bucket.count * dtype_size(bucket.dtype)});
      continue;
    }
    if (!s.compressed && segments) {
      // Parts of the others are staged in the bucket's part of the fusion buffers.
      segmented[b] = true;
      for (const Member& m : bucket.members) {
        const Buffer& g = gradients_[m.gradient];
        if (staging[m.gradient].mode == Staging::kWhole) {
          s.packed.push_back(m.gradient);
        } else {
          read_in_place.push_back(Span{reinterpret_cast<std::uintptr_t>(g.data), g.bytes()});
        }
        s.staged_count += staging[m.gradient].staged(g.count);
      }
      if (s.staged_count == 0) continue;
    }
    fusion_at[b] = fusion_bytes;
    fusion_bytes += align_up((segmented[b] ? s.staged_count : bucket.count) * dtype_size(s.wire));
    residual_at[b] = residual_count;
    if (s.compressed && error_feedback) residual_count += bucket.count;
  }
  if (huge_pages) huge_page_bytes_ = comm_->prepare_peer_reads(read_in_place);

  // Fusion buffers in memory every rank of the node reads in place, when there is such memory.
  char* fusion = nullptr;
  if (fusion_bytes > 0) {
    try {
      symmetric_ = comm_->allocate_symmetric(fusion_bytes);
    } catch (const CollexError&) {
      symmetric_.reset();  // no room in /dev/shm: private memory works too, one copy slower
    }
    if (symmetric_) {
      fusion = static_cast<char*>(symmetric_->data());
    } else {
      private_fusion_.resize(fusion_bytes + kAlign);
      fusion = private_fusion_.data() + (kAlign - reinterpret_cast<std::uintptr_t>(private_fusion_.data()) % kAlign);
    }
  }
  residuals_.assign(residual_count, 0.0f);
  for (std::size_t b = 0; b < buckets_.size(); ++b) {
    Slot& s = slots_[b];
    if (s.span != nullptr) continue;
    if (!segmented[b] || s.staged_count > 0) s.fusion = fusion + fusion_at[b];
    if (segmented[b]) {
      SegmentTables tables = lay_out(buckets_[b], gradients_, staging, s.fusion);
      s.segments = std::move(tables.published);
      s.home = std::move(tables.home);
    }
    if (s.compressed && error_feedback) s.residuals = residuals_.data() + residual_at[b];
  }
}

GradientReducer::~GradientReducer() {
  // Work still in flight runs hooks that use this object: wait for it to end,
  // whatever it ends with, even through a Ctrl-C (which only ends one wait).
  for (Slot& s : slots_) {
    for (auto* w : {&s.amax_work, &s.work}) {
      while (*w != nullptr && !(*w)->done()) {
        try {
          (*w)->wait();
        } catch (...) {
        }
      }
    }
  }
}

// Ranks that disagree on the gradients or the settings would issue different
// all-reduces and read past each other's arrays: compare a fingerprint first.
void GradientReducer::check_same_everywhere(const std::vector<Gradient>& shapes, std::size_t cap_bytes,
                                            std::size_t first_cap_bytes, Compression compression,
                                            std::uint64_t shapes_digest) {
  Fnv1a hash;  // over everything that shapes the buckets, and the arrays' shapes
  hash.mix(shapes.size());
  for (const Gradient& g : shapes) hash.mix(g.count).mix(static_cast<std::uint64_t>(g.dtype));
  hash.mix(cap_bytes).mix(first_cap_bytes).mix(static_cast<std::uint64_t>(compression)).mix(shapes_digest);
  const auto mine = static_cast<std::int64_t>(hash.value() >> 1);  // non-negative, so that it can be negated
  std::int64_t extremes[2] = {mine, -mine};
  Buffer b{extremes, 2, DType::kInt64};
  comm_->allreduce(b, b, ReduceOp::kMin, Algo::kAuto, /*async=*/false);
  if (extremes[0] != -extremes[1]) {
    throw CollectiveMismatch(prefix("__init__") +
                             "the ranks passed different gradients (count, shapes or dtypes) or settings "
                             "(bucket sizes, compression); every rank must build the reducer alike");
  }
}

std::vector<Staging> GradientReducer::staging_wanted() const {
  std::vector<Staging> wanted(gradients_.size());
  if (comm_->size() == 1) return wanted;  // nobody reads them
  std::vector<Span> spans;
  for (const Buffer& g : gradients_) spans.push_back(Span{reinterpret_cast<std::uintptr_t>(g.data), g.bytes()});
  const std::vector<Span> shared = comm_->shared_parts(spans);
  for (std::size_t i = 0; i < spans.size(); ++i) wanted[i] = staging_of(gradients_[i], shared[i]);
  return wanted;
}

void* GradientReducer::find_span(const Bucket& bucket) const {
  std::vector<const Buffer*> members;
  for (const Member& m : bucket.members) {
    if (gradients_[m.gradient].count > 0) members.push_back(&gradients_[m.gradient]);
  }
  if (members.empty()) return nullptr;
  std::sort(members.begin(), members.end(), [](const Buffer* a, const Buffer* b) { return a->data < b->data; });
  for (std::size_t k = 1; k < members.size(); ++k) {
    if (members[k - 1]->bytes_at(members[k - 1]->count) != members[k]->data) return nullptr;
  }
  return members.front()->data;
}

const char* GradientReducer::path(std::size_t b) const {
  const Slot& s = slots_[b];
  return s.span != nullptr ? "span" : s.segments ? "segments" : "packed";
}

float* GradientReducer::residual(std::size_t i) {
  if (i >= gradients_.size()) return nullptr;
  const Slot& s = slots_[bucket_of_[i]];
  if (s.residuals == nullptr) return nullptr;
  for (const Member& m : buckets_[bucket_of_[i]].members) {
    if (m.gradient == i) return s.residuals + m.offset;
  }
  return nullptr;
}

void GradientReducer::ready(std::size_t i) {
  if (i >= gradients_.size()) {
    throw InvalidArgument(prefix("ready") + "gradient index " + std::to_string(i) + " out of range [0, " +
                          std::to_string(gradients_.size()) + ")");
  }
  if (marked_[i]) {
    throw InvalidArgument(prefix("ready") + "gradient " + std::to_string(i) +
                          " was already marked ready in this step (call wait() to end the step first)");
  }
  marked_[i] = true;
  --slots_[bucket_of_[i]].pending;
  while (next_launch_ < slots_.size() && slots_[next_launch_].pending == 0) launch(next_launch_++);
}

void GradientReducer::launch(std::size_t b) {
  Slot& s = slots_[b];
  const Bucket& bucket = buckets_[b];
  if (s.span != nullptr) {
    Buffer span{s.span, bucket.count, bucket.dtype};
    s.work = comm_->allreduce(span, span, ReduceOp::kAvg, Algo::kAuto, /*async=*/true);
    return;
  }
  if (s.segments) {
    s.work = comm_->allreduce_segments(s.segments, s.home, bucket.count, bucket.dtype, ReduceOp::kAvg, /*async=*/true);
    return;
  }
  if (s.compressed && s.wire == DType::kFloat16) {
    // The scale must be the same on every rank: agree on the largest magnitude first.
    Buffer amax{&s.amax, 1, DType::kFloat32};
    s.amax_work = comm_->allreduce_with(
        amax, amax, ReduceOp::kMax, [this, b] { find_local_amax(b); }, nullptr,
        /*async=*/true);
  }
  Buffer fused{s.fusion, bucket.count, s.wire};
  s.work = comm_->allreduce_with(
      fused, fused, ReduceOp::kSum, [this, b] { pack(b); }, [this, b] { unpack(b); },
      /*async=*/true);
}

void GradientReducer::find_local_amax(std::size_t b) {
  Slot& s = slots_[b];
  float amax = 0.0f;
  for (const Member& m : buckets_[b].members) {
    const Buffer& g = gradients_[m.gradient];
    const float* residual = s.residuals != nullptr ? s.residuals + m.offset : nullptr;
    const float a = kernels::max_abs(static_cast<const float*>(g.data), residual, g.count);
    if (a != a) {
      amax = a;
      break;
    }
    amax = std::max(amax, a);
  }
  s.amax = amax;
}

void GradientReducer::pack(std::size_t b) {
  Slot& s = slots_[b];
  const std::size_t wire_size = dtype_size(s.wire);
  if (s.compressed) s.scale = s.wire == DType::kFloat16 ? kernels::segments::fp16_scale(s.amax, comm_->size()) : 1.0f;
  for (const Member& m : buckets_[b].members) {
    const Buffer& g = gradients_[m.gradient];
    char* to = s.fusion + m.offset * wire_size;
    if (!s.compressed) {
      if (g.count > 0) std::memcpy(to, g.data, g.bytes());
      continue;
    }
    float* residual = s.residuals != nullptr ? s.residuals + m.offset : nullptr;
    kernels::compress(to, s.wire, static_cast<const float*>(g.data), residual, g.count, s.scale);
  }
}

void GradientReducer::unpack(std::size_t b) {
  Slot& s = slots_[b];
  const std::size_t wire_size = dtype_size(s.wire);
  const int p = comm_->size();
  for (const Member& m : buckets_[b].members) {
    const Buffer& g = gradients_[m.gradient];
    const char* from = s.fusion + m.offset * wire_size;
    if (s.compressed) {
      kernels::decompress(static_cast<float*>(g.data), from, s.wire, g.count, 1.0f / (s.scale * static_cast<float>(p)));
    } else {
      kernels::divide_copy(g.data, from, g.count, g.dtype, static_cast<double>(p));
    }
  }
}

void GradientReducer::wait() {
  std::exception_ptr error;
  for (std::size_t b = 0; b < next_launch_; ++b) {
    for (auto* w : {&slots_[b].amax_work, &slots_[b].work}) {
      if (*w == nullptr) continue;
      try {
        (*w)->wait();
      } catch (const Interrupted&) {
        throw;  // the work carries on; wait() may be called again
      } catch (...) {
        if (!error) error = std::current_exception();
      }
      w->reset();
    }
  }
  if (error) std::rethrow_exception(error);
  if (next_launch_ < slots_.size()) {
    std::string missing;
    int listed = 0;
    for (std::size_t i = 0; i < marked_.size(); ++i) {
      if (marked_[i]) continue;
      if (listed++ < 8) missing += (missing.empty() ? "" : ", ") + std::to_string(i);
    }
    if (listed > 8) missing += ", ... (" + std::to_string(listed) + " in all)";
    throw InvalidArgument(prefix("wait") + "gradients " + missing +
                          " were never marked ready in this step: call ready(i) for each (or reduce())");
  }
  next_launch_ = 0;
  marked_.assign(marked_.size(), false);
  for (std::size_t b = 0; b < slots_.size(); ++b) slots_[b].pending = buckets_[b].members.size();
}

void GradientReducer::reduce() {
  for (std::size_t i = marked_.size(); i-- > 0;) {
    if (!marked_[i]) ready(i);
  }
  wait();
}

}  // namespace collex::fusion
