// omnilimit._core: the module, its errors, fork handling and the helpers of the fast methods.
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstring>
#include <system_error>

#include "acquire_methods.hpp"
#include "async_wait.hpp"
#include "omnilimit/shm_mutex.hpp"
#include "omnilimit/shm_segment.hpp"
#include "common.hpp"
#include "wait.hpp"

namespace omnilimit::bindings {

PyObject* limiter_timeout_error = nullptr;
PyObject* limiter_closed_error = nullptr;

namespace {

ForkAware* fork_aware_head = nullptr;  // guarded by the GIL
unsigned long signal_thread_ident = 0;  // guarded by the GIL

}  // namespace

ForkAware::ForkAware() {
  next_ = fork_aware_head;
  if (next_ != nullptr) next_->prev_ = this;
  fork_aware_head = this;
}

ForkAware::~ForkAware() {
  if (prev_ != nullptr) prev_->next_ = next_; else fork_aware_head = next_;
  if (next_ != nullptr) next_->prev_ = prev_;
}

void reinit_all_after_fork() noexcept {
  signal_thread_ident = PyThread_get_thread_ident();  // the forking thread is the child's main one
  for (ForkAware* p = fork_aware_head; p != nullptr; p = p->next_) p->reinit_after_fork();
}

bool in_signal_thread() { return PyThread_get_thread_ident() == signal_thread_ident; }

void add_fast_methods(py::handle cls, PyMethodDef* table) {
  for (PyMethodDef* def = table; def->ml_name != nullptr; ++def) {
    py::object descriptor = py::reinterpret_steal<py::object>(
        PyDescr_NewMethod(reinterpret_cast<PyTypeObject*>(cls.ptr()), def));
    if (!descriptor) throw py::error_already_set();
    cls.attr(def->ml_name) = descriptor;
  }
}

bool parse_optional_args(const char* method, PyObject* const* names, Py_ssize_t count, PyObject* const* args,
                         Py_ssize_t nargs, PyObject* kwnames, PyObject** values) {
  const Py_ssize_t nkw = kwnames == nullptr ? 0 : PyTuple_GET_SIZE(kwnames);
  if (nargs > count) {
    PyErr_Format(PyExc_TypeError, "%s() takes at most %zd argument%s (%zd given)", method, count,
                 count == 1 ? "" : "s", nargs + nkw);
    return false;
  }
  for (Py_ssize_t i = 0; i < nargs; ++i) values[i] = args[i];
  for (Py_ssize_t k = 0; k < nkw; ++k) {
    PyObject* key = PyTuple_GET_ITEM(kwnames, k);
    Py_ssize_t slot = -1;
    for (Py_ssize_t i = 0; i < count && slot < 0; ++i) {  // interned names: usually a pointer match
      if (key == names[i]) slot = i;
    }
    for (Py_ssize_t i = 0; i < count && slot < 0; ++i) {
      const int equal = PyUnicode_Compare(key, names[i]);
      if (equal == -1 && PyErr_Occurred()) return false;
      if (equal == 0) slot = i;
    }
    if (slot < 0) {
      PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%U'", method, key);
      return false;
    }
    if (slot < nargs || values[slot] != nullptr) {
      PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%U'", method, key);
      return false;
    }
    values[slot] = args[nargs + k];
  }
  return true;
}

bool parse_optional_arg(const char* method, PyObject* interned_name,
                        PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames, PyObject** value) {
  return parse_optional_args(method, &interned_name, 1, args, nargs, kwnames, value);
}

// numpy.bool_ (numpy.bool in numpy 2) is a number to Python but a flag to its user: refused, as bool is.
bool is_numpy_bool(PyObject* value) {
  const char* name = Py_TYPE(value)->tp_name;
  return std::strcmp(name, "numpy.bool_") == 0 || std::strcmp(name, "numpy.bool") == 0;
}

bool parse_timeout(PyObject* timeout, Nanos* timeout_ns) {
  if (timeout == Py_None) {
    *timeout_ns = kForever;
    return true;
  }
  double seconds;
  if (PyFloat_CheckExact(timeout)) {
    seconds = PyFloat_AS_DOUBLE(timeout);
  } else if (PyLong_CheckExact(timeout)) {
    seconds = PyLong_AsDouble(timeout);  // no temporary float object, unlike PyFloat_AsDouble
    if (seconds == -1.0 && PyErr_Occurred()) {
      PyErr_Clear();  // an int too large for a double
      seconds = PyObject_RichCompareBool(timeout, py::int_(0).ptr(), Py_GT) == 1 ? HUGE_VAL : -1.0;
    }
  } else if (PyBool_Check(timeout) || is_numpy_bool(timeout) ||
             !(PyLong_Check(timeout) || PyFloat_Check(timeout) || PyNumber_Check(timeout))) {
    PyErr_Format(PyExc_ValueError,
                 "timeout must be None or a number of seconds >= 0, got %R", timeout);
    return false;
  } else {
    seconds = PyFloat_AsDouble(timeout);  // int, float subclass, Decimal, numpy scalars
    if (seconds == -1.0 && PyErr_Occurred()) {
      const bool huge_int = PyErr_ExceptionMatches(PyExc_OverflowError) && PyLong_Check(timeout);
      PyErr_Clear();
      if (huge_int && PyObject_RichCompareBool(timeout, py::int_(0).ptr(), Py_GT) == 1) {
        seconds = HUGE_VAL;  // an int too large for a double: forever in practice
      } else {
        PyErr_Format(PyExc_ValueError,
                     "timeout must be None or a number of seconds >= 0, got %R", timeout);
        return false;
      }
    }
  }
  if (std::isnan(seconds) || seconds < 0.0) {
    PyErr_Format(PyExc_ValueError, "timeout must be None or a number of seconds >= 0, got %R",
                 timeout);
    return false;
  }
  *timeout_ns = std::isinf(seconds) ? kForever : seconds_to_ns(seconds);
  return true;
}

}  // namespace omnilimit::bindings

namespace ob = omnilimit::bindings;
namespace py = pybind11;

PYBIND11_MODULE(_core, m) {
  m.doc() = "The native core of omnilimit: GCRA token bucket, FIFO semaphore, request window.";

  ob::limiter_timeout_error = PyErr_NewExceptionWithDoc(
      "omnilimit.LimiterTimeout",
      "No slot or token could be had within the timeout (raised by `with limiter:`).",
      PyExc_TimeoutError, nullptr);
  ob::limiter_closed_error = PyErr_NewExceptionWithDoc(
      "omnilimit.LimiterClosed", "The limiter was closed while waiting, or before the call.",
      PyExc_RuntimeError, nullptr);
  if (ob::limiter_timeout_error == nullptr || ob::limiter_closed_error == nullptr) {
    throw py::error_already_set();
  }
  m.attr("LimiterTimeout") = py::handle(ob::limiter_timeout_error);
  m.attr("LimiterClosed") = py::handle(ob::limiter_closed_error);

  // Shared limiters: a segment that exists but does not fit (SharedStateError), and what the OS
  // refused (OSError with its errno: no /dev/shm, no space, no permission).
  static PyObject* shared_state_error = PyErr_NewExceptionWithDoc(
      "omnilimit.SharedStateError",
      "A shared limiter's segment exists but cannot be used as configured (foreign, truncated, of "
      "another kind or with other limits, or never initialised). The message says how to remove it.",
      PyExc_RuntimeError, nullptr);
  if (shared_state_error == nullptr) throw py::error_already_set();
  m.attr("SharedStateError") = py::handle(shared_state_error);
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const omnilimit::SegmentMismatch& e) {
      PyErr_SetString(shared_state_error, e.what());
    } catch (const std::system_error& e) {
      const py::object error = py::reinterpret_steal<py::object>(
          PyObject_CallFunction(PyExc_OSError, "is", e.code().value(), e.what()));
      if (error) PyErr_SetObject(PyExc_OSError, error.ptr());
    }
  });
  m.def("remove_shared", &omnilimit::SharedSegment::remove, py::arg("name"),
        "Removes the shared-memory segment of the shared limiter `name` (False if there was none).\n"
        "Processes that use it keep their mapping; the next one to open the name starts afresh.");

  // A wait for a shared mutex that another process holds lets this process's other threads run.
  omnilimit::set_blocking_hooks(
      []() -> void* { return PyGILState_Check() ? static_cast<void*>(PyEval_SaveThread()) : nullptr; },
      [](void* state) {
        if (state != nullptr) PyEval_RestoreThread(static_cast<PyThreadState*>(state));
      });
  m.def("_shm_prefix", &omnilimit::SharedSegment::prefix,
        "The prefix of shared limiters' segments in /dev/shm ($OMNILIMIT_SHM_PREFIX, or 'omnilimit.').");
  m.attr("FOREVER_NS") = omnilimit::kForever;
  m.def("monotonic_ns", &omnilimit::now_ns,
        "Now on the core's clock (steady_clock, the clock of time.monotonic_ns()), in ns.");
  m.def("coarse_monotonic_ns", &omnilimit::coarse_now_ns,
        "Now on the same clock at scheduler-tick resolution (the request window's clock), in ns.");

  ob::signal_thread_ident =
      py::module_::import("threading").attr("main_thread")().attr("ident").cast<unsigned long>();
  m.def("_reinit_after_fork", &ob::reinit_all_after_fork,
        "Re-initialises every live limiter's locks and waiter state (runs in a forked child).");
  py::module_::import("os").attr("register_at_fork")(py::arg("after_in_child") =
                                                          m.attr("_reinit_after_fork"));

  m.def(
      "_timeout_ns",
      [](py::handle timeout) {
        omnilimit::Nanos ns = 0;
        if (!ob::parse_timeout(timeout.ptr(), &ns)) throw py::error_already_set();
        return ns;
      },
      py::arg("timeout"),
      "A timeout as acquire() reads it, in ns (2**63 - 1: forever). Raises ValueError for a bad one.");
  // _deadline(timeout) -> (timeout_ns, deadline_ns): a coroutine's timeout read once (a raw
  // METH_O function: it runs on every acquire_async that must wait).
  static PyMethodDef deadline_def = {
      "_deadline",
      [](PyObject*, PyObject* timeout) -> PyObject* {
        omnilimit::Nanos ns = 0;
        if (!ob::parse_timeout(timeout, &ns)) return nullptr;
        const omnilimit::Nanos deadline =
            ns >= omnilimit::kForever ? omnilimit::kForever : omnilimit::saturating_add(omnilimit::now_ns(), ns);
        return Py_BuildValue("(LL)", static_cast<long long>(ns), static_cast<long long>(deadline));
      },
      METH_O,
      "_deadline(timeout) -> (timeout_ns, deadline_ns): the timeout as acquire() reads it and the instant\n"
      "on the core's clock by which the acquire must succeed (FOREVER_NS for None). Raises ValueError."};
  m.add_object("_deadline", py::reinterpret_steal<py::object>(PyCFunction_New(&deadline_def, nullptr)));
  ob::timeout_keyword = PyUnicode_InternFromString("timeout");
  if (ob::timeout_keyword == nullptr) throw py::error_already_set();
  ob::register_window(m);
  ob::register_histogram(m);
  ob::register_async(m);
  ob::register_gcra(m);
  ob::register_rate_core(m);
  ob::register_semaphore(m);
  ob::register_peek(m);
}
