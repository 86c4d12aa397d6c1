// LoopNotifier and AsyncWait (see async_wait.hpp).
#include "async_wait.hpp"

#include <pybind11/stl.h>

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <utility>

namespace omnilimit::bindings {

LoopNotifier::LoopNotifier() : fd_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
  if (fd_ < 0) {
    PyErr_SetFromErrno(PyExc_OSError);
    throw py::error_already_set();
  }
}

LoopNotifier::~LoopNotifier() { close(); }

void LoopNotifier::post(std::shared_ptr<AsyncWait> w) noexcept {
  std::lock_guard<std::mutex> lock(mutex_);  // also keeps close() from closing the fd under the write
  if (fd_ < 0) return;                        // the loop is gone: nobody will look
  const bool first = ready_.empty();
  try {
    ready_.push_back(std::move(w));
  } catch (...) {
    return;  // out of memory: the waiter still wakes at its timeout
  }
  if (first) {
    // A full counter (EAGAIN) is already readable; any other failure leaves the waiter to its
    // timeout, which is all that could be done.
    const std::uint64_t one = 1;
    while (::write(fd_, &one, sizeof one) < 0 && errno == EINTR) {
    }
  }
}

std::vector<std::shared_ptr<AsyncWait>> LoopNotifier::take() {
  std::vector<std::shared_ptr<AsyncWait>> taken;
  std::lock_guard<std::mutex> lock(mutex_);
  if (fd_ < 0) return taken;
  // Read (clear) the counter before taking the list: a post after this read either lands in
  // this list or writes the counter again, so none is missed.
  std::uint64_t count = 0;
  while (::read(fd_, &count, sizeof count) < 0 && errno == EINTR) {
  }
  taken.swap(ready_);
  return taken;
}

void resolve_future(const py::object& future) {
  static PyObject* const done_name = PyUnicode_InternFromString("done");
  static PyObject* const set_result_name = PyUnicode_InternFromString("set_result");
  if (future.is_none()) return;
  PyObject* done = PyObject_CallMethodNoArgs(future.ptr(), done_name);
  if (done == nullptr) throw py::error_already_set();
  const int is_done = PyObject_IsTrue(done);
  Py_DECREF(done);
  if (is_done < 0) throw py::error_already_set();
  if (is_done) return;
  PyObject* result = PyObject_CallMethodOneArg(future.ptr(), set_result_name, Py_None);
  if (result == nullptr) throw py::error_already_set();
  Py_DECREF(result);
}

namespace {
constexpr const char* kWaitHandleName = "omnilimit.wait";
void drop_wait_handle(PyObject* capsule) {
  delete static_cast<std::shared_ptr<AsyncWait>*>(PyCapsule_GetPointer(capsule, kWaitHandleName));
}
}  // namespace

PyObject* wait_handle(std::shared_ptr<AsyncWait> w) {
  auto* held = new std::shared_ptr<AsyncWait>(std::move(w));
  PyObject* handle = PyCapsule_New(held, kWaitHandleName, drop_wait_handle);
  if (handle == nullptr) delete held;
  return handle;
}

AsyncWait* handle_wait(PyObject* handle) {
  auto* held = static_cast<std::shared_ptr<AsyncWait>*>(PyCapsule_GetPointer(handle, kWaitHandleName));
  return held == nullptr ? nullptr : held->get();
}

void LoopNotifier::drain() {
  const std::vector<std::shared_ptr<AsyncWait>> taken = take();
  for (const std::shared_ptr<AsyncWait>& w : taken) resolve_future(w->future);
  // `taken` goes here, outside the mutex (see close()).
}

namespace {
bool future_done(const py::object& future) {
  static PyObject* const done_name = PyUnicode_InternFromString("done");
  PyObject* done = PyObject_CallMethodNoArgs(future.ptr(), done_name);
  if (done == nullptr) throw py::error_already_set();
  const int is_done = PyObject_IsTrue(done);
  Py_DECREF(done);
  if (is_done < 0) throw py::error_already_set();
  return is_done != 0;
}
}  // namespace

void LoopNotifier::wake_at(py::object future, Nanos at_ns) {
  timed_.push_back(Timed{at_ns, next_sequence_++, std::move(future)});
  std::push_heap(timed_.begin(), timed_.end(), Later{});
  if (timed_.size() > compact_above_) compact();
  if (at_ns < armed_at_) arm(at_ns);
}

void LoopNotifier::arm(Nanos at_ns) {
  armed_at_ = at_ns;
  if (arm_ && !arm_.is_none()) arm_(at_ns);
}

void LoopNotifier::expire() {
  armed_at_ = kForever;
  std::vector<py::object> due;
  const Nanos now = now_ns();
  while (!timed_.empty() && timed_.front().at_ns <= now) {
    std::pop_heap(timed_.begin(), timed_.end(), Later{});
    due.push_back(std::move(timed_.back().future));
    timed_.pop_back();
  }
  while (!timed_.empty() && future_done(timed_.front().future)) {  // resolved otherwise
    std::pop_heap(timed_.begin(), timed_.end(), Later{});
    timed_.pop_back();
  }
  if (!timed_.empty()) arm(timed_.front().at_ns);
  for (const py::object& future : due) resolve_future(future);
}

void LoopNotifier::compact() {
  std::vector<Timed> live;
  live.reserve(timed_.size());
  for (Timed& t : timed_) {
    if (!future_done(t.future)) live.push_back(std::move(t));
  }
  std::make_heap(live.begin(), live.end(), Later{});
  timed_.swap(live);
  compact_above_ = std::max(kMinCompact, 2 * timed_.size());
}

void LoopNotifier::close() {
  timed_.clear();  // (with the GIL: close() is called from Python)
  arm_ = py::none();
  std::vector<std::shared_ptr<AsyncWait>> dropped;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (fd_ < 0) return;
    ::close(fd_);
    fd_ = -1;
    dropped.swap(ready_);
  }
  // `dropped` goes here, outside the mutex: destroying a waiter may leave a queue, whose
  // re-planning may post to this notifier.
}

void AsyncWait::wake() noexcept {
  try {
    notifier_->post(shared_from_this());
  } catch (const std::bad_weak_ptr&) {
    // Being destroyed (it is leaving the queue under the same mutex): nothing to wake.
  }
}

AsyncWait::~AsyncWait() {
  // Leave the semaphore's queue; a slot handed over and never claimed goes to the next waiter.
  if (semaphore != nullptr && semaphore->cancel(slot) && !slot_claimed) semaphore->release();
  ticket.reset();  // leaves the token queue (nothing is committed before a ticket's turn)
  if (schedule != nullptr) schedule->stop_listening(listener);
  if (standby != nullptr) standby->stop_listening(standby_listener);
  // A reservation never slept out goes back; the callers standing by may use it.
  if (bucket != nullptr && bucket->refund(reservation, now_ns()) && standby != nullptr) standby->notify();
  end_booking();
  stop_counting();
}

void register_async(py::module_& m) {
  py::class_<LoopNotifier, std::shared_ptr<LoopNotifier>>(m, "LoopNotifier", R"doc(
One per event loop: the coroutines of that loop that the core woke, and an eventfd that becomes
readable when there are some (the loop watches it with add_reader and calls take()).)doc")
      .def(py::init<>())
      .def_property_readonly("fd", &LoopNotifier::fd, "The eventfd (-1 once closed).")
      .def("take", &LoopNotifier::take, "The waiters woken since the last take(), each once; clears the eventfd.")
      .def("drain", &LoopNotifier::drain,
           "take(), and resolves each waiter's future with None unless it is done (the loop's reader).")
      .def("close", &LoopNotifier::close, "Drops what is pending and closes the eventfd.")
      .def("set_arm", &LoopNotifier::set_arm, py::arg("arm"),
           "arm(at_ns) is called whenever the earliest timed wait becomes earlier than the timer armed:\n"
           "it must (re)arm one loop timer calling expire() at that instant.")
      .def("wake_at", &LoopNotifier::wake_at, py::arg("future"), py::arg("at_ns"),
           "Resolves `future` with None when the core's clock reaches `at_ns`, unless it is done by then.")
      .def("expire", &LoopNotifier::expire,
           "The loop timer fired: resolves the futures whose instant came and arms the next one.")
      .def_property_readonly("timed_count", &LoopNotifier::timed_count,
                             "Timed waits held (live, or resolved otherwise and not yet dropped).");

  py::class_<AsyncWait, std::shared_ptr<AsyncWait>>(m, "AsyncWait", R"doc(
One coroutine's wait in a limiter's queue, woken through its loop's LoopNotifier. `future` is
resolved (with None) by the loop's drain when the core wakes the waiter: look again.)doc")
      .def(py::init<std::shared_ptr<LoopNotifier>, py::object>(), py::arg("notifier"),
           py::arg("future") = py::none())
      .def_readwrite("future", &AsyncWait::future);
}

}  // namespace omnilimit::bindings
