// A fixed pool of worker threads for data-parallel loops.
//
//   caller ── ParallelFor(n, fn) ──► the caller starts on [0, n) at once
//                                 └─► woken workers join in
//   Work is handed out in grains from a shared counter, so a worker that wakes
//   late (a futex wake costs tens of microseconds) takes less of it instead of
//   holding the caller up; returns when every grain is done and no worker is
//   still inside fn (no allocation, no task queue).
//
// The ring uses it to gather frame stacks for a batch; work items are
// independent and write disjoint output rows.
#ifndef DQNFAST_CSRC_THREAD_POOL_H_
#define DQNFAST_CSRC_THREAD_POOL_H_

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace dqnfast {

class ThreadPool {
 public:
  using RangeFn = std::function<void(int64_t begin, int64_t end)>;

  // num_threads counts the calling thread: 1 means no workers at all.
  // Throws std::system_error if the OS refuses a thread (a thread limit, an
  // address-space cap). The workers already started are stopped and joined
  // first: they wait on start_cv_, and destroying a condition variable that
  // threads still wait on blocks forever (or is undefined).
  explicit ThreadPool(int num_threads) : num_threads_(std::max(1, num_threads)) {
    workers_.reserve(num_threads_ - 1);
    try {
      for (int w = 1; w < num_threads_; ++w) {
        workers_.emplace_back([this, w] { WorkerLoop(w); });
      }
    } catch (...) {
      StopAndJoin();
      throw;
    }
  }

  ~ThreadPool() { StopAndJoin(); }

  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return num_threads_; }

  // Runs fn over [0, n) on at most `max_chunks` threads (the caller included),
  // in contiguous grains of about n / (4 * threads) items.
  void ParallelFor(int64_t n, const RangeFn& fn, int max_chunks = 0) {
    int chunks = num_threads_;
    if (max_chunks > 0) chunks = std::min(chunks, max_chunks);
    chunks = static_cast<int>(std::min<int64_t>(chunks, n));
    if (chunks <= 1) {
      if (n > 0) fn(0, n);
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      fn_ = &fn;
      n_ = n;
      grain_ = std::max<int64_t>(1, n / (4 * chunks));
      next_.store(0, std::memory_order_relaxed);
      chunks_ = chunks;
      ++generation_;
    }
    start_cv_.notify_all();
    RunGrains();
    std::unique_lock<std::mutex> lock(mu_);
    done_cv_.wait(lock, [this] { return active_ == 0; });
    fn_ = nullptr;
  }

 private:
  void StopAndJoin() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    start_cv_.notify_all();
    for (auto& t : workers_) t.join();
  }

  void RunGrains() {
    while (true) {
      const int64_t begin = next_.fetch_add(grain_, std::memory_order_relaxed);
      if (begin >= n_) return;
      (*fn_)(begin, std::min(begin + grain_, n_));
    }
  }

  void WorkerLoop(int worker) {
    int64_t seen = 0;
    while (true) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        start_cv_.wait(lock, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
        // this round needs fewer threads, or the others already took every grain
        if (worker >= chunks_ || next_.load(std::memory_order_relaxed) >= n_) continue;
        ++active_;
      }
      RunGrains();
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (--active_ == 0) done_cv_.notify_one();
      }
    }
  }

  const int num_threads_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable start_cv_;
  std::condition_variable done_cv_;
  const RangeFn* fn_ = nullptr;
  int64_t n_ = 0;
  int64_t grain_ = 1;
  std::atomic<int64_t> next_{0};
  int chunks_ = 0;
  int active_ = 0;  // workers inside RunGrains this round
  int64_t generation_ = 0;
  bool stop_ = false;
};

}  // namespace dqnfast

#endif  // DQNFAST_CSRC_THREAD_POOL_H_
