"""Tabular Q-value iteration and Q-learning on a finite MDP given as arrays, compiled with numba.

An MDP is three things: ``T[s, a, s']`` the probability that action ``a`` in state ``s`` leads
to ``s'``, ``R[s, a, s']`` the reward of that transition, and the actions allowed in each state.
``MDP`` checks them once; the loops then trust them.

Conventions of every Q this module returns: ``float64[S, A]``, and a disallowed ``(s, a)``
holds ``-inf``, so ``q.max(axis=1)`` is each state's value and ``q.argmax(axis=1)`` its greedy
action without any masking (every state has at least one allowed action).

Each loop is written once, as an ``@njit`` kernel over plain arrays; the public functions
take an ``MDP`` and choose the compiled kernel or, with ``compiled=False``, the very same
source run as plain Python (``kernel.py_func``). Keeping one source is what makes the
comparison of the two meaningful. Random numbers come only from ``np.random.random()`` after
``np.random.seed(seed)`` inside the kernel: compiled, that seeds numba's own Mersenne Twister;
as plain Python, NumPy's global legacy generator. Both use the same seeding and the same
conversion to doubles, so both paths draw the same stream and give bit-identical Q-values
(no fastmath: the float operations run in source order in both).

No torch, no files, no argument parsing here: ``dqnfast.cli.tabular`` prints and plots.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numba
import numpy as np

__all__ = [
    "INT64_MAX",
    "MDP",
    "QLearningResult",
    "ValueIterationResult",
    "bellman_residual",
    "greedy_policy",
    "q_learning",
    "q_value_iteration",
    "random_mdp",
    "three_state_mdp",
]

# Probabilities of an allowed action must sum to 1 within this (rounding of hand-written tables).
PROB_ATOL = 1e-9


# ---------------------------------------------------------------------- the MDP
@dataclass(frozen=True, eq=False)
class MDP:
    """A finite MDP: transition probabilities, rewards and the actions allowed per state.

    Fields (as given; ``__post_init__`` replaces the arrays by checked, read-only copies):

    - ``T``: ``float64[S, A, S]``, ``T[s, a, s']`` = P(s' | s, a). Rows of actions not allowed
      in ``s`` may be NaN or 0 (or ``None`` in nested lists, as the textbook writes them).
    - ``R``: ``float64[S, A, S]``, the reward of the transition ``s --a--> s'``; only entries
      with ``T > 0`` are read, the others may be anything, NaN included.
    - ``possible_actions``: for each state, the non-empty list of its allowed actions.

    After construction ``T`` and ``R`` hold 0 wherever they are not used (disallowed actions,
    ``T == 0``), so the kernels never meet a NaN. A state with no way out is written as an
    allowed action looping back with reward 0.

    Raises ``ValueError`` (one line) on: wrong shapes, an action out of range or listed twice,
    a state without actions, an allowed action with no transitions, negative or non-finite
    probabilities, probabilities that do not sum to 1 over ``s'``, a non-finite reward on a
    possible transition, or transitions given for an action that is not listed.
    """

    T: np.ndarray
    R: np.ndarray
    possible_actions: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        T = _dense(self.T, "T")
        R = _dense(self.R, "R")
        if T.ndim != 3 or T.shape[0] != T.shape[2] or T.shape[0] == 0 or T.shape[1] == 0:
            raise ValueError(f"T must have shape [S, A, S] with S, A >= 1, got {T.shape}")
        S, A = T.shape[:2]
        if R.shape != T.shape:
            raise ValueError(f"R must have T's shape {T.shape}, got {R.shape}")
        actions = _actions(self.possible_actions, S, A)
        allowed = np.zeros((S, A), dtype=bool)
        for s, acts in enumerate(actions):
            allowed[s, list(acts)] = True

        for s in range(S):
            for a in range(A):
                row = T[s, a]
                if not allowed[s, a]:
                    if np.any(np.isfinite(row) & (row != 0)):
                        raise ValueError(
                            f"T[{s}, {a}] has transitions but action {a} is not in "
                            f"possible_actions[{s}] = {list(actions[s])}"
                        )
                    continue
                if np.all(np.isnan(row)) or np.all(row == 0):
                    raise ValueError(f"action {a} is listed for state {s} but T[{s}, {a}] has no transitions")
                wrong = ~np.isfinite(row) | (row < 0)
                if np.any(wrong):
                    i = int(np.argmax(wrong))
                    raise ValueError(f"T[{s}, {a}, {i}] is {row[i]}: probabilities must be finite and >= 0")
                total = float(row.sum())
                if abs(total - 1.0) > PROB_ATOL:
                    raise ValueError(f"T[{s}, {a}] sums to {total:.12g} over s', not 1")
                bad = (row > 0) & ~np.isfinite(R[s, a])
                if np.any(bad):
                    raise ValueError(
                        f"R[{s}, {a}, {int(np.argmax(bad))}] is {R[s, a][bad][0]} on a possible transition"
                    )

        used = allowed[:, :, None] & (np.nan_to_num(T, nan=0.0) > 0)
        T_clean = np.where(used, T, 0.0)
        R_clean = np.where(used, R, 0.0)
        for arr in (T_clean, R_clean):
            arr.setflags(write=False)
        object.__setattr__(self, "T", np.ascontiguousarray(T_clean, dtype=np.float64))
        object.__setattr__(self, "R", np.ascontiguousarray(R_clean, dtype=np.float64))
        object.__setattr__(self, "possible_actions", actions)

    @property
    def n_states(self) -> int:
        return self.T.shape[0]

    @property
    def n_actions(self) -> int:
        return self.T.shape[1]

    @property
    def allowed(self) -> np.ndarray:
        """``bool[S, A]``: True where the action is allowed in the state."""
        mask = np.zeros((self.n_states, self.n_actions), dtype=bool)
        for s, acts in enumerate(self.possible_actions):
            mask[s, list(acts)] = True
        return mask


def _dense(x, name: str) -> np.ndarray:
    """``float64`` array from an array or nested lists; ``None`` rows (the textbook's way of
    writing an impossible action) become NaN rows."""
    if isinstance(x, np.ndarray) and x.dtype != object:
        return np.array(x, dtype=np.float64)
    try:
        return np.array(x, dtype=np.float64)
    except (TypeError, ValueError):
        pass
    # Ragged: [s][a] is None or a row of length S'.
    try:
        rows = [list(per_state) for per_state in x]
        width = max(len(r) for r in rows)
        length = max(len(row) for r in rows for row in r if row is not None)
        out = np.full((len(rows), width, length), np.nan)
        for s, r in enumerate(rows):
            for a, row in enumerate(r):
                if row is not None:
                    if len(row) != length:
                        raise ValueError
                    out[s, a] = np.asarray(row, dtype=np.float64)
        return out
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a float array [S, A, S] (None or NaN rows for impossible actions)") from None


def _actions(possible_actions, S: int, A: int) -> tuple[tuple[int, ...], ...]:
    try:
        per_state = [tuple(acts) for acts in possible_actions]
    except TypeError:
        raise ValueError("possible_actions must be one list of actions per state") from None
    if len(per_state) != S:
        raise ValueError(f"possible_actions has {len(per_state)} states, T has {S}")
    out = []
    for s, acts in enumerate(per_state):
        if not acts:
            raise ValueError(f"state {s} has no allowed action (write a terminal state as a self-loop)")
        ints = []
        for a in acts:
            if isinstance(a, (bool, np.bool_)) or not isinstance(a, (int, np.integer)) or not 0 <= a < A:
                raise ValueError(f"possible_actions[{s}] holds {a!r}, not an action in [0, {A})")
            ints.append(int(a))
        if len(set(ints)) != len(ints):
            raise ValueError(f"possible_actions[{s}] lists an action twice: {ints}")
        out.append(tuple(ints))
    return tuple(out)


def three_state_mdp() -> MDP:
    """The textbook three-state MDP (the DQN teaching material's example before Q-learning).

    State 0: actions 0, 1, 2; action 0 stays with probability 0.7 and pays +10 when it does.
    State 1: actions 0, 2; action 2 reaches state 2 but costs -50.
    State 2: action 1 only; it pays +40 on its way back to state 0 (probability 0.8).
    With gamma = 0.90 the best policy is [0, 0, 1]; with gamma = 0.95 it is [0, 2, 1].
    """
    nan = [np.nan] * 3
    T = [
        [[0.7, 0.3, 0.0], [1.0, 0.0, 0.0], [0.8, 0.2, 0.0]],
        [[0.0, 1.0, 0.0], nan, [0.0, 0.0, 1.0]],
        [nan, [0.8, 0.1, 0.1], nan],
    ]
    R = [
        [[10.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
        [[0.0, 0.0, 0.0], nan, [0.0, 0.0, -50.0]],
        [nan, [40.0, 0.0, 0.0], nan],
    ]
    return MDP(np.array(T), np.array(R), ((0, 1, 2), (0, 2), (1,)))


def random_mdp(n_states: int, n_actions: int, seed: int = 0, p_allowed: float = 0.8, n_successors: int = 10) -> MDP:
    """A random MDP for tests and benchmarks: each state allows each action with probability
    ``p_allowed`` (at least one), each allowed action reaches ``min(n_successors, n_states)``
    random states with Dirichlet(1) probabilities, rewards are standard normal."""
    rng = np.random.default_rng(seed)
    S, A = n_states, n_actions
    allowed = rng.random((S, A)) < p_allowed
    allowed[np.arange(S), rng.integers(0, A, size=S)] = True
    k = min(n_successors, S)
    T = np.zeros((S, A, S))
    for s in range(S):
        for a in range(A):
            if allowed[s, a]:
                T[s, a, rng.choice(S, size=k, replace=False)] = rng.dirichlet(np.ones(k))
    T /= np.where(allowed, T.sum(axis=2), 1.0)[:, :, None]  # exact sums after the scatter
    R = rng.standard_normal((S, A, S))
    return MDP(T, R, tuple(tuple(int(a) for a in np.flatnonzero(allowed[s])) for s in range(S)))


INT64_MAX = 2**63 - 1  # the kernels count sweeps and steps in int64


# ------------------------------------------------------------------ the kernels
@numba.njit(cache=True)
def _q_value_iteration_kernel(T, R, allowed, gamma, n_iterations, tol, record):
    """Synchronous Q-value iteration. T, R: float64[S, A, S]; allowed: bool[S, A].

    Returns (q float64[S, A], history float64[sweeps + 1 or 0, S, A], sweeps, delta): each
    sweep computes every Q[s, a] from the previous sweep's state values (as the textbook
    does), and the loop stops after the first sweep whose largest change is <= tol.
    """
    S, A = allowed.shape
    q = np.empty((S, A))
    for s in range(S):
        for a in range(A):
            q[s, a] = 0.0 if allowed[s, a] else -np.inf
    v = np.empty(S)
    # the history grows with the sweeps actually run (it doubles when full), so a large
    # n_iterations that stops early at its fixed point costs no memory up front
    cap = min(n_iterations, 1024)
    hist = np.empty((cap + 1 if record else 0, S, A))
    if record:
        hist[0] = q
    sweeps = 0
    delta = np.inf
    for it in range(n_iterations):
        for s in range(S):
            best = -np.inf
            for a in range(A):
                if allowed[s, a] and q[s, a] > best:
                    best = q[s, a]
            v[s] = best
        delta = 0.0
        for s in range(S):
            for a in range(A):
                if not allowed[s, a]:
                    continue
                total = 0.0
                for s2 in range(S):
                    p = T[s, a, s2]
                    if p != 0.0:
                        total += p * (R[s, a, s2] + gamma * v[s2])
                change = abs(total - q[s, a])
                if change > delta:
                    delta = change
                q[s, a] = total
        sweeps = it + 1
        if record:
            if sweeps > cap:
                cap = min(2 * cap, n_iterations)
                grown = np.empty((cap + 1, S, A))
                grown[:sweeps] = hist[:sweeps]
                hist = grown
            hist[sweeps] = q
        if delta <= tol:
            break
    return q, hist[: sweeps + 1], sweeps, delta


@numba.njit(cache=True)
def _q_learning_kernel(cdf, R, actions, n_allowed, gamma, n_steps, alpha0, decay, seed, start_state, record_every):
    """Q-learning along one trajectory of uniformly random allowed actions.

    cdf: float64[S, A, S], cumulative T over s' with the last possible s' at exactly 1.0;
    R: float64[S, A, S]; actions: int64[S, A], the allowed actions of each state first
    (padding -1); n_allowed: int64[S]. Step t uses the learning rate
    alpha0 / (1 + decay * t). Returns (q float64[S, A], history float64[n_steps //
    record_every + 1 or 0, S, A]), history[i] being Q after i * record_every steps.
    """
    np.random.seed(seed)
    S, A = actions.shape
    q = np.full((S, A), -np.inf)
    for s in range(S):
        for k in range(n_allowed[s]):
            q[s, actions[s, k]] = 0.0
    n_rec = n_steps // record_every + 1 if record_every > 0 else 0
    hist = np.empty((n_rec, S, A))
    if n_rec > 0:
        hist[0] = q
    s = start_state
    for t in range(n_steps):
        # random() < 1, but u * n can round up to n: clamp.
        k = min(int(np.random.random() * n_allowed[s]), n_allowed[s] - 1)
        a = actions[s, k]
        u = np.random.random()
        s2 = 0
        while not u < cdf[s, a, s2]:  # ends: the last possible s' has cdf exactly 1 > u
            s2 += 1
        best = -np.inf
        for b in range(A):
            if q[s2, b] > best:
                best = q[s2, b]
        alpha = alpha0 / (1.0 + decay * t)
        q[s, a] += alpha * (R[s, a, s2] + gamma * best - q[s, a])
        s = s2
        if record_every > 0 and (t + 1) % record_every == 0:
            hist[(t + 1) // record_every] = q
    return q, hist


# ------------------------------------------------------------- the public face
class ValueIterationResult(NamedTuple):
    """``q``: float64[S, A] (-inf where not allowed); ``history``: float64[sweeps + 1, S, A]
    (Q before the first sweep and after each; empty unless asked for); ``sweeps``: sweeps run;
    ``delta``: the largest change of any Q in the last sweep (inf if none ran)."""

    q: np.ndarray
    history: np.ndarray
    sweeps: int
    delta: float


class QLearningResult(NamedTuple):
    """``q``: float64[S, A] (-inf where not allowed); ``history``: float64[H, S, A], Q after
    ``steps[i]`` steps (empty unless asked for); ``steps``: int64[H]."""

    q: np.ndarray
    history: np.ndarray
    steps: np.ndarray


def _check_gamma(gamma: float) -> float:
    gamma = float(gamma)
    if not 0.0 <= gamma < 1.0:
        raise ValueError(f"gamma must be in [0, 1), got {gamma}")
    return gamma


def q_value_iteration(
    mdp: MDP, gamma: float, n_iterations: int = 1000, tol: float = 0.0, *, history: bool = False, compiled: bool = True
) -> ValueIterationResult:
    """Optimal Q-values by repeated Bellman optimality backups.

    Stops after ``n_iterations`` sweeps or after the first sweep that changes no Q by more
    than ``tol`` (so the Bellman residual of the result is at most ``gamma * tol``; 0 stops
    only at an exact floating-point fixed point, a negative ``tol`` never stops early). The
    error to the true optimum is at most ``gamma * delta / (1 - gamma)``. ``history`` records
    Q after every sweep; ``compiled=False`` runs the same kernel as plain Python.
    """
    gamma = _check_gamma(gamma)
    if not 0 <= int(n_iterations) <= INT64_MAX:
        raise ValueError(f"n_iterations must be in [0, {INT64_MAX}], got {n_iterations}")
    kernel = _q_value_iteration_kernel if compiled else _q_value_iteration_kernel.py_func
    q, hist, sweeps, delta = kernel(mdp.T, mdp.R, mdp.allowed, gamma, int(n_iterations), float(tol), bool(history))
    return ValueIterationResult(q, hist, int(sweeps), float(delta))


# Learning-rate schedule alpha0 / (1 + decay * t), with the textbook's values. On the built-in
# MDP it is as good as the alternatives tried (power decays (1 + t)^-0.7..0.8, per-(s, a)
# visit counts): the remaining error is sampling noise, about 0.1 after 2M steps at gamma 0.9.
DEFAULT_ALPHA0 = 0.05
DEFAULT_DECAY = 0.005


def q_learning(
    mdp: MDP,
    gamma: float,
    n_steps: int,
    *,
    alpha0: float = DEFAULT_ALPHA0,
    decay: float = DEFAULT_DECAY,
    seed: int = 0,
    start_state: int = 0,
    record_every: int = 0,
    compiled: bool = True,
) -> QLearningResult:
    """Q-learning from one trajectory of uniformly random allowed actions, simulated with T.

    Step ``t`` (from 0) updates ``Q[s, a] += alpha_t * (r + gamma * max_a' Q[s', a'] - Q[s, a])``
    with ``alpha_t = alpha0 / (1 + decay * t)``. Same ``seed`` -> same trajectory and the same
    Q, compiled or not (``compiled=False`` runs the kernel as plain Python; it seeds NumPy's
    global legacy generator, as ``np.random.seed`` does). ``record_every > 0`` keeps Q every
    that many steps.
    """
    gamma = _check_gamma(gamma)
    n_steps, record_every, seed = int(n_steps), int(record_every), int(seed)
    if not 0 <= n_steps <= INT64_MAX:
        raise ValueError(f"n_steps must be in [0, {INT64_MAX}], got {n_steps}")
    if not (alpha0 > 0 and decay >= 0):
        raise ValueError(f"need alpha0 > 0 and decay >= 0, got alpha0={alpha0}, decay={decay}")
    if not 0 <= start_state < mdp.n_states:
        raise ValueError(f"start_state must be in [0, {mdp.n_states}), got {start_state}")
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    if not 0 <= record_every <= INT64_MAX:
        raise ValueError(f"record_every must be in [0, {INT64_MAX}], got {record_every}")
    cdf, actions, n_allowed = _sampling_tables(mdp)
    kernel = _q_learning_kernel if compiled else _q_learning_kernel.py_func
    q, hist = kernel(
        cdf,
        mdp.R,
        actions,
        n_allowed,
        gamma,
        n_steps,
        float(alpha0),
        float(decay),
        seed,
        int(start_state),
        record_every,
    )
    steps = np.arange(hist.shape[0], dtype=np.int64) * max(record_every, 1)
    return QLearningResult(q, hist, steps)


def _sampling_tables(mdp: MDP) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cdf float64[S, A, S], actions int64[S, A], n_allowed int64[S]) for the Q-learning kernel.

    The cumulative sum is set to exactly 1.0 from the last possible s' on, so that inverse-CDF
    sampling with u in [0, 1) always lands on a possible s' despite rounding."""
    S, A = mdp.n_states, mdp.n_actions
    cdf = np.cumsum(mdp.T, axis=2)
    actions = np.full((S, A), -1, dtype=np.int64)
    n_allowed = np.zeros(S, dtype=np.int64)
    for s, acts in enumerate(mdp.possible_actions):
        actions[s, : len(acts)] = acts
        n_allowed[s] = len(acts)
        for a in acts:
            last = int(np.flatnonzero(mdp.T[s, a] > 0)[-1])
            cdf[s, a, last:] = 1.0
    return cdf, actions, n_allowed


def greedy_policy(q: np.ndarray) -> np.ndarray:
    """``int64[S]``: the action of highest Q in each state (the lowest index on ties)."""
    return np.argmax(q, axis=1).astype(np.int64)


def bellman_residual(mdp: MDP, q: np.ndarray, gamma: float) -> float:
    """max over allowed (s, a) of |Q[s, a] - sum_s' T (R + gamma max_a' Q[s', a'])|, in NumPy."""
    v = q.max(axis=1)
    backup = np.einsum("ijk,ijk->ij", mdp.T, mdp.R) + gamma * mdp.T @ v
    allowed = mdp.allowed
    return float(np.max(np.abs(q[allowed] - backup[allowed])))
