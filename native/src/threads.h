// The addon's thread pool: the only compute parallelism in qlora-ts. Work is split statically
// (thread t always gets the same contiguous range), so results are bit-identical run to run
// for a given thread count.
#pragma once
#include <cstdint>
#include <functional>

namespace qlora {

int num_threads();
void set_num_threads(int n);

// Calls fn(begin, end, thread) on each thread's contiguous share of [0, n). The calling thread
// takes share 0. Shares may be empty when n < threads (fn is not called for empty shares).
void parallel_for(int64_t n, const std::function<void(int64_t begin, int64_t end, int thread)>& fn);

// Same, but the caller chooses the grain: shares are multiples of `grain` (except the last).
void parallel_for_grain(int64_t n, int64_t grain,
                        const std::function<void(int64_t begin, int64_t end, int thread)>& fn);

// Flush denormals to zero on the current thread (x86). Worker threads do this at start; kernels
// running on the caller thread use DenormalGuard to set and restore it.
struct DenormalGuard {
  DenormalGuard();
  ~DenormalGuard();
  unsigned saved;
};

}  // namespace qlora
