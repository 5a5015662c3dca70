// SplitMix64: a tiny, fast, seedable generator whose whole state is one
// uint64, so the ring can save and restore it exactly.
#ifndef DQNFAST_CSRC_RNG_H_
#define DQNFAST_CSRC_RNG_H_

#include <cstdint>

namespace dqnfast {

class Rng {
 public:
  explicit Rng(uint64_t seed = 0) : state_(seed) {}

  uint64_t Next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }

  // Uniform integer in [0, n) (Lemire's multiply-shift; bias < n / 2^64).
  uint64_t Below(uint64_t n) {
    return static_cast<uint64_t>((static_cast<unsigned __int128>(Next()) * n) >> 64);
  }

  // Uniform double in [0, 1): the top 53 bits of one draw.
  double Uniform() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }

  uint64_t state() const { return state_; }
  void set_state(uint64_t s) { state_ = s; }

 private:
  uint64_t state_;
};

}  // namespace dqnfast

#endif  // DQNFAST_CSRC_RNG_H_
