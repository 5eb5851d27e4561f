#include "threads.h"

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

#include "args.h"
#include "registry.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define QLORA_X86 1
#endif

namespace qlora {

DenormalGuard::DenormalGuard() {
#ifdef QLORA_X86
  saved = _mm_getcsr();
  _mm_setcsr(saved | 0x8040);  // FTZ | DAZ
#else
  saved = 0;
#endif
}
DenormalGuard::~DenormalGuard() {
#ifdef QLORA_X86
  _mm_setcsr(saved);
#endif
}

namespace {

/**
 * Shares are claimed, not owned: share t is normally run by worker t, but when a worker has not
 * started it by the time the caller finishes its own share (descheduled on a busy machine), the
 * caller runs it instead. A share's arithmetic depends only on its index, never on which thread
 * runs it, so results stay bit-identical; the region simply never waits for a sleeping thread.
 */
class Pool {
 public:
  explicit Pool(int n) { resize(n); }
  ~Pool() { stop(); }

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  void resize(int n) {
    if (n < 1) n = 1;
    if (n > 256) n = 256;
    stop();
    stopping_ = false;
    claimed_ = std::vector<std::atomic<uint64_t>>(static_cast<size_t>(n));
    const uint64_t start = generation_.load(std::memory_order_acquire);
    for (auto& c : claimed_) c.store(start, std::memory_order_relaxed);
    // Workers start from the current generation: a worker that starts late must still see the
    // next run() as new (reading the generation inside the thread raced with run()).
    for (int i = 1; i < n; i++) workers_.emplace_back([this, i, start] { loop(i, start); });
  }

  void run(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t, int)>& fn) {
    const int threads = size();
    if (n <= 0) return;
    if (grain < 1) grain = 1;
    const int64_t chunks = (n + grain - 1) / grain;
    if (threads == 1 || chunks == 1) {
      DenormalGuard guard;
      fn(0, n, 0);
      return;
    }
    std::lock_guard<std::mutex> serial(dispatch_);  // one parallel region at a time
    n_ = n;
    grain_ = grain;
    chunks_ = chunks;
    fn_ = &fn;
    done_.store(0, std::memory_order_relaxed);
    uint64_t gen;
    {
      std::lock_guard<std::mutex> lk(mu_);
      gen = generation_.fetch_add(1, std::memory_order_acq_rel) + 1;
    }
    cv_.notify_all();
    {
      DenormalGuard guard;
      tryRun(0, gen);
      // Then any share whose worker has not started yet.
      for (int t = 1; t < threads; t++) tryRun(t, gen);
    }
    int spins = 0;
    while (done_.load(std::memory_order_acquire) != threads) {
      if (++spins > 4000) std::this_thread::yield();
#ifdef QLORA_X86
      else _mm_pause();
#endif
    }
    fn_ = nullptr;
  }

 private:
  /** Runs share t of region `gen` unless someone already claimed it. */
  void tryRun(int t, uint64_t gen) {
    uint64_t seen = claimed_[static_cast<size_t>(t)].load(std::memory_order_acquire);
    if (seen >= gen) return;
    if (!claimed_[static_cast<size_t>(t)].compare_exchange_strong(seen, gen, std::memory_order_acq_rel)) return;
    const int threads = size();
    const int64_t c0 = chunks_ * t / threads, c1 = chunks_ * (t + 1) / threads;
    int64_t begin = c0 * grain_, end = c1 * grain_;
    if (end > n_) end = n_;
    if (begin < end) (*fn_)(begin, end, t);
    done_.fetch_add(1, std::memory_order_acq_rel);
  }

  void loop(int t, uint64_t seen) {
#ifdef QLORA_X86
    _mm_setcsr(_mm_getcsr() | 0x8040);
#endif
    for (;;) {
      // Spin a little before sleeping: the next region usually follows within microseconds.
      int spins = 0;
      while (generation_.load(std::memory_order_acquire) == seen && !stopping_.load(std::memory_order_acquire)) {
        if (++spins > 20000) {
          std::unique_lock<std::mutex> lk(mu_);
          cv_.wait(lk, [&] {
            return generation_.load(std::memory_order_acquire) != seen || stopping_.load(std::memory_order_acquire);
          });
          break;
        }
#ifdef QLORA_X86
        _mm_pause();
#endif
      }
      if (stopping_.load(std::memory_order_acquire)) return;
      seen = generation_.load(std::memory_order_acquire);
      // A claim for an older region fails (its share was run), so a late wake-up never runs stale work.
      tryRun(t, seen);
    }
  }

  void stop() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    for (auto& w : workers_) w.join();
    workers_.clear();
  }

  std::vector<std::thread> workers_;
  std::vector<std::atomic<uint64_t>> claimed_;
  std::mutex mu_, dispatch_;
  std::condition_variable cv_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> done_{0};
  std::atomic<bool> stopping_{false};
  int64_t n_ = 0, grain_ = 1, chunks_ = 0;
  const std::function<void(int64_t, int64_t, int)>* fn_ = nullptr;
};

int default_threads() {
  if (const char* env = std::getenv("QLORA_THREADS")) {
    int n = std::atoi(env);
    if (n > 0) return n;
  }
  unsigned hc = std::thread::hardware_concurrency();
  return hc == 0 ? 1 : static_cast<int>(hc);
}

Pool& pool() {
  static Pool* p = new Pool(default_threads());  // never destroyed: workers outlive static teardown
  return *p;
}

Napi::Value GetThreads(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), pool().size()); }

Napi::Value SetThreads(const Napi::CallbackInfo& info) {
  int64_t n = intArg(info, 0, "threads");
  require(n >= 1 && n <= 256, info.Env(), "threads must be in 1..256");
  pool().resize(static_cast<int>(n));
  return info.Env().Undefined();
}

QLORA_EXPORT("getThreads", GetThreads);
QLORA_EXPORT("setThreads", SetThreads);

}  // namespace

int num_threads() { return pool().size(); }
void set_num_threads(int n) { pool().resize(n); }

void parallel_for(int64_t n, const std::function<void(int64_t, int64_t, int)>& fn) { pool().run(n, 1, fn); }
void parallel_for_grain(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t, int)>& fn) {
  pool().run(n, grain, fn);
}

}  // namespace qlora
