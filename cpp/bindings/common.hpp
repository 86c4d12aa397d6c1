// Shared pieces of the omnilimit._core bindings.
//
// Why some methods bypass pybind11. pybind11's generic dispatcher costs about 190 ns per call on
// the machines we measure (280 ns with a keyword argument), several times the whole work of an
// uncontended acquire. The hot methods (acquire, release, record_request, __enter__, __exit__)
// are therefore plain METH_FASTCALL|METH_KEYWORDS functions attached to the pybind11 classes as
// method descriptors (about 20 ns per call). Everything else (construction, properties, cold
// methods, exception translation) goes through pybind11 as usual.
#pragma once

#include <pybind11/pybind11.h>

#include <cxxabi.h>

#include <atomic>
#include <cstdint>

#include "omnilimit/clock.hpp"
#include "omnilimit/histogram.hpp"
#include "omnilimit/pause.hpp"
#include "omnilimit/shm_view.hpp"
#include "omnilimit/window.hpp"

namespace omnilimit::bindings {

namespace py = pybind11;

// ---- objects that must be repaired in a forked child -------------------------------------------

// Binding-level objects that own core state register here on construction and leave on
// destruction. Both happen with the GIL held, and fork() runs with the GIL held by the forking
// thread, so the list needs no lock of its own and is consistent in the child.
class ForkAware {
 public:
  ForkAware();
  virtual ~ForkAware();
  ForkAware(const ForkAware&) = delete;
  ForkAware& operator=(const ForkAware&) = delete;
  virtual void reinit_after_fork() noexcept = 0;

 private:
  friend void reinit_all_after_fork() noexcept;
  ForkAware* prev_ = nullptr;
  ForkAware* next_ = nullptr;
};

void reinit_all_after_fork() noexcept;

// ---- errors ------------------------------------------------------------------------------------

// omnilimit.LimiterTimeout (a TimeoutError) and omnilimit.LimiterClosed (a RuntimeError),
// created by the module at import.
extern PyObject* limiter_timeout_error;
extern PyObject* limiter_closed_error;

// ---- the fast methods --------------------------------------------------------------------------

// The C++ object behind `self`, an instance of the pybind11 class that carries the method (or of
// a Python subclass). Sets TypeError and returns nullptr when __init__ never ran.
template <class T>
T* self_ptr(PyObject* self) {
  auto* inst = reinterpret_cast<py::detail::instance*>(self);
  if (inst->simple_layout) {
    if (!inst->simple_holder_constructed) {
      PyErr_Format(PyExc_TypeError, "%s.__init__() was not called", Py_TYPE(self)->tp_name);
      return nullptr;
    }
    return static_cast<T*>(inst->simple_value_holder[0]);
  }
  try {  // Python-side multiple inheritance: let pybind11 find the right sub-object.
    return py::handle(self).cast<T*>();
  } catch (const std::exception&) {
    PyErr_Format(PyExc_TypeError, "%s.__init__() was not called", Py_TYPE(self)->tp_name);
    return nullptr;
  }
}

using FastMethod = PyObject* (*)(PyObject*, PyObject* const*, Py_ssize_t, PyObject*);

// Attaches a null-terminated static table of METH_FASTCALL methods to a pybind11 class.
void add_fast_methods(py::handle cls, PyMethodDef* table);

// A table entry for a METH_FASTCALL | METH_KEYWORDS function; `doc` starts with its signature.
inline PyMethodDef fast_method(const char* name, FastMethod function, const char* doc) {
  return {name, reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(function)),
          METH_FASTCALL | METH_KEYWORDS, doc};
}

// For methods that take no arguments. Returns false with TypeError set otherwise.
inline bool no_arguments(const char* method, Py_ssize_t nargs, PyObject* kwnames) {
  if (nargs == 0 && (kwnames == nullptr || PyTuple_GET_SIZE(kwnames) == 0)) return true;
  PyErr_Format(PyExc_TypeError, "%s() takes no arguments", method);
  return false;
}

// For methods that take exactly `expected` positional arguments. Returns false with TypeError set
// otherwise.
inline bool fixed_arguments(const char* method, Py_ssize_t expected, Py_ssize_t nargs, PyObject* kwnames) {
  if (nargs == expected && (kwnames == nullptr || PyTuple_GET_SIZE(kwnames) == 0)) return true;
  PyErr_Format(PyExc_TypeError, "%s() takes %zd positional arguments", method, expected);
  return false;
}

// An instant on the core's clock (an int of ns). Returns false with the error set otherwise.
inline bool parse_instant(PyObject* value, Nanos* instant) {
  const long long n = PyLong_AsLongLong(value);
  if (n == -1 && PyErr_Occurred()) return false;
  *instant = static_cast<Nanos>(n);
  return true;
}

// Parses the optional single argument of method `method`, given positionally or by the keyword
// `interned_name`. *value stays nullptr when it is absent. Returns false with TypeError set on a
// bad call.
bool parse_optional_arg(const char* method, PyObject* interned_name,
                        PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames, PyObject** value);

// The same for `count` optional arguments named `names` (interned), in that order. values[i] must
// be nullptr on entry and stays so for an argument not given.
bool parse_optional_args(const char* method, PyObject* const* names, Py_ssize_t count, PyObject* const* args,
                         Py_ssize_t nargs, PyObject* kwnames, PyObject** values);

// The timeout contract: None or +inf wait forever (kForever), 0 tries once, a positive number of
// seconds waits that long. Negative, NaN, bool or non-numeric values raise ValueError.
// Returns false with the error set.
bool parse_timeout(PyObject* timeout, Nanos* timeout_ns);

// Runs the body of a fast method, turning C++ exceptions into Python ones (except the forced
// unwind of a thread that CPython ends with pthread_exit while the interpreter shuts down).
template <class Body>
PyObject* guarded(Body&& body) {
  try {
    return body();
  } catch (abi::__forced_unwind&) {
    throw;  // a thread exiting during interpreter shutdown (pthread_exit): let it unwind
  } catch (py::error_already_set& e) {
    e.restore();
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
  } catch (...) {
    PyErr_SetString(PyExc_RuntimeError, "unknown C++ exception in omnilimit._core");
  }
  return nullptr;
}

// (buckets, sum_us, max_ns) of a wait histogram: its non-empty buckets as (lower_ns, upper_ns,
// count) (register_histogram.cpp; the limiters' _wait_buckets() and WaitHistogram.buckets()).
py::tuple histogram_buckets(const WaitHistogram& histogram);

// For _peek_segment (peek.cpp): the figures every shared limiter's segment holds, added to `out`
// (admitted, timed_out, denied, rate_limited, pauses, paused_for, current_rpm, the wait quantiles
// and wait_buckets); and a concurrency limiter's segment read (None: not one of this layout).
void add_common_figures(py::dict& out, const Pause& pause, const RequestWindow& window,
                        const std::atomic<std::int64_t>& admitted, const std::atomic<std::int64_t>& blocked,
                        const std::atomic<std::int64_t>& denied, const WaitHistogram& waits);
py::object peek_concurrency(const SegmentView& view);

// ---- registration ------------------------------------------------------------------------------

void register_gcra(py::module_& m);
void register_histogram(py::module_& m);
void register_peek(py::module_& m);
void register_rate_core(py::module_& m);
void register_semaphore(py::module_& m);
void register_window(py::module_& m);

}  // namespace omnilimit::bindings
