// LoopNotifier and AsyncWait (see async_wait.hpp).
#include "async_wait.hpp"

#include <pybind11/stl.h>

#include <sys/eventfd.h>
#include <unistd.h>

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

void LoopNotifier::close() {
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
      .def("close", &LoopNotifier::close, "Drops what is pending and closes the eventfd.");

  py::class_<AsyncWait, std::shared_ptr<AsyncWait>>(m, "AsyncWait", R"doc(
One coroutine's wait in a limiter's queue, woken through its loop's LoopNotifier. `future` is
resolved (with None) by the loop's drain when the core wakes the waiter: look again.)doc")
      .def(py::init<std::shared_ptr<LoopNotifier>>(), py::arg("notifier"))
      .def_readwrite("future", &AsyncWait::future);
}

}  // namespace omnilimit::bindings
