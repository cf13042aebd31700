#include "collex/core/in_process.h"

#include <exception>
#include <memory>
#include <string>
#include <thread>

#include "collex/algorithms/message_runner.h"
#include "collex/common/errors.h"
#include "collex/core/tuner.h"
#include "collex/transport/local/thread_transport.h"

namespace collex {
namespace {

const Algorithm& algorithm_of(Algo algo) {
  switch (algo) {
    case Algo::kRing: return ring_algorithm();
    case Algo::kTree: return tree_algorithm();
    case Algo::kDissemination: return dissemination_algorithm();
    default: throw InvalidArgument(std::string("collex: ") + algo_name(algo) + " does not run on message transports");
  }
}

}  // namespace

void run_in_threads(Algo algo, const std::vector<CollectiveCall>& calls, const InProcessOptions& options) {
  const Algorithm& algorithm = algorithm_of(algo);
  const int size = static_cast<int>(calls.size());
  auto fabric = std::make_shared<LocalFabric>(size);
  std::vector<std::exception_ptr> errors(calls.size());
  auto rank_main = [&](int r) {
    try {
      ThreadTransport transport(fabric, r);
      MessageRunner::Settings settings;
      settings.rank = r;
      settings.size = size;
      settings.timeout_s = options.timeout_s;
      settings.warn_after_s = options.timeout_s;
      settings.chunk_bytes = options.chunk_bytes;
      settings.chunk_bytes_set = true;
      MessageRunner messages(settings, TagSpace(transport.max_tag()), nullptr, nullptr);
      std::vector<char> scratch;
      Site site;
      site.rank = site.local_rank = r;
      site.size = site.local_size = size;
      site.world = &transport;
      site.messages = &messages;
      site.scratch = &scratch;
      const CollectiveCall& call = calls[static_cast<std::size_t>(r)];
      const Offer offer = algorithm.offer(call, site, Tuner::measured_model());
      if (offer.declined) throw InvalidArgument(std::string("collex: ") + algo_name(algo) + ": " + offer.declined);
      algorithm.run(call, site);
    } catch (...) {
      errors[static_cast<std::size_t>(r)] = std::current_exception();
    }
  };
  std::vector<std::thread> threads;
  threads.reserve(calls.size());
  for (int r = 0; r < size; ++r) threads.emplace_back(rank_main, r);
  for (auto& t : threads) t.join();
  for (const auto& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace collex
