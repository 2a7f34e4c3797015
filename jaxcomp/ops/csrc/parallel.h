// Parallel tasks on XLA's intra-op thread pool, for jaxcomp's FFI handlers.
#ifndef JAXCOMP_OPS_CSRC_PARALLEL_H_
#define JAXCOMP_OPS_CSRC_PARALLEL_H_

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <utility>

#include "xla/ffi/api/ffi.h"

namespace jaxcomp {

// Runs task(t) for every t in [0, tasks) on the calling thread and on up to `helpers`
// tasks scheduled on XLA's intra-op pool, each thread claiming tasks one at a time.
// A helper that starts after the caller has run out of tasks does nothing, so the
// caller waits only for helpers that are running: no deadlock when the pool is busy.
// Which thread runs a task varies from call to call, so a task must write only its
// own outputs (then the results do not depend on the schedule).
inline void ParallelTasks(xla::ffi::ThreadPool& pool, int64_t tasks, int64_t helpers,
                          std::function<void(int64_t)> task) {
  struct State {
    std::function<void(int64_t)> task;
    int64_t tasks;
    std::atomic<int64_t> next{0};
    std::mutex mu;
    std::condition_variable idle;
    bool done = false;  // guarded by mu
    int active = 0;     // guarded by mu
    void Work() {
      for (int64_t t = next.fetch_add(1); t < tasks; t = next.fetch_add(1)) task(t);
    }
  };
  auto s = std::make_shared<State>();
  s->task = std::move(task);
  s->tasks = tasks;
  helpers = std::min<int64_t>({helpers, int64_t{pool.num_threads()} - 1, tasks - 1});
  for (int64_t h = 0; h < helpers; ++h)
    pool.Schedule([s] {
      {
        std::lock_guard<std::mutex> lock(s->mu);
        if (s->done) return;
        ++s->active;
      }
      s->Work();
      std::lock_guard<std::mutex> lock(s->mu);
      if (--s->active == 0) s->idle.notify_all();
    });
  s->Work();
  std::unique_lock<std::mutex> lock(s->mu);
  s->done = true;
  s->idle.wait(lock, [&] { return s->active == 0; });
}

}  // namespace jaxcomp

#endif  // JAXCOMP_OPS_CSRC_PARALLEL_H_
