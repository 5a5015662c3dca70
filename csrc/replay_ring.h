// The replay ring: every observation frame stored once, stacks rebuilt by index.
//
//   envpool step (N envs) ──► Add(env_ids, newest frame, action, reward, flags)
//        │  one slot per env per step, in that env's circular segment
//        ▼
//   frames_[env][slot] (frame_bytes each)  +  action / reward / flags per slot
//        │  validity of each slot kept current in the Sampler
//        ▼
//   Sample(B) ── Sampler::Draw ──► indices ── Gather (ThreadPool) ──► caller's
//        buffers: obs, next_obs [B, stack, frame], action, n-step reward,
//        discount, index, generation (+ importance weight when prioritized)
//   UpdatePriorities(indices, generations, |TD|) ──► PrioritizedSampler,
//        skipping every index whose slot was overwritten since it was drawn
//
// Why this design and not the obvious one: storing (s, s') stacks costs
// 2 * stack frames per transition (56 GB for 1M Atari transitions); storing
// each frame once costs one (7 GB). The price is that stacks and n-step
// returns must be rebuilt at sample time, under rules that match envpool
// exactly — written here as invariants.
//
// Slots. The t-th Add that names env e (t = 0, 1, ... its "step") writes slot
// t % S of segment e (S = segment capacity): the newest frame envpool
// returned, the action that was sent to produce it, the reward, terminated,
// truncated, and first = (elapsed_step == 0: the first observation of an
// episode, from reset or from envpool's next-step autoreset). Env e's stored
// steps are [lo_e, hi_e), hi_e = number of adds, lo_e = max(0, hi_e - S).
// Global index of step t of env e: e * S + t % S.
//
// Transition at (e, t): s = stack(t), a = action(t+1), s' = stack(t+m) with
//   m = the first k in 1..n with done(t+k) (terminated or truncated); if
//   first(t+k) for k >= 2 the return stops at k-1 (bootstrapped); else n.
//   reward = sum_{k=1..m} gamma^(k-1) reward(t+k);
//   discount = 0 if terminated(t+m) else gamma^m (bootstraps through
//   truncation: the final observation of a truncated episode is real and
//   stored in its own slot; the reset step after it is another slot).
// Valid(e, t) iff lo <= t, t + 1 < hi, !first(t+1), every step the return
//   inspects is < hi, and stack(t) needs no step below lo. Either sampler is
//   told this one rule (ComputeValid) and draws only what it allows.
// Generation of a slot: the step t it holds now. Every write to a slot adds S
//   to it, so (index, generation) names one transition for good: a priority
//   reported for an index whose slot holds another step since the draw is
//   stale and dropped. It is derived from the cursors (StepAt), so it needs
//   no storage of its own and survives save/load with them.
// stack(u): out[stack-1] = frame(u); walking back, each older entry takes the
//   previous step's frame unless the current one is first, in which case the
//   first frame repeats (envpool's reset stack). A life loss with
//   episodic_life (terminated, no reset after it) cuts the return, not the
//   stack.
#ifndef DQNFAST_CSRC_REPLAY_RING_H_
#define DQNFAST_CSRC_REPLAY_RING_H_

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "prioritized_sampler.h"
#include "rng.h"
#include "sampler.h"
#include "thread_pool.h"

namespace dqnfast {

// Longest frame stack the ring rebuilds (Atari uses 4).
constexpr int kMaxStack = 64;

struct RingConfig {
  int64_t capacity = 0;  // total slots over all envs
  int num_envs = 1;
  int64_t frame_bytes = 0;  // bytes of one frame (84*84, 128, 4*dim, ...)
  int stack = 4;
  int n_step = 1;
  double gamma = 0.99;
  uint64_t seed = 0;
  int num_threads = 1;
  bool store_frames = true;  // false: the caller keeps the frames (Add ignores them)
  int64_t num_actions = 0;   // actions must be in [0, num_actions); 0: in [0, 2^31)
  // Proportional prioritized sampling (csrc/prioritized_sampler.h) instead of
  // uniform: P(i) ~ (|TD| + priority_eps)^alpha, alpha in [0, 1], eps > 0.
  bool prioritized = false;
  double alpha = 0.6;
  double priority_eps = 1e-6;
};

// Caller-owned output rows for a batch of B transitions.
//
// Separate rows (shared == false): obs and next_obs are [B, stack * frame_bytes].
// Shared rows (shared == true, n_step == 1 only): obs is [B, (stack + 1) *
// frame_bytes], the window of steps t-stack+1 .. t+1, so that s = window[0:stack]
// and s' = window[1:stack+1]; next_obs is unused. With n = 1 a transition never
// crosses a reset, so the two stacks differ by one step and the window holds both
// exactly (the reset rule clamps both to the same first frame). It moves stack + 1
// frames per transition instead of 2 * stack (5 instead of 8 for Atari): 37.5%
// less memory traffic at sample time and in the host-to-device copy.
// Frame slots (frame_slots != nullptr): no frame is copied; row b of frame_slots
// [B, RowFrames] receives the slot (e * segment + t % segment) of each frame the
// rows above would hold, in the same order, for a caller that keeps the frames
// itself (on the GPU: dqnfast.replay with frames on a device).
struct BatchOut {
  uint8_t* obs = nullptr;
  uint8_t* next_obs = nullptr;
  int64_t* frame_slots = nullptr;
  bool shared = false;
  int64_t* action = nullptr;  // [B]
  float* reward = nullptr;    // [B]
  float* discount = nullptr;  // [B]
  int64_t* index = nullptr;   // [B]
  // Optional: the generation of each row's slot (the step it holds), [B].
  int64_t* generation = nullptr;
  // Optional: importance-sampling weights [B], (N P(i))^-beta normalised by
  // the batch's largest (see ReplayRing::Weights); all 1 for uniform sampling.
  float* weight = nullptr;
  double beta = 1.0;

  int RowFrames(int stack) const { return shared ? stack + 1 : 2 * stack; }
};

class ReplayRing {
 public:
  enum Flag : uint8_t { kTerminated = 1, kTruncated = 2, kFirst = 4 };

  explicit ReplayRing(const RingConfig& config);
  ~ReplayRing();

  ReplayRing(const ReplayRing&) = delete;
  ReplayRing& operator=(const ReplayRing&) = delete;

  // Appends one step for each of k envs. frames[i] starts at
  // frames + i * frame_stride (frame_bytes contiguous bytes). slots[i]
  // receives the global slot env_ids[i]'s step was written to (a caller that
  // keeps the frames itself stores frame i there). Throws
  // std::invalid_argument, having written nothing, on an env id out of range
  // or repeated, an action out of range or a reward that is not finite.
  void Add(int64_t k, const int64_t* env_ids, const uint8_t* frames, int64_t frame_stride,
           const int64_t* actions, const float* rewards, const uint8_t* terminated,
           const uint8_t* truncated, const uint8_t* first, int64_t* slots);

  // Draws batch indices from the valid ones (uniformly, or in proportion to
  // priority^alpha) and gathers them.
  // Throws std::runtime_error if no index is valid, std::invalid_argument for
  // shared rows with n_step > 1.
  void Sample(int64_t batch, const BatchOut& out);

  // Gathers the given indices (out.index receives a copy). Throws
  // std::invalid_argument if any is out of range or not valid.
  void Gather(int64_t batch, const int64_t* indices, const BatchOut& out);

  // Reports |TD error| per index (priorities[b] >= 0, finite) drawn with
  // generation generations[b]; slot priority becomes priorities[b] + eps.
  // Skips an index whose slot holds another step now (stale); returns how
  // many were applied. Throws std::invalid_argument, having changed nothing,
  // on an index out of range or a bad priority, std::logic_error if the ring
  // samples uniformly.
  int64_t UpdatePriorities(int64_t n, const int64_t* indices, const int64_t* generations,
                           const float* priorities);
  // Per index: the slot's priority p_i (0 if never written; uniform rings:
  // 1) and the probability one draw returns it (0 if not valid now).
  void Priorities(int64_t n, const int64_t* indices, double* out) const;
  void Probabilities(int64_t n, const int64_t* indices, double* out) const;

  int64_t NumValid() const;
  int64_t Size() const;  // stored steps over all envs
  void ValidIndices(std::vector<int64_t>* out) const;
  // Maps indices to (env, step); throws std::invalid_argument if a slot is
  // out of range or was never written.
  void Locate(int64_t n, const int64_t* indices, int64_t* env, int64_t* step) const;

  // Recomputes every slot's validity from the stored contents; call after
  // writing the raw arrays below (loading a saved ring).
  void RebuildIndex();

  // Raw storage, for save/load. Read it through the pointers below (read-only
  // numpy views in the bindings); write it only through Restore, then call
  // RebuildIndex: a write elsewhere would change steps behind the sampler.
  enum class Raw { kFrames, kActions, kRewards, kFlags, kCursors, kPriorities };
  const uint8_t* frames() const { return frames_; }  // null: store_frames off
  const int32_t* actions() const { return actions_.data(); }
  const float* rewards() const { return rewards_.data(); }
  const uint8_t* flags() const { return flags_.data(); }
  const int64_t* cursors() const { return cursors_.data(); }
  // Prioritized rings only (null otherwise): raw priorities [capacity].
  const double* priorities() const {
    return prioritized_ != nullptr ? prioritized_->priorities() : nullptr;
  }
  // Bytes of raw array `which` (0 where the ring keeps none: frames with
  // store_frames off, priorities of a uniform ring).
  int64_t RawBytes(Raw which) const;
  // Copies `bytes` bytes from src over raw array `which`, under the ring's lock.
  // Throws std::invalid_argument, having written nothing, unless bytes ==
  // RawBytes(which) > 0.
  void Restore(Raw which, const void* src, int64_t bytes);
  // Copies the first `slots` frames of every env's segment from src
  // (uint8[num_envs, slots, frame_bytes]: a saved ring that had written no more
  // than that), under the ring's lock; the slots after them keep what they hold.
  // Throws std::invalid_argument, having written nothing, unless the ring stores
  // frames and 0 <= slots <= segment_capacity().
  void RestoreFrames(const void* src, int64_t slots);
  // Prioritized rings: the largest priority reported so far (uniform: 1).
  double max_priority() const;
  void set_max_priority(double p);
  // The sampler's RNG, under the lock like every other accessor (a sample in
  // another thread draws from it).
  uint64_t rng_state() const;
  void set_rng_state(uint64_t s);

  const RingConfig& config() const { return config_; }
  int64_t segment_capacity() const { return seg_; }
  int64_t capacity() const { return seg_ * config_.num_envs; }
  // Bytes this ring uses per slot (frame + metadata + sampler), at most.
  static int64_t BytesPerSlot(int64_t frame_bytes, bool prioritized = false);

 private:
  // The n-step horizon of the transition at step t of env e: the return sums
  // reward(t+1..t+m) and bootstraps from stack(t+m) unless `terminal`.
  // `complete` is false while a step the return must inspect is not stored
  // yet (>= hi). Validity and gather both read it, so they cannot disagree.
  struct Horizon {
    int m = 0;
    bool terminal = false;
    bool complete = false;
  };
  Horizon HorizonAt(int64_t e, int64_t t) const;
  // Validity of step t of env e given the current cursor.
  bool ComputeValid(int64_t e, int64_t t) const;
  void Refresh(int64_t e, int64_t t_begin, int64_t t_end);  // [t_begin, t_end)
  void CheckOut(const BatchOut& out) const;
  void GatherOne(int64_t row, int64_t index, const BatchOut& out) const;
  void GatherRows(int64_t batch, const BatchOut& out);
  // out.weight[b] = (N P(i_b))^-beta / max_j (N P(i_j))^-beta
  //              = (min_j P(i_j) / P(i_b))^beta   (N cancels).
  // Normalised by the batch's largest weight, as Dopamine's Rainbow does, not
  // by the largest over the whole ring (Schaul et al. divide by max_i w_i):
  // no min-tree to keep in step with every update, and one rarely drawn
  // transition anywhere in the ring cannot shrink every batch's step; each
  // batch's largest weight is 1, so the learning rate keeps its meaning.
  void Weights(int64_t batch, const int64_t* index, double beta, float* weight) const;
  void CheckIndex(int64_t idx) const;
  // Writes the slots of the `len` frames of the stack ending at step u (reset
  // rule applied), oldest first; returns len.
  int ResolveStack(int64_t e, int64_t lo, int64_t u, int len, int64_t* slots) const;
  void CopySlots(const int64_t* slots, int len, uint8_t* dst) const;

  int64_t Slot(int64_t e, int64_t t) const { return e * seg_ + t % seg_; }
  uint8_t FlagsAt(int64_t e, int64_t t) const { return flags_[Slot(e, t)]; }
  int64_t Lo(int64_t e) const { return cursors_[e] > seg_ ? cursors_[e] - seg_ : 0; }
  // Absolute step held by in-segment position pos of env e (-1 if never written).
  int64_t StepAt(int64_t e, int64_t pos) const;

  RingConfig config_;
  int64_t seg_;
  // mmap'd: pages are committed as they are written (null: store_frames off)
  uint8_t* frames_ = nullptr;
  int64_t frames_bytes_ = 0;
  std::vector<int32_t> actions_;
  std::vector<float> rewards_;
  std::vector<uint8_t> flags_;
  std::vector<int64_t> cursors_;   // adds per env (hi)
  std::vector<double> gamma_pow_;  // gamma^0 .. gamma^n
  std::vector<uint8_t> seen_;      // scratch for duplicate env-id checks
  std::unique_ptr<Sampler> sampler_;
  PrioritizedSampler* prioritized_ = nullptr;  // sampler_ when prioritized (not owned)
  std::unique_ptr<ThreadPool> pool_;
  Rng rng_;
  mutable std::mutex mu_;
};

}  // namespace dqnfast

#endif  // DQNFAST_CSRC_REPLAY_RING_H_
