// A minimal harness for the core's C++ tests: CHECK / CHECK_EQ record a failure ("FAIL
// file:line") and go on; run_scenarios() runs named scenarios and turns the failures into the
// exit status (0: all passed, 1: some check failed).
#pragma once

#include <cstdio>
#include <initializer_list>

namespace omnilimit::test {

inline int& failures() {
  static int count = 0;
  return count;
}

inline void fail(const char* file, int line, const char* what) {
  std::fprintf(stderr, "FAIL %s:%d: %s\n", file, line, what);
  ++failures();
}

struct Scenario {
  const char* name;
  void (*run)();
};

inline int run_scenarios(std::initializer_list<Scenario> scenarios) {
  for (const Scenario& s : scenarios) {
    const int before = failures();
    s.run();
    std::printf("%s %s\n", failures() == before ? "ok  " : "FAIL", s.name);
  }
  return failures() == 0 ? 0 : 1;
}

}  // namespace omnilimit::test

#define CHECK(cond)                                                      \
  do {                                                                   \
    if (!(cond)) ::omnilimit::test::fail(__FILE__, __LINE__, #cond);     \
  } while (0)

#define CHECK_EQ(a, b)                                                           \
  do {                                                                           \
    if (!((a) == (b))) ::omnilimit::test::fail(__FILE__, __LINE__, #a " == " #b); \
  } while (0)
