// A sum tree: N non-negative leaf weights, one set in O(log N), the leaf that
// holds a point of [0, Total()) found in O(log N).
//
//   tree_[1]              = Total()
//   tree_[i]              = tree_[2i] + tree_[2i+1]     internal node, 1 <= i < P
//   tree_[P + j]          = weight of leaf j            0 <= j < N (N..P-1: 0)
//
// P is the smallest power of two >= N (one array, no pointers: the path of a
// leaf is its index shifted right). Invariant: every internal node holds the
// floating-point sum of its two children, recomputed from them (never adjusted
// by a delta) whenever a leaf below changes. So no rounding error accumulates
// over millions of updates, and a node is positive exactly when some leaf
// below it is: Find, which enters a child only if its sum is positive, never
// returns a zero-weight leaf.
#ifndef DQNFAST_CSRC_SUM_TREE_H_
#define DQNFAST_CSRC_SUM_TREE_H_

#include <cstdint>
#include <vector>

namespace dqnfast {

class SumTree {
 public:
  explicit SumTree(int64_t size) : size_(size) {
    leaves_ = 1;
    while (leaves_ < size_) leaves_ *= 2;
    tree_.assign(2 * leaves_, 0.0);
  }

  int64_t size() const { return size_; }
  double Total() const { return tree_[1]; }
  double Get(int64_t leaf) const { return tree_[leaves_ + leaf]; }

  void Set(int64_t leaf, double weight) {
    int64_t i = leaves_ + leaf;
    tree_[i] = weight;
    for (i >>= 1; i >= 1; i >>= 1) tree_[i] = tree_[2 * i] + tree_[2 * i + 1];
  }

  // Replaces every leaf (weights[0..size)) and rebuilds the sums in O(N).
  void Assign(const std::vector<double>& weights) {
    for (int64_t j = 0; j < leaves_; ++j) tree_[leaves_ + j] = j < size_ ? weights[j] : 0.0;
    for (int64_t i = leaves_ - 1; i >= 1; --i) tree_[i] = tree_[2 * i] + tree_[2 * i + 1];
  }

  // The leaf whose cumulative range [sum of leaves before it, + its weight)
  // holds u. Requires Total() > 0 and u >= 0; a u at or beyond Total() (from
  // rounding in the caller) gives the last positive leaf. Always a leaf of
  // positive weight (see the invariant above).
  int64_t Find(double u) const {
    int64_t i = 1;
    while (i < leaves_) {
      const double left = tree_[2 * i];
      if (u < left || tree_[2 * i + 1] <= 0.0) {
        i = 2 * i;
      } else {
        u -= left;
        i = 2 * i + 1;
      }
    }
    return i - leaves_;
  }

  // Bytes per leaf at most (2P doubles with P < 2N).
  static constexpr int64_t kMaxBytesPerLeaf = 4 * sizeof(double);

 private:
  int64_t size_;
  int64_t leaves_;  // P
  std::vector<double> tree_;
};

}  // namespace dqnfast

#endif  // DQNFAST_CSRC_SUM_TREE_H_
