#include "replay_ring.h"

#include <sys/mman.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>
#include <system_error>

namespace dqnfast {

namespace {

// Below this many output bytes a batch is gathered on the calling thread:
// waking workers (~50 us) costs more than it saves (B=32 Atari is 1.8 MB).
constexpr int64_t kParallelGatherBytes = 2 * 1024 * 1024;
constexpr int64_t kParallelAddBytes = 512 * 1024;
constexpr int64_t kActionLimit = int64_t{1} << 31;  // actions are stored as int32
std::string Str(int64_t v) { return std::to_string(v); }

}  // namespace

int64_t ReplayRing::BytesPerSlot(int64_t frame_bytes, bool prioritized) {
  return frame_bytes + sizeof(int32_t) + sizeof(float) + sizeof(uint8_t) +
         (prioritized ? PrioritizedSampler::BytesPerSlotBound() : UniformSampler(0).BytesPerSlot());
}

ReplayRing::ReplayRing(const RingConfig& config) : config_(config), rng_(config.seed) {
  if (config.num_envs <= 0) throw std::invalid_argument("num_envs must be positive");
  if (config.frame_bytes <= 0) throw std::invalid_argument("frame_bytes must be positive");
  if (config.stack <= 0 || config.stack > kMaxStack)
    throw std::invalid_argument("stack must be in [1, " + Str(kMaxStack) + "]");
  if (config.n_step <= 0) throw std::invalid_argument("n_step must be positive");
  if (config.num_actions < 0 || config.num_actions > kActionLimit)
    throw std::invalid_argument("num_actions must be in [0, 2^31]");
  if (!(config.gamma >= 0.0 && config.gamma <= 1.0))
    throw std::invalid_argument("gamma must be in [0, 1]");
  if (config.prioritized && !(config.alpha >= 0.0 && config.alpha <= 1.0))
    throw std::invalid_argument("alpha must be in [0, 1]");
  if (config.prioritized && !(config.priority_eps > 0.0 && std::isfinite(config.priority_eps)))
    throw std::invalid_argument("priority_eps must be positive and finite");
  seg_ = config.capacity / config.num_envs;
  const int64_t min_seg = config.stack + config.n_step + 1;
  if (seg_ < min_seg) {
    throw std::invalid_argument(
        "capacity " + Str(config.capacity) + " gives " + Str(seg_) +
        " slots per env; need at least stack + n_step + 1 = " + Str(min_seg) +
        " per env, so capacity >= " + Str(min_seg * config.num_envs));
  }
  if (seg_ * config.num_envs >= (int64_t{1} << 31)) {
    throw std::invalid_argument("capacity must be below 2^31 slots");
  }
  const int64_t slots = seg_ * config.num_envs;
  // Anonymous mapping: zero pages committed only as they are written, and
  // transparent huge pages where the kernel offers them on request (fewer TLB
  // misses for random frame reads across gigabytes).
  if (config.store_frames) {
    frames_bytes_ = slots * config.frame_bytes;
    void* mem =
        mmap(nullptr, frames_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) throw std::bad_alloc();
#ifdef MADV_HUGEPAGE
    madvise(mem, frames_bytes_, MADV_HUGEPAGE);
#endif
    frames_ = static_cast<uint8_t*>(mem);
  }
  // A constructor that throws runs no destructor: the mapping is released here.
  try {
    actions_.assign(slots, 0);
    rewards_.assign(slots, 0.0f);
    flags_.assign(slots, 0);
    cursors_.assign(config.num_envs, 0);
    seen_.assign(config.num_envs, 0);
    gamma_pow_.resize(config.n_step + 1);
    gamma_pow_[0] = 1.0;
    for (int k = 1; k <= config.n_step; ++k) gamma_pow_[k] = gamma_pow_[k - 1] * config.gamma;
    if (config.prioritized) {
      auto sampler = std::make_unique<PrioritizedSampler>(slots, config.alpha, config.priority_eps);
      prioritized_ = sampler.get();
      sampler_ = std::move(sampler);
    } else {
      sampler_ = std::make_unique<UniformSampler>(slots);
    }
    try {
      pool_ = std::make_unique<ThreadPool>(config.num_threads);
    } catch (const std::system_error& e) {
      throw std::runtime_error("could not start " + Str(config.num_threads) +
                               " replay threads (the OS refused one: " + e.what() +
                               "); use fewer threads");
    } catch (const std::bad_alloc&) {
      throw std::runtime_error(
          "could not start " + Str(config.num_threads) +
          " replay threads (out of memory for their stacks); use fewer threads");
    }
  } catch (...) {
    if (frames_ != nullptr) munmap(frames_, frames_bytes_);
    frames_ = nullptr;
    throw;
  }
}

ReplayRing::~ReplayRing() {
  if (frames_ != nullptr) munmap(frames_, frames_bytes_);
}

void ReplayRing::Add(int64_t k, const int64_t* env_ids, const uint8_t* frames, int64_t frame_stride,
                     const int64_t* actions, const float* rewards, const uint8_t* terminated,
                     const uint8_t* truncated, const uint8_t* first, int64_t* slots) {
  std::lock_guard<std::mutex> lock(mu_);
  // Check every value before writing anything: a bad call changes nothing.
  // Actions are stored as int32: a wider one would come back as another action.
  const int64_t action_end = config_.num_actions > 0 ? config_.num_actions : kActionLimit;
  for (int64_t i = 0; i < k; ++i) {
    if (actions[i] < 0 || actions[i] >= action_end) {
      throw std::invalid_argument("action " + Str(actions[i]) + " (env " + Str(env_ids[i]) +
                                  ") out of range [0, " + Str(action_end) + ")");
    }
    if (!std::isfinite(rewards[i])) {
      throw std::invalid_argument("reward " + std::to_string(rewards[i]) + " (env " +
                                  Str(env_ids[i]) + ") is not finite");
    }
  }
  for (int64_t i = 0; i < k; ++i) {
    const int64_t e = env_ids[i];
    if (e < 0 || e >= config_.num_envs) {
      for (int64_t j = 0; j < i; ++j) seen_[env_ids[j]] = 0;
      throw std::invalid_argument("env id " + Str(e) + " out of range [0, " +
                                  Str(config_.num_envs) + ")");
    }
    if (seen_[e]) {
      for (int64_t j = 0; j < i; ++j) seen_[env_ids[j]] = 0;
      throw std::invalid_argument("env id " + Str(e) + " appears twice in one add");
    }
    seen_[e] = 1;
  }
  for (int64_t i = 0; i < k; ++i) seen_[env_ids[i]] = 0;
  // no frame storage: the caller keeps the frames (written by slot on its device)
  const int64_t k_frames = frames_ != nullptr ? k : 0;

  const int64_t fb = config_.frame_bytes;
  auto copy_frames = [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t e = env_ids[i];
      std::memcpy(frames_ + Slot(e, cursors_[e]) * fb, frames + i * frame_stride, fb);
    }
  };
  if (k_frames * fb >= kParallelAddBytes) {
    pool_->ParallelFor(k_frames, copy_frames);
  } else {
    copy_frames(0, k_frames);
  }

  const int64_t n = config_.n_step;
  const int64_t hist = config_.stack - 1;
  for (int64_t i = 0; i < k; ++i) {
    const int64_t e = env_ids[i];
    const int64_t t = cursors_[e];
    const int64_t s = Slot(e, t);
    slots[i] = s;
    sampler_->OnWrite(s);
    actions_[s] = static_cast<int32_t>(actions[i]);
    rewards_[s] = rewards[i];
    flags_[s] = static_cast<uint8_t>((terminated[i] ? kTerminated : 0) |
                                     (truncated[i] ? kTruncated : 0) | (first[i] ? kFirst : 0));
    cursors_[e] = t + 1;
    // The new step can complete the returns of the n steps before it and is
    // itself not yet valid; it also evicted the oldest step, which can take
    // the stack history of the next `hist` steps with it.
    const int64_t lo = Lo(e);
    Refresh(e, std::max(lo, t - n), t + 1);
    if (t + 1 > seg_) Refresh(e, lo, std::min(lo + hist, t - n));
  }
}

void ReplayRing::Refresh(int64_t e, int64_t t_begin, int64_t t_end) {
  for (int64_t t = t_begin; t < t_end; ++t) sampler_->SetValid(Slot(e, t), ComputeValid(e, t));
}

ReplayRing::Horizon ReplayRing::HorizonAt(int64_t e, int64_t t) const {
  const int64_t hi = cursors_[e];
  Horizon h;
  for (int k = 1; k <= config_.n_step; ++k) {
    if (t + k >= hi) return h;  // incomplete: step t + k is not stored yet
    const uint8_t f = FlagsAt(e, t + k);
    if (k >= 2 && (f & kFirst)) break;  // a new episode: stop before it, bootstrapped
    h.m = k;
    if (f & kTerminated) {
      h.terminal = true;
      break;
    }
    if (f & kTruncated) break;  // bootstraps through the real final observation
  }
  h.complete = true;
  return h;
}

bool ReplayRing::ComputeValid(int64_t e, int64_t t) const {
  const int64_t hi = cursors_[e];
  const int64_t lo = Lo(e);
  if (t < lo || t + 1 >= hi) return false;
  if (FlagsAt(e, t + 1) & kFirst) return false;
  if (!HorizonAt(e, t).complete) return false;
  int64_t cur = t;
  for (int i = 0; i < config_.stack - 1; ++i) {
    if (FlagsAt(e, cur) & kFirst) break;
    if (--cur < lo) return false;
  }
  return true;
}

int64_t ReplayRing::StepAt(int64_t e, int64_t pos) const {
  const int64_t hi = cursors_[e];
  if (hi == 0) return -1;
  const int64_t newest = hi - 1;
  const int64_t back = ((newest % seg_) - pos + seg_) % seg_;
  const int64_t t = newest - back;
  return t >= 0 ? t : -1;
}

int ReplayRing::ResolveStack(int64_t e, int64_t lo, int64_t u, int len, int64_t* slots) const {
  // Walk the stack's steps newest first (the reset rule walks backwards); the
  // slots come out oldest first: ascending addresses keep the prefetchers ahead.
  int64_t cur = u;
  slots[len - 1] = Slot(e, cur);
  for (int i = len - 2; i >= 0; --i) {
    if (!(FlagsAt(e, cur) & kFirst) && cur - 1 >= lo) --cur;
    slots[i] = Slot(e, cur);
  }
  return len;
}

void ReplayRing::CopySlots(const int64_t* slots, int len, uint8_t* dst) const {
  const int64_t fb = config_.frame_bytes;
  for (int i = 0; i < len; ++i) std::memcpy(dst + i * fb, frames_ + slots[i] * fb, fb);
}

void ReplayRing::GatherOne(int64_t row, int64_t index, const BatchOut& out) const {
  const int64_t e = index / seg_;
  const int64_t t = StepAt(e, index % seg_);
  const int64_t lo = Lo(e);
  // index is valid, so its horizon is complete
  const Horizon h = HorizonAt(e, t);
  const int64_t m = h.m;
  double ret = 0.0;
  for (int k = 1; k <= m; ++k) ret += gamma_pow_[k - 1] * rewards_[Slot(e, t + k)];
  const int stack = config_.stack;
  const int width = out.RowFrames(stack);
  int64_t local[2 * kMaxStack];
  int64_t* slots = out.frame_slots != nullptr ? out.frame_slots + row * width : local;
  if (out.shared) {  // n = 1, so m = 1: one window of stack + 1 steps
    ResolveStack(e, lo, t + 1, stack + 1, slots);
  } else {
    ResolveStack(e, lo, t, stack, slots);
    ResolveStack(e, lo, t + m, stack, slots + stack);
  }
  if (out.frame_slots == nullptr) {  // copy the frames; else the caller gathers them by slot
    const int64_t fb = config_.frame_bytes;
    if (out.shared) {
      CopySlots(slots, stack + 1, out.obs + row * (stack + 1) * fb);
    } else {
      CopySlots(slots, stack, out.obs + row * stack * fb);
      CopySlots(slots + stack, stack, out.next_obs + row * stack * fb);
    }
  }
  if (out.generation != nullptr) out.generation[row] = t;
  out.action[row] = actions_[Slot(e, t + 1)];
  out.reward[row] = static_cast<float>(ret);
  out.discount[row] = h.terminal ? 0.0f : static_cast<float>(gamma_pow_[m]);
}

void ReplayRing::GatherRows(int64_t batch, const BatchOut& out) {
  const int64_t bytes =
      out.frame_slots != nullptr ? 0 : batch * out.RowFrames(config_.stack) * config_.frame_bytes;
  auto body = [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) GatherOne(b, out.index[b], out);
  };
  if (bytes >= kParallelGatherBytes) {
    pool_->ParallelFor(batch, body);
  } else {
    body(0, batch);
  }
}

void ReplayRing::CheckOut(const BatchOut& out) const {
  if (out.shared && config_.n_step != 1) {
    throw std::invalid_argument("shared obs/next_obs rows need n_step == 1 (this ring has n_step " +
                                Str(config_.n_step) + "); pass separate obs and next_obs buffers");
  }
  if (out.frame_slots == nullptr && frames_ == nullptr) {
    throw std::invalid_argument(
        "this ring keeps no frames (store_frames=false: they live on the device); "
        "sample frame slots instead");
  }
}

void ReplayRing::Sample(int64_t batch, const BatchOut& out) {
  CheckOut(out);
  std::lock_guard<std::mutex> lock(mu_);
  if (sampler_->NumValid() == 0) {
    throw std::runtime_error(
        "no valid transition to sample yet: add more steps first (each env needs "
        "at least " +
        Str(config_.n_step + 1) + " consecutive steps of one episode)");
  }
  sampler_->Draw(&rng_, batch, out.index);
  if (out.weight != nullptr) Weights(batch, out.index, out.beta, out.weight);
  GatherRows(batch, out);
}

void ReplayRing::Weights(int64_t batch, const int64_t* index, double beta, float* weight) const {
  if (prioritized_ == nullptr) {  // uniform: every P(i) is 1 / N
    std::fill(weight, weight + batch, 1.0f);
    return;
  }
  double p_min = 1.0;
  for (int64_t b = 0; b < batch; ++b) p_min = std::min(p_min, sampler_->Probability(index[b]));
  for (int64_t b = 0; b < batch; ++b) {
    weight[b] = static_cast<float>(std::pow(p_min / sampler_->Probability(index[b]), beta));
  }
}

void ReplayRing::CheckIndex(int64_t idx) const {
  const int64_t slots = capacity();
  if (idx < 0 || idx >= slots) {
    throw std::invalid_argument("index " + Str(idx) + " out of range [0, " + Str(slots) + ")");
  }
}

void ReplayRing::Gather(int64_t batch, const int64_t* indices, const BatchOut& out) {
  CheckOut(out);
  std::lock_guard<std::mutex> lock(mu_);
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t idx = indices[b];
    CheckIndex(idx);
    if (!sampler_->IsValid(idx)) {
      throw std::invalid_argument("index " + Str(idx) + " is not a valid transition now");
    }
  }
  if (out.index != indices) std::memcpy(out.index, indices, batch * sizeof(int64_t));
  if (out.weight != nullptr) Weights(batch, out.index, out.beta, out.weight);
  GatherRows(batch, out);
}

int64_t ReplayRing::UpdatePriorities(int64_t n, const int64_t* indices, const int64_t* generations,
                                     const float* priorities) {
  if (prioritized_ == nullptr) {
    throw std::logic_error(
        "this ring samples uniformly; make it with prioritized=True to update priorities");
  }
  std::lock_guard<std::mutex> lock(mu_);
  for (int64_t b = 0; b < n; ++b) {  // check everything before changing anything
    CheckIndex(indices[b]);
    if (!std::isfinite(priorities[b])) {
      throw std::invalid_argument("priority " + std::to_string(priorities[b]) + " (index " +
                                  Str(indices[b]) + ") is not finite");
    }
    if (priorities[b] < 0.0f) {
      throw std::invalid_argument("priority " + std::to_string(priorities[b]) + " (index " +
                                  Str(indices[b]) + ") is negative; report |TD error|");
    }
  }
  int64_t applied = 0;
  for (int64_t b = 0; b < n; ++b) {
    const int64_t idx = indices[b];
    const int64_t t = StepAt(idx / seg_, idx % seg_);
    if (t < 0 || t != generations[b]) continue;  // never written, or overwritten since drawn
    prioritized_->Update(idx, priorities[b]);
    ++applied;
  }
  return applied;
}

void ReplayRing::Priorities(int64_t n, const int64_t* indices, double* out) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (int64_t b = 0; b < n; ++b) CheckIndex(indices[b]);
  for (int64_t b = 0; b < n; ++b) {
    out[b] = prioritized_ != nullptr ? prioritized_->priorities()[indices[b]] : 1.0;
  }
}

void ReplayRing::Probabilities(int64_t n, const int64_t* indices, double* out) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (int64_t b = 0; b < n; ++b) CheckIndex(indices[b]);
  const bool any = sampler_->NumValid() > 0;
  for (int64_t b = 0; b < n; ++b) out[b] = any ? sampler_->Probability(indices[b]) : 0.0;
}

double ReplayRing::max_priority() const {
  std::lock_guard<std::mutex> lock(mu_);
  return prioritized_ != nullptr ? prioritized_->max_priority() : 1.0;
}

void ReplayRing::set_max_priority(double p) {
  std::lock_guard<std::mutex> lock(mu_);
  if (prioritized_ != nullptr) prioritized_->set_max_priority(p);
}

uint64_t ReplayRing::rng_state() const {
  std::lock_guard<std::mutex> lock(mu_);
  return rng_.state();
}

void ReplayRing::set_rng_state(uint64_t s) {
  std::lock_guard<std::mutex> lock(mu_);
  rng_.set_state(s);
}

int64_t ReplayRing::RawBytes(Raw which) const {
  const int64_t slots = capacity();
  switch (which) {
    case Raw::kFrames:
      return frames_ != nullptr ? frames_bytes_ : 0;
    case Raw::kActions:
      return slots * static_cast<int64_t>(sizeof(int32_t));
    case Raw::kRewards:
      return slots * static_cast<int64_t>(sizeof(float));
    case Raw::kFlags:
      return slots * static_cast<int64_t>(sizeof(uint8_t));
    case Raw::kCursors:
      return config_.num_envs * static_cast<int64_t>(sizeof(int64_t));
    case Raw::kPriorities:
      return prioritized_ != nullptr ? slots * static_cast<int64_t>(sizeof(double)) : 0;
  }
  return 0;
}

void ReplayRing::RestoreFrames(const void* src, int64_t slots) {
  const int64_t seg = segment_capacity();
  if (frames_ == nullptr || slots < 0 || slots > seg) {
    throw std::invalid_argument("frames: " + Str(slots) + " slots per env, the ring holds " +
                                (frames_ != nullptr ? Str(seg) : std::string("no frames")));
  }
  const int64_t fb = config_.frame_bytes, kept = slots * fb;
  const auto* from = static_cast<const uint8_t*>(src);
  std::lock_guard<std::mutex> lock(mu_);
  for (int64_t e = 0; e < config_.num_envs; ++e) {
    std::memcpy(frames_ + e * seg * fb, from + e * kept, static_cast<size_t>(kept));
  }
}

void ReplayRing::Restore(Raw which, const void* src, int64_t bytes) {
  const int64_t expect = RawBytes(which);
  if (expect == 0 || bytes != expect) {
    throw std::invalid_argument("raw array " + Str(static_cast<int>(which)) + " holds " +
                                Str(expect) + " bytes, got " + Str(bytes));
  }
  void* dst = nullptr;
  switch (which) {
    case Raw::kFrames:
      dst = frames_;
      break;
    case Raw::kActions:
      dst = actions_.data();
      break;
    case Raw::kRewards:
      dst = rewards_.data();
      break;
    case Raw::kFlags:
      dst = flags_.data();
      break;
    case Raw::kCursors:
      dst = cursors_.data();
      break;
    case Raw::kPriorities:
      dst = prioritized_->priorities();
      break;
  }
  std::lock_guard<std::mutex> lock(mu_);
  std::memcpy(dst, src, bytes);
}

int64_t ReplayRing::NumValid() const {
  std::lock_guard<std::mutex> lock(mu_);
  return sampler_->NumValid();
}

int64_t ReplayRing::Size() const {
  std::lock_guard<std::mutex> lock(mu_);
  int64_t total = 0;
  for (int64_t e = 0; e < config_.num_envs; ++e) total += cursors_[e] - Lo(e);
  return total;
}

void ReplayRing::ValidIndices(std::vector<int64_t>* out) const {
  std::lock_guard<std::mutex> lock(mu_);
  out->clear();
  out->reserve(sampler_->NumValid());
  const int64_t slots = capacity();
  for (int64_t i = 0; i < slots; ++i) {
    if (sampler_->IsValid(i)) out->push_back(i);
  }
}

void ReplayRing::Locate(int64_t n, const int64_t* indices, int64_t* env, int64_t* step) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (int64_t b = 0; b < n; ++b) {
    const int64_t idx = indices[b];
    CheckIndex(idx);
    const int64_t e = idx / seg_;
    const int64_t t = StepAt(e, idx % seg_);
    if (t < 0) throw std::invalid_argument("index " + Str(idx) + " was never written");
    env[b] = e;
    step[b] = t;
  }
}

void ReplayRing::RebuildIndex() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<uint8_t> valid(capacity(), 0);
  for (int64_t e = 0; e < config_.num_envs; ++e) {
    if (cursors_[e] < 0) throw std::invalid_argument("negative cursor in loaded ring");
    for (int64_t t = Lo(e); t < cursors_[e]; ++t) valid[Slot(e, t)] = ComputeValid(e, t);
  }
  sampler_->Reset(valid);
}

}  // namespace dqnfast
