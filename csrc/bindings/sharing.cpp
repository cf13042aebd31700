// Which ordinary NumPy arrays move onto shared pages (Communicator::share_pages,
// transport/shm/shared_pages.h), and when they stop: the part that needs
// to know the arrays' owners, which only Python objects tell.
//
// An array is offered on every collective call that passes it; the allocation
// behind it (the NumPy array owning the memory, at the end of its chain of
// bases) moves the kSightings-th time it comes. The move costs about what 20
// calls save (allocating the shared pages dominates: 0.7-0.9 ms per MiB on the
// project's VM, against 0.04 ms per MiB saved per call), so arrays made for a
// call or two never pay for it, while a training loop's, reused every step, do
// once. A weak reference to the owner
// releases the region before the owner's memory is freed; an owner whose
// memory was replaced meanwhile (ndarray.__setstate__ does that; resize, which
// reallocates, is refused by NumPy for arrays with weak references) is released
// before the next call, since its old addresses may hold another array by then.
#include "bindings/sharing.h"

#include <pybind11/numpy.h>

#include <algorithm>
#include <unordered_map>

#include "collex/transport/shm/shared_pages.h"

namespace collex::bindings {
namespace {

constexpr int kSightings = 4;
constexpr std::size_t kOfferBytes = 1 << 20;  // the smallest array a collective offers

struct Owner {
  py::object weak;           // a weak reference to the owning array, whose callback forgets it
  std::uintptr_t data = 0;   // where its memory was when last seen
  int sightings = 0;         // calls that passed it (or a view of it)
  bool tried = false;        // its move was tried (once: one that declined is not tried again)
  std::uint64_t region = 0;  // its shared region, once moved
};

// By the owner's address: an entry goes (its weak reference's callback) before
// the address can name another object. Guarded by the GIL.
std::unordered_map<PyObject*, Owner>& owners() {
  static auto* map = new std::unordered_map<PyObject*, Owner>();  // outlives the interpreter's teardown
  return *map;
}
std::size_t shared_owners = 0;  // owners with a region: the sweep's work

// Where `owner`'s memory is now. Raw: also read from a dying owner, whose
// fields NumPy leaves intact until after its weak references' callbacks.
std::uintptr_t data_of(PyObject* owner) {
  return reinterpret_cast<std::uintptr_t>(py::detail::array_proxy(owner)->data);
}

// Drops `key`'s entry, releasing its region: its pages keep their contents
// unless the owner's memory is still where it was shared and about to be freed.
void forget(PyObject* key, bool freeing) {
  auto& map = owners();
  auto it = map.find(key);
  if (it == map.end()) return;
  if (it->second.region != 0) {
    Communicator::release_pages(it->second.region, !(freeing && data_of(key) == it->second.data));
    --shared_owners;
  }
  map.erase(it);
}

// The array that owns the memory of `x` (x itself, or the end of its bases), or
// null when that is not a NumPy array owning its data (a buffer, a memory map).
PyObject* owner_of(py::handle x) {
  py::handle a = x;
  for (int depth = 0; depth < 64; ++depth) {
    if (!py::isinstance<py::array>(a)) return nullptr;
    auto arr = py::reinterpret_borrow<py::array>(a);
    if (arr.owndata()) return a.ptr();
    py::object base = arr.base();
    if (base.is_none()) return nullptr;
    a = base;  // kept alive by the array that holds it
  }
  return nullptr;
}

}  // namespace

void release_moved_pages() {
  if (shared_owners == 0) return;
  std::vector<PyObject*> moved;
  for (auto& [key, o] : owners()) {
    if (o.region == 0) continue;
    if (data_of(key) != o.data) moved.push_back(key);
  }
  for (PyObject* key : moved) forget(key, false);
}

void offer_pages(Communicator& c, py::handle x, bool now) {
  if (!c.config().share_pages || c.local_size() < 2) return;
  auto arr = py::reinterpret_borrow<py::array>(x);
  // Collectives of arrays under 1 MiB stage or stream through the slots and
  // never read a peer in place; a reducer's gradients are read in place from
  // the smallest region up.
  const std::size_t least = now ? shm::kMinSharedBytes : kOfferBytes;
  if (static_cast<std::size_t>(arr.nbytes()) < least) return;
  PyObject* key = owner_of(x);
  if (key == nullptr) return;
  auto owner = py::reinterpret_borrow<py::array>(key);
  const auto data = reinterpret_cast<std::uintptr_t>(owner.data());
  const auto bytes = static_cast<std::size_t>(owner.nbytes());
  auto& map = owners();
  auto it = map.find(key);
  if (it == map.end()) {
    py::cpp_function gone([key](py::handle) { forget(key, true); });
    py::object weak;
    try {
      weak = py::weakref(key, gone);
    } catch (py::error_already_set&) {
      return;  // an owner without weak references: its end could not be seen, so it never moves
    }
    it = map.emplace(key, Owner{std::move(weak), data}).first;
  } else if (it->second.data != data) {
    forget(key, false);  // moved (its memory replaced) since: start over
    return offer_pages(c, x, now);
  }
  it->second.sightings = now ? std::max(it->second.sightings, kSightings) : it->second.sightings + 1;
  if (it->second.sightings < kSightings || it->second.tried) return;
  it->second.tried = true;
  std::uint64_t region = 0;
  {
    py::gil_scoped_release release;
    region = c.share_pages(Span{data, bytes});
  }
  // Another thread may have changed the map while the GIL was released.
  it = map.find(key);
  if (region == 0 || it == map.end() || it->second.region == region) return;
  if (it->second.region != 0) {  // another thread shared it meanwhile (as a different region: unreachable)
    Communicator::release_pages(region, true);
    return;
  }
  it->second.region = region;
  ++shared_owners;
}

}  // namespace collex::bindings
