// Proportional prioritized replay (Schaul et al. 2016, "Prioritized
// Experience Replay", section 3.3): slot i is drawn with probability
//
//   P(i) = p_i^alpha / sum_k p_k^alpha     over the valid slots k,
//   p_i  = |TD error_i| + eps              as last reported for slot i,
//
// and a new transition starts at the largest priority reported so far, so it
// is drawn soon after it is written.
//
//   ReplayRing ── OnWrite(i) ──────► p_i = max priority (slot i holds a new step)
//              ── SetValid(i, v) ──► leaf i = v ? p_i^alpha : 0
//   learner ──── Update(i, |d|) ───► p_i = |d| + eps (leaf i too if valid)
//   Draw(n) ── stratified: row b takes the leaf holding (b + U_b) / n * total
//
// Validity is the ring's (csrc/replay_ring.h: ComputeValid, the same rule the
// uniform sampler is told); this class only weighs what it is told is valid.
// Invariants: leaf i == (valid_[i] ? pow(priority_[i], alpha) : 0), exactly;
// an invalid slot is therefore never drawn (a zero leaf is never entered, see
// SumTree). priority_ is kept for every slot, valid or not: a slot that turns
// valid (its n-step return completed by later adds) weighs in with the
// priority it was given, and save/load keeps them all. eps > 0 and alpha in
// [0, 1] keep every valid leaf at least min(eps, 1) > 0: no valid transition
// starves.
#ifndef DQNFAST_CSRC_PRIORITIZED_SAMPLER_H_
#define DQNFAST_CSRC_PRIORITIZED_SAMPLER_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "rng.h"
#include "sampler.h"
#include "sum_tree.h"

namespace dqnfast {

class PrioritizedSampler final : public Sampler {
 public:
  PrioritizedSampler(int64_t size, double alpha, double eps)
      : alpha_(alpha), eps_(eps), valid_(size, 0), priority_(size, 0.0), tree_(size) {}

  void SetValid(int64_t index, bool valid) override {
    const uint8_t v = valid ? 1 : 0;
    if (valid_[index] == v) return;
    valid_[index] = v;
    num_valid_ += valid ? 1 : -1;
    tree_.Set(index, valid ? Weigh(priority_[index]) : 0.0);
  }

  void OnWrite(int64_t index) override { SetPriority(index, max_priority_); }

  void Reset(const std::vector<uint8_t>& valid) override {
    const int64_t n = tree_.size();
    std::vector<double> leaves(n, 0.0);
    num_valid_ = 0;
    for (int64_t i = 0; i < n; ++i) {
      valid_[i] = valid[i] ? 1 : 0;
      num_valid_ += valid_[i];
      if (valid_[i]) leaves[i] = Weigh(priority_[i]);
    }
    tree_.Assign(leaves);
  }

  bool IsValid(int64_t index) const override { return valid_[index] != 0; }
  int64_t NumValid() const override { return num_valid_; }

  // Stratified: the total is cut into n equal segments and row b draws
  // uniformly within segment b. The expected number of rows holding i is
  // exactly n * P(i), as with n independent draws, with less variance (a
  // batch spreads over the whole priority mass). Rows come out in slot order.
  void Draw(Rng* rng, int64_t n, int64_t* out) const override {
    const double total = tree_.Total();
    for (int64_t b = 0; b < n; ++b) {
      out[b] =
          tree_.Find((static_cast<double>(b) + rng->Uniform()) * total / static_cast<double>(n));
    }
  }

  double Probability(int64_t index) const override { return tree_.Get(index) / tree_.Total(); }

  int64_t BytesPerSlot() const override { return BytesPerSlotBound(); }
  static int64_t BytesPerSlotBound() {
    return sizeof(uint8_t) + sizeof(double) + SumTree::kMaxBytesPerLeaf;
  }

  // p_i = |td| + eps; the caller checked td >= 0 and finite.
  void Update(int64_t index, double td) { SetPriority(index, td + eps_); }

  double alpha() const { return alpha_; }
  double eps() const { return eps_; }
  double max_priority() const { return max_priority_; }
  void set_max_priority(double p) { max_priority_ = p; }
  // Raw p_i of every slot (for save/load; call Reset after writing them).
  double* priorities() { return priority_.data(); }

 private:
  double Weigh(double p) const { return std::pow(p, alpha_); }

  void SetPriority(int64_t index, double p) {
    priority_[index] = p;
    max_priority_ = std::max(max_priority_, p);
    if (valid_[index]) tree_.Set(index, Weigh(p));
  }

  double alpha_;
  double eps_;
  double max_priority_ = 1.0;  // the largest p reported so far; new transitions start here
  int64_t num_valid_ = 0;
  std::vector<uint8_t> valid_;
  std::vector<double> priority_;
  SumTree tree_;
};

}  // namespace dqnfast

#endif  // DQNFAST_CSRC_PRIORITIZED_SAMPLER_H_
