// A fixed pool of worker threads for data-parallel loops.
//
//   caller ── ParallelFor(n, fn) ──► chunk 0 runs on the caller
//                                 └─► chunks 1..T-1 run on the workers
//   returns when every chunk is done (no allocation, no task queue).
//
// The ring uses it to gather frame stacks for a batch; work items are
// independent and write disjoint output rows.
#ifndef DQNFAST_CSRC_THREAD_POOL_H_
#define DQNFAST_CSRC_THREAD_POOL_H_

#include <algorithm>
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
  explicit ThreadPool(int num_threads) : num_threads_(std::max(1, num_threads)) {
    for (int w = 1; w < num_threads_; ++w) {
      workers_.emplace_back([this, w] { WorkerLoop(w); });
    }
  }

  ~ThreadPool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    start_cv_.notify_all();
    for (auto& t : workers_) t.join();
  }

  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return num_threads_; }

  // Runs fn over [0, n) split into at most `max_chunks` contiguous chunks.
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
      chunks_ = chunks;
      pending_ = chunks - 1;
      ++generation_;
    }
    start_cv_.notify_all();
    RunChunk(0);
    std::unique_lock<std::mutex> lock(mu_);
    done_cv_.wait(lock, [this] { return pending_ == 0; });
    fn_ = nullptr;
  }

 private:
  void RunChunk(int chunk) {
    const int64_t begin = n_ * chunk / chunks_;
    const int64_t end = n_ * (chunk + 1) / chunks_;
    if (begin < end) (*fn_)(begin, end);
  }

  void WorkerLoop(int worker) {
    int64_t seen = 0;
    while (true) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        start_cv_.wait(lock, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
        if (worker >= chunks_) continue;  // this round needs fewer chunks
      }
      RunChunk(worker);
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (--pending_ == 0) done_cv_.notify_one();
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
  int chunks_ = 0;
  int pending_ = 0;
  int64_t generation_ = 0;
  bool stop_ = false;
};

}  // namespace dqnfast

#endif  // DQNFAST_CSRC_THREAD_POOL_H_
