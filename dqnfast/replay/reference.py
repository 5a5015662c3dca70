"""Pure-NumPy reference implementation of the replay ring semantics.

``ReferenceRing`` implements exactly the rules of the replay-ring spec (per-env circular
segments, n-step returns, bootstrap discount, valid-index rules, envpool's stack rebuild) with
vectorized NumPy and nothing else. It exists for two reasons:

* tests: an independent check of the C++ ring (``dqnfast.replay.ReplayRing``), written from the
  spec and not from the C++ code;
* benchmarks: the "NumPy ring" baseline that the C++ ring's ``sample()`` is compared against.

It is NOT used for training. It returns plain NumPy arrays instead of torch tensors.

Storage (same layout as the real ring)::

    frames      frame_dtype[num_envs, segment_capacity, *frame_shape]
    actions     int64  [num_envs, segment_capacity]
    rewards     float32[num_envs, segment_capacity]
    terminated  bool   [num_envs, segment_capacity]
    truncated   bool   [num_envs, segment_capacity]
    first       bool   [num_envs, segment_capacity]
    hi          int64  [num_envs]       number of adds to each env ("absolute step" counter)

The t-th ``add`` that includes env e writes slot ``t % segment_capacity`` of env e. Stored
absolute steps of env e are ``[lo, hi)`` with ``lo = max(0, hi - segment_capacity)``.

Transition (e, t): ``s`` = stack ending at t, ``a`` = action_{t+1}, ``s'`` = stack ending at t+m,
where, for k = 1..n (step j = t+k, which must be stored, else the index is invalid):
``first_j and k >= 2`` -> m = k-1 (stop, bootstrap); ``terminated_j or truncated_j`` -> m = k
(stop); if the loop finishes m = n.
``reward = sum_{k=1..m} gamma^(k-1) reward_{t+k}``;
``discount = 0 if terminated_{t+m} else gamma^m``.

Valid(e, t) iff: t is stored; t+1 is stored and not first; every step the m-loop inspects is
stored; and the stack history of t is stored (walk back stack-1 times from t, stopping at a
first step, never going below lo).

Stack rebuild for step u: ``out[stack-1] = frame_u``; ``cur = u``; for i = stack-2 .. 0:
``if not first_cur: cur -= 1``; ``out[i] = frame_cur`` (the episode's first frame repeats,
a life loss does not cut the stack -- envpool's rule).

Global index: ``e * segment_capacity + t % segment_capacity``.

The valid-index mask is recomputed lazily (vectorized over all slots, loops only over
``n_step`` and ``stack``) after adds; ``gather``/``sample`` are vectorized fancy indexing
with no per-sample Python loop.
"""

from __future__ import annotations

import numpy as np

__all__ = ["PrioritizedReference", "ReferenceRing", "SumTree"]


class ReferenceRing:
    """Reference replay ring (pure NumPy). See the module docstring for the semantics.

    Args:
        capacity: total number of stored frames over all envs (> 0).
        num_envs: number of env streams (> 0); each gets ``capacity // num_envs`` slots.
        frame_shape: shape of one frame, e.g. ``(84, 84)`` or ``(4,)``.
        frame_dtype: dtype of frames (uint8 for pixels/RAM, float32 for vectors).
        stack: number of frames per observation (>= 1).
        n_step: return horizon (>= 1).
        gamma: discount factor.
        seed: seed of the ``numpy.random.Generator`` used by ``sample``.
    """

    def __init__(
        self,
        capacity: int,
        num_envs: int,
        frame_shape,
        frame_dtype=np.uint8,
        stack: int = 4,
        n_step: int = 1,
        gamma: float = 0.99,
        seed: int = 0,
    ):
        capacity = int(capacity)
        num_envs = int(num_envs)
        stack = int(stack)
        n_step = int(n_step)
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        if num_envs <= 0:
            raise ValueError(f"num_envs must be positive, got {num_envs}")
        if stack <= 0:
            raise ValueError(f"stack must be positive, got {stack}")
        if n_step <= 0:
            raise ValueError(f"n_step must be positive, got {n_step}")
        seg = capacity // num_envs
        if seg < 1:
            raise ValueError(f"segment_capacity = capacity // num_envs = {seg} is too small")
        self.capacity = capacity
        self.num_envs = num_envs
        self.segment_capacity = seg
        self.frame_shape = tuple(int(d) for d in np.atleast_1d(frame_shape))
        self.frame_dtype = np.dtype(frame_dtype)
        self.stack = stack
        self.n_step = n_step
        self.gamma = float(gamma)
        self.seed = seed
        self.obs_shape = (stack, *self.frame_shape) if stack > 1 else tuple(self.frame_shape)
        self.rng = np.random.default_rng(seed)

        self.frames = np.zeros((num_envs, seg, *self.frame_shape), dtype=self.frame_dtype)
        self.actions = np.zeros((num_envs, seg), dtype=np.int64)
        self.rewards = np.zeros((num_envs, seg), dtype=np.float32)
        self.terminated = np.zeros((num_envs, seg), dtype=bool)
        self.truncated = np.zeros((num_envs, seg), dtype=bool)
        self.first = np.zeros((num_envs, seg), dtype=bool)
        self.hi = np.zeros(num_envs, dtype=np.int64)
        self._gamma_pow = self.gamma ** np.arange(n_step + 1, dtype=np.float64)

        self._dirty = True
        self._valid_mask = None  # bool[E, seg]
        self._m = None  # int64[E, seg]  (n-step horizon of each valid slot)
        self._abs = None  # int64[E, seg] absolute step stored in each slot (-1: empty)
        self._valid_idx = None  # int64[N]

    # ------------------------------------------------------------------ adding
    def add(self, env_ids, frames, actions, rewards, terminated, truncated, first) -> None:
        """Store one step for each env in ``env_ids``.

        env_ids int[K] (distinct, in [0, num_envs)); frames frame_dtype[K, *frame_shape];
        actions int[K]; rewards float[K]; terminated/truncated/first bool[K].
        """
        env_ids = np.asarray(env_ids)
        if env_ids.ndim != 1:
            raise ValueError(f"env_ids must be 1-D, got shape {env_ids.shape}")
        if env_ids.size and not np.issubdtype(env_ids.dtype, np.integer):
            raise ValueError(f"env_ids must be integers, got dtype {env_ids.dtype}")
        env_ids = env_ids.astype(np.int64)
        k = env_ids.shape[0]
        if k and (env_ids.min() < 0 or env_ids.max() >= self.num_envs):
            raise ValueError(f"env id out of range [0, {self.num_envs}): {env_ids.tolist()}")
        if np.unique(env_ids).shape[0] != k:
            raise ValueError(f"duplicate env ids in one add: {env_ids.tolist()}")
        frames = np.asarray(frames)
        if frames.dtype != self.frame_dtype:
            raise ValueError(f"frames dtype {frames.dtype} != ring frame dtype {self.frame_dtype}")
        if frames.shape != (k, *self.frame_shape):
            raise ValueError(f"frames shape {frames.shape} != {(k, *self.frame_shape)}")
        cols = {}
        for name, arr, dt in (
            ("actions", actions, np.int64),
            ("rewards", rewards, np.float32),
            ("terminated", terminated, bool),
            ("truncated", truncated, bool),
            ("first", first, bool),
        ):
            a = np.asarray(arr)
            if a.shape != (k,):
                raise ValueError(f"{name} shape {a.shape} != ({k},)")
            cols[name] = a.astype(dt)
        slots = self.hi[env_ids] % self.segment_capacity
        self.frames[env_ids, slots] = frames
        self.actions[env_ids, slots] = cols["actions"]
        self.rewards[env_ids, slots] = cols["rewards"]
        self.terminated[env_ids, slots] = cols["terminated"]
        self.truncated[env_ids, slots] = cols["truncated"]
        self.first[env_ids, slots] = cols["first"]
        self.hi[env_ids] += 1
        self._dirty = True

    def __len__(self) -> int:
        return int(np.minimum(self.hi, self.segment_capacity).sum())

    # ------------------------------------------------------------ validity
    def _refresh(self) -> None:
        if not self._dirty:
            return
        seg = self.segment_capacity
        E = self.num_envs
        hi = self.hi[:, None]  # [E,1]
        lo = np.maximum(0, hi - seg)
        s = np.arange(seg, dtype=np.int64)[None, :]
        # newest absolute step stored in slot s (< hi, == s mod seg); negative: never written
        t = hi - 1 - np.mod(hi - 1 - s, seg)
        t = np.where(hi > 0, t, -1)
        rows = np.broadcast_to(np.arange(E)[:, None], t.shape)

        def at(arr, u):
            return arr[rows, np.mod(u, seg)]

        done = self.terminated | self.truncated
        valid = t >= 0
        # 2. the step after t is stored and is not the start of a new episode
        valid &= t + 1 < hi
        valid &= ~at(self.first, t + 1)
        # 3. n-step horizon m; every inspected step must be stored
        m = np.full(t.shape, self.n_step, dtype=np.int64)
        active = valid.copy()
        for k in range(1, self.n_step + 1):
            j = t + k
            stored = j < hi
            valid &= ~(active & ~stored)
            active &= stored
            if k >= 2:
                f = active & at(self.first, j)
                m[f] = k - 1
                active &= ~f
            d = active & at(done, j)
            m[d] = k
            active &= ~d
        # 4. stack history of t must be stored
        cur = t.copy()
        going = valid.copy()
        for _ in range(self.stack - 1):
            going &= ~at(self.first, cur)
            cur = cur - going
            bad = going & (cur < lo)
            valid &= ~bad
            going &= ~bad
        self._abs = t
        self._valid_mask = valid
        self._m = np.where(valid, m, 0)
        self._valid_idx = np.flatnonzero(valid).astype(np.int64)  # e-major => sorted
        self._dirty = False

    def valid_indices(self) -> np.ndarray:
        """Sorted int64 array of all valid transition indices."""
        self._refresh()
        return self._valid_idx.copy()

    def num_valid(self) -> int:
        self._refresh()
        return int(self._valid_idx.shape[0])

    def is_valid(self, indices) -> np.ndarray:
        self._refresh()
        idx = np.asarray(indices, dtype=np.int64)
        ok = (idx >= 0) & (idx < self.num_envs * self.segment_capacity)
        out = np.zeros(idx.shape, dtype=bool)
        out[ok] = self._valid_mask.reshape(-1)[idx[ok]]
        return out

    def locate(self, indices):
        """(env int64[B], absolute step int64[B]) of the newest step stored at each index."""
        self._refresh()
        idx = np.asarray(indices, dtype=np.int64)
        if np.any((idx < 0) | (idx >= self.num_envs * self.segment_capacity)):
            raise ValueError("index out of range")
        e = idx // self.segment_capacity
        return e, self._abs[e, idx % self.segment_capacity]

    # ------------------------------------------------------------ gathering
    def _stack(self, e: np.ndarray, u: np.ndarray) -> np.ndarray:
        seg = self.segment_capacity
        if self.stack == 1:
            return self.frames[e, u % seg]
        out = np.empty((e.shape[0], self.stack, *self.frame_shape), dtype=self.frame_dtype)
        cur = u.copy()
        out[:, self.stack - 1] = self.frames[e, cur % seg]
        for i in range(self.stack - 2, -1, -1):
            cur = cur - (~self.first[e, cur % seg])
            out[:, i] = self.frames[e, cur % seg]
        return out

    def _gather_unchecked(self, idx: np.ndarray) -> dict:
        seg = self.segment_capacity
        e = idx // seg
        s = idx % seg
        t = self._abs[e, s]
        m = self._m[e, s]
        reward = np.zeros(idx.shape[0], dtype=np.float64)
        for k in range(1, self.n_step + 1):
            use = k <= m
            reward += np.where(use, self._gamma_pow[k - 1] * self.rewards[e, (t + k) % seg], 0.0)
        tm = t + m
        discount = np.where(self.terminated[e, tm % seg], 0.0, self._gamma_pow[m])
        return {
            "obs": self._stack(e, t),
            "next_obs": self._stack(e, tm),
            "action": self.actions[e, (t + 1) % seg].astype(np.int64),
            "reward": reward.astype(np.float32),
            "discount": discount.astype(np.float32),
            "index": idx.astype(np.int64),
        }

    def gather(self, indices) -> dict:
        """Transitions at explicit indices (each must be valid, else ValueError).

        Returns dict: obs/next_obs frame_dtype[B, *obs_shape], action int64[B],
        reward float32[B], discount float32[B], index int64[B].
        """
        self._refresh()
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        ok = self.is_valid(idx)
        if not ok.all():
            raise ValueError(f"invalid transition indices: {idx[~ok][:8].tolist()}")
        return self._gather_unchecked(idx)

    def sample(self, batch_size: int) -> dict:
        """``batch_size`` transitions drawn uniformly (with replacement) over valid indices."""
        self._refresh()
        n = self._valid_idx.shape[0]
        if n == 0:
            raise ValueError("cannot sample: the ring holds no valid transition yet")
        pick = self._valid_idx[self.rng.integers(0, n, size=int(batch_size))]
        return self._gather_unchecked(pick)


# ------------------------------------------------------------------------ prioritized replay
class SumTree:
    """A NumPy sum tree in ``csrc/sum_tree.h``'s layout: ``tree[1]`` the total, ``tree[P + j]`` leaf j.

    P is the smallest power of two >= size; every internal node is the sum of its two children.
    ``set`` and ``find`` are vectorised over a batch (one pass per tree level). Used by the
    benchmarks as the NumPy baseline; the tests check the C++ sampler against
    ``PrioritizedReference.probabilities``, which needs no tree.
    """

    def __init__(self, size: int) -> None:
        self.size = int(size)
        self.leaves = 1
        while self.leaves < self.size:
            self.leaves *= 2
        self.tree = np.zeros(2 * self.leaves, np.float64)

    @property
    def total(self) -> float:
        return float(self.tree[1])

    def get(self, leaf) -> np.ndarray:
        return self.tree[self.leaves + np.asarray(leaf, np.int64)]

    def assign(self, weights: np.ndarray) -> None:
        """Every leaf at once, then every level's sums."""
        self.tree[:] = 0.0
        self.tree[self.leaves : self.leaves + self.size] = weights
        lo = self.leaves // 2
        while lo >= 1:
            i = np.arange(lo, 2 * lo)
            self.tree[i] = self.tree[2 * i] + self.tree[2 * i + 1]
            lo //= 2

    def set(self, leaf, weight) -> None:
        """Sets leaves (a repeated leaf takes its last weight) and the sums above them."""
        leaf = np.asarray(leaf, np.int64).reshape(-1)
        weight = np.broadcast_to(np.asarray(weight, np.float64), leaf.shape)
        last = np.unique(leaf[::-1], return_index=True)[1]  # the last occurrence of each leaf
        self.tree[self.leaves + leaf[::-1][last]] = weight[::-1][last]
        nodes = np.unique((self.leaves + leaf) >> 1)
        nodes = nodes[nodes >= 1]
        while nodes.size:
            self.tree[nodes] = self.tree[2 * nodes] + self.tree[2 * nodes + 1]
            nodes = np.unique(nodes >> 1)
            nodes = nodes[nodes >= 1]

    def find(self, u: np.ndarray) -> np.ndarray:
        """The leaf whose cumulative range holds each u (never a zero leaf while the total is > 0)."""
        u = np.asarray(u, np.float64).copy()
        i = np.ones(u.shape, np.int64)
        while True:
            inner = i < self.leaves
            if not inner.any():
                return i - self.leaves
            left = self.tree[np.where(inner, 2 * i, 0)]
            right = self.tree[np.where(inner, 2 * i + 1, 0)]
            go_left = (u < left) | (right <= 0.0)
            u = np.where(inner & ~go_left, u - left, u)
            i = np.where(inner, np.where(go_left, 2 * i, 2 * i + 1), i)


class PrioritizedReference:
    """Proportional prioritized replay (Schaul et al. 2016) over a ``ReferenceRing``, from the spec.

    P(i) = p_i^alpha / sum_k p_k^alpha over the valid slots k (0 for an invalid slot);
    p_i = |TD error| + eps as last reported for the step slot i holds; a slot gets the largest
    p reported so far (1 before any report) when an add writes it; a report whose generation
    (the step the slot held when it was drawn) is not the step it holds now is ignored.
    Importance-sampling weights: (N P(i))^-beta / max over the batch, N = number of valid slots.
    """

    def __init__(self, ring: ReferenceRing, alpha: float = 0.6, eps: float = 1e-6, seed: int = 0) -> None:
        self.ring, self.alpha, self.eps = ring, float(alpha), float(eps)
        self.capacity = ring.num_envs * ring.segment_capacity
        self.priority = np.zeros(self.capacity, np.float64)
        self.max_priority = 1.0
        self.rng = np.random.default_rng(seed)
        self.tree = SumTree(self.capacity)
        self._tree_stale = True

    def add(self, env_ids, *args, **kw) -> None:
        ids = np.asarray(env_ids, np.int64)
        slots = ids * self.ring.segment_capacity + self.ring.hi[ids] % self.ring.segment_capacity
        self.ring.add(env_ids, *args, **kw)
        self.priority[slots] = self.max_priority
        self._tree_stale = True

    def update(self, indices, td_abs, generations) -> np.ndarray:
        """Applies the reports (a repeated index keeps its last); returns bool[B]: which were not stale."""
        idx = np.asarray(indices, np.int64).reshape(-1)
        p = np.asarray(td_abs, np.float64).reshape(-1) + self.eps
        _, step = self.ring.locate(idx)
        applied = step == np.asarray(generations, np.int64).reshape(-1)
        if applied.any():
            self.max_priority = max(self.max_priority, float(p[applied].max()))
            i, p_i = idx[applied][::-1], p[applied][::-1]
            last = np.unique(i, return_index=True)[1]  # the last report of each index
            i, p_i = i[last], p_i[last]
            self.priority[i] = p_i
            valid = self.ring.is_valid(i)
            self.tree.set(i[valid], p_i[valid] ** self.alpha)
        return applied

    def probabilities(self) -> np.ndarray:
        """float64[capacity]: P(i) of every slot, straight from the definition."""
        valid = self.ring.is_valid(np.arange(self.capacity))
        w = np.where(valid, self.priority, 0.0) ** self.alpha * valid
        return w / w.sum()

    def weights(self, indices, beta: float) -> np.ndarray:
        idx = np.asarray(indices, np.int64).reshape(-1)
        w = (self.ring.num_valid() * self.probabilities()[idx]) ** -float(beta)
        return w / w.max()

    def sample(self, batch_size: int, beta: float) -> dict:
        """A stratified batch drawn through the NumPy sum tree, with its weights and generations."""
        if self._tree_stale:  # validity changed with the adds: rebuild the leaves once
            valid = self.ring.is_valid(np.arange(self.capacity))
            self.tree.assign(np.where(valid, self.priority**self.alpha, 0.0))
            self._tree_stale = False
        total = self.tree.total
        if total <= 0.0:
            raise ValueError("cannot sample: the ring holds no valid transition yet")
        b = int(batch_size)
        idx = self.tree.find((np.arange(b) + self.rng.random(b)) * (total / b))
        out = self.ring._gather_unchecked(idx)
        p = self.tree.get(idx) / total
        w = (self.ring.num_valid() * p) ** -float(beta)
        out["weight"] = (w / w.max()).astype(np.float32)
        out["generation"] = self.ring.locate(idx)[1]
        return out
