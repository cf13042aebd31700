// The exception types of collex. Bindings map each onto a Python class of the
// same name (InvalidArgument onto ValueError); nothing else crosses the boundary.
#pragma once

#include <stdexcept>
#include <string>

namespace collex {

// Base of every runtime failure of a collective.
class CollexError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A wait passed its deadline; the communicator is broken afterwards.
class CollectiveTimeout : public CollexError {
 public:
  using CollexError::CollexError;
};

// Ranks issued different operations (detected with COLLEX_CHECK=1, or by size).
class CollectiveMismatch : public CollexError {
 public:
  using CollexError::CollexError;
};

// A previous failure poisoned the communicator; every later call raises this.
class CommunicatorBroken : public CollexError {
 public:
  using CollexError::CollexError;
};

// A bad argument caught before anything touched the wire (maps to ValueError).
class InvalidArgument : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// The wait was interrupted by a signal (Ctrl-C); Python raises the pending exception.
class Interrupted : public std::runtime_error {
 public:
  Interrupted() : std::runtime_error("interrupted") {}
};

}  // namespace collex
