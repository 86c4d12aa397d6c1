// The store and the hooks of a native core (store.hpp).
#include "store.hpp"

#include <array>

namespace omnilimit::bindings {

Outcome take_from_store(const Hooks& hooks, PyObject* limiter, PyObject* const* args, Py_ssize_t nargs) {
  static PyObject* const name = PyUnicode_InternFromString("acquire");
  if (name == nullptr) return Outcome::error;
  std::array<PyObject*, 5> stack{hooks.store.ptr(), limiter, nullptr, nullptr, nullptr};
  if (nargs > 3) {
    PyErr_SetString(PyExc_TypeError, "acquire() takes at most 3 arguments");
    return Outcome::error;
  }
  for (Py_ssize_t i = 0; i < nargs; ++i) stack[static_cast<std::size_t>(i) + 2] = args[i];
  PyObject* answer = PyObject_VectorcallMethod(name, stack.data(), static_cast<std::size_t>(nargs) + 2, nullptr);
  if (answer == nullptr) return Outcome::error;
  const int truth = PyObject_IsTrue(answer);
  Py_DECREF(answer);
  if (truth < 0) return Outcome::error;
  return truth ? Outcome::acquired : Outcome::timed_out;
}

bool give_back_to_store(const Hooks& hooks, PyObject* limiter, bool* released) {
  static PyObject* const name = PyUnicode_InternFromString("release");
  if (name == nullptr) return false;
  PyObject* stack[2] = {hooks.store.ptr(), limiter};
  PyObject* answer = PyObject_VectorcallMethod(name, stack, 2, nullptr);
  if (answer == nullptr) return false;
  const int truth = PyObject_IsTrue(answer);
  Py_DECREF(answer);
  if (truth < 0) return false;
  *released = truth != 0;
  return true;
}

py::object figure(const Hooks& hooks, const char* name, py::object local) {
  if (!hooks.has_store()) return local;
  return hooks.store.attr("figure")(name, local);
}

py::object figure(const Hooks& hooks, const char* name, py::object local, py::object arg) {
  if (!hooks.has_store()) return local;
  return hooks.store.attr("figure")(name, local, arg);
}

namespace {

// on_timeout(timeout): the message (a new reference), or nullptr with the error set. Without a
// hook: a plain message.
PyObject* timeout_message(const Hooks& hooks, PyObject* timeout) {
  if (hooks.on_timeout.is_none()) return PyUnicode_FromFormat("limit timeout after %Ss", timeout);
  return PyObject_CallOneArg(hooks.on_timeout.ptr(), timeout);
}

}  // namespace

void record_wait(const Hooks& hooks, WaitHistogram& waits, Nanos waited_ns) {
  waits.record(waited_ns);
  if (waited_ns < hooks.long_wait_ns || hooks.on_long_wait.is_none()) return;
  const py::float_ seconds(static_cast<double>(waited_ns) / 1e9);
  PyObject* result = PyObject_CallOneArg(hooks.on_long_wait.ptr(), seconds.ptr());
  if (result == nullptr) {
    PyErr_WriteUnraisable(hooks.on_long_wait.ptr());
  } else {
    Py_DECREF(result);
  }
}

bool report_timeout(const Hooks& hooks, std::atomic<std::int64_t>& blocked, Nanos timeout_ns, PyObject* timeout) {
  blocked.fetch_add(1, std::memory_order_relaxed);
  if (timeout_ns == 0 || hooks.on_timeout.is_none()) return true;  // a failed try is not a timeout: polling stays quiet
  PyObject* message = timeout_message(hooks, timeout);
  Py_XDECREF(message);
  return message != nullptr;
}

PyObject* raise_enter_timeout(const Hooks& hooks, std::atomic<std::int64_t>& blocked, PyObject* timeout) {
  blocked.fetch_add(1, std::memory_order_relaxed);
  PyObject* message = timeout_message(hooks, timeout);
  if (message != nullptr) {
    PyErr_SetObject(limiter_timeout_error, message);
    Py_DECREF(message);
  }
  return nullptr;
}

bool report_over_release(const Hooks& hooks, std::atomic<bool>& reported) {
  if (hooks.on_over_release.is_none() || reported.exchange(true, std::memory_order_relaxed)) return true;
  PyObject* result = PyObject_CallNoArgs(hooks.on_over_release.ptr());
  Py_XDECREF(result);
  return result != nullptr;
}

}  // namespace omnilimit::bindings
