"""Tabular Q-value iteration and Q-learning (dqnfast.agent.tabular), its CLI and its benchmark.

Value iteration is checked against the Bellman optimality equation and against an
independent policy evaluation (a linear solve in NumPy); Q-learning against value
iteration; the numba kernels against the same source run as plain Python.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dqnfast.agent import tabular
from dqnfast.agent.tabular import MDP, q_learning, q_value_iteration, random_mdp, three_state_mdp

REPO = Path(__file__).resolve().parents[1]

# Q-learning on the built-in MDP, gamma 0.9: with the textbook schedule (0.05 / (1 + 0.005 t))
# the error left after 2M steps is sampling noise of about 0.05..0.2 over seeds 0..5 (Q-values
# range from -5 to 50); 0.5 keeps a wide margin at the fixed seed, and is far below the gaps
# between the actions' values (>= 1.9) so the greedy policy must match too.
QL_STEPS = 2_000_000
QL_TOL = 0.5


def _mdps():
    return [("three-state", three_state_mdp()), ("random-40x4", random_mdp(40, 4, seed=1))]


def _independent_backup(mdp: MDP, q: np.ndarray, gamma: float) -> np.ndarray:
    """sum_s' T (R + gamma max_a' Q[s', a']) with explicit loops over the given lists."""
    v = q.max(axis=1)
    out = np.full_like(q, -np.inf)
    for s, acts in enumerate(mdp.possible_actions):
        for a in acts:
            out[s, a] = sum(mdp.T[s, a, s2] * (mdp.R[s, a, s2] + gamma * v[s2]) for s2 in range(mdp.n_states))
    return out


# ------------------------------------------------------------ value iteration
@pytest.mark.parametrize("gamma", [0.0, 0.5, 0.9, 0.95])
@pytest.mark.parametrize("name,mdp", _mdps())
def test_value_iteration_satisfies_bellman_optimality(name, mdp, gamma):
    res = q_value_iteration(mdp, gamma, n_iterations=5000)
    assert res.sweeps < 5000, "stopped at the sweep limit, not at a fixed point"
    allowed = mdp.allowed
    assert np.all(np.isfinite(res.q[allowed])) and np.all(res.q[~allowed] == -np.inf)
    backup = _independent_backup(mdp, res.q, gamma)
    assert np.max(np.abs(backup[allowed] - res.q[allowed])) <= 1e-8
    assert tabular.bellman_residual(mdp, res.q, gamma) <= 1e-8


@pytest.mark.parametrize("gamma", [0.5, 0.9, 0.95])
@pytest.mark.parametrize("name,mdp", _mdps())
def test_greedy_policy_values_equal_policy_evaluation(name, mdp, gamma):
    q = q_value_iteration(mdp, gamma, n_iterations=5000).q
    pi = tabular.greedy_policy(q)
    S = mdp.n_states
    assert all(pi[s] in mdp.possible_actions[s] for s in range(S))
    P = mdp.T[np.arange(S), pi]  # [S, S']
    r = np.einsum("ij,ij->i", P, mdp.R[np.arange(S), pi])
    v = np.linalg.solve(np.eye(S) - gamma * P, r)
    np.testing.assert_allclose(q[np.arange(S), pi], v, rtol=0, atol=1e-8)
    np.testing.assert_allclose(q.max(axis=1), v, rtol=0, atol=1e-8)


def test_three_state_mdp_matches_the_textbook():
    mdp = three_state_mdp()
    q9 = q_value_iteration(mdp, 0.9).q
    assert tabular.greedy_policy(q9).tolist() == [0, 0, 1]
    np.testing.assert_allclose(q9[0], [18.91891892, 17.02702703, 13.62162162], atol=1e-8)
    np.testing.assert_allclose([q9[1, 0], q9[1, 2], q9[2, 1]], [0.0, -4.87971488, 50.13365013], atol=1e-8)
    assert tabular.greedy_policy(q_value_iteration(mdp, 0.95).q).tolist() == [0, 2, 1]


def test_value_iteration_history_and_stopping():
    mdp = three_state_mdp()
    res = q_value_iteration(mdp, 0.9, n_iterations=10, history=True)
    assert res.sweeps == 10 and res.history.shape == (11, 3, 3)
    assert np.array_equal(res.history[-1], res.q)
    assert np.all(res.history[0][mdp.allowed] == 0)
    loose = q_value_iteration(mdp, 0.9, n_iterations=5000, tol=1e-3)
    assert loose.delta <= 1e-3 and loose.sweeps < q_value_iteration(mdp, 0.9, n_iterations=5000).sweeps
    assert tabular.bellman_residual(mdp, loose.q, 0.9) <= 0.9 * 1e-3 + 1e-12


# ----------------------------------------------------------------- Q-learning
def test_q_learning_converges_to_value_iteration():
    mdp = three_state_mdp()
    exact = q_value_iteration(mdp, 0.9).q
    res = q_learning(mdp, 0.9, QL_STEPS, seed=0)
    allowed = mdp.allowed
    assert np.all(res.q[~allowed] == -np.inf)
    err = np.max(np.abs(res.q[allowed] - exact[allowed]))
    assert err <= QL_TOL, err
    assert np.array_equal(tabular.greedy_policy(res.q), tabular.greedy_policy(exact))


def test_q_learning_after_the_cli_default_steps_matches_what_the_readme_says():
    # The README's figures are those of `python -m dqnfast.tabular` (1M steps, seed 0): within
    # 0.13 at gamma 0.9; at 0.95 still about 1.12 away (the 1/t step size forgets the zero
    # start slowly) with the greedy policy already right.
    mdp = three_state_mdp()
    allowed = mdp.allowed
    for gamma, low, high in ((0.9, 0.0, 0.13), (0.95, 1.0, 1.2)):
        exact = q_value_iteration(mdp, gamma).q
        learned = q_learning(mdp, gamma, 1_000_000, seed=0).q
        err = np.max(np.abs(learned[allowed] - exact[allowed]))
        assert low <= err <= high, (gamma, err)
        assert np.array_equal(tabular.greedy_policy(learned), tabular.greedy_policy(exact))


def test_q_learning_history_and_seed():
    mdp = three_state_mdp()
    a = q_learning(mdp, 0.9, 10_000, seed=3, record_every=1000)
    assert a.history.shape == (11, 3, 3) and a.steps.tolist() == list(range(0, 10_001, 1000))
    assert np.array_equal(a.history[-1], a.q)
    assert np.array_equal(q_learning(mdp, 0.9, 10_000, seed=3).q, a.q)
    assert not np.array_equal(q_learning(mdp, 0.9, 10_000, seed=4).q, a.q)


# ---------------------------------------------------- compiled vs plain Python
def test_compiled_and_plain_python_give_identical_numbers():
    # Same source, no fastmath (float operations in source order), and the same Mersenne
    # Twister seeded the same way inside the kernel: the results are bit-identical.
    for _, mdp in _mdps():
        a = q_value_iteration(mdp, 0.9, n_iterations=300, history=True)
        b = q_value_iteration(mdp, 0.9, n_iterations=300, history=True, compiled=False)
        assert np.array_equal(a.q, b.q) and np.array_equal(a.history, b.history)
        assert (a.sweeps, a.delta) == (b.sweeps, b.delta)
        c = q_learning(mdp, 0.9, 20_000, seed=7, record_every=2_000)
        d = q_learning(mdp, 0.9, 20_000, seed=7, record_every=2_000, compiled=False)
        assert np.array_equal(c.q, d.q) and np.array_equal(c.history, d.history)
    # ... and the compiled path really is numba's machine code, not the Python function.
    assert tabular._q_learning_kernel.signatures and tabular._q_value_iteration_kernel.signatures


# ------------------------------------------------------------- MDP validation
def _textbook_lists():
    T = [
        [[0.7, 0.3, 0.0], [1.0, 0.0, 0.0], [0.8, 0.2, 0.0]],
        [[0.0, 1.0, 0.0], None, [0.0, 0.0, 1.0]],
        [None, [0.8, 0.1, 0.1], None],
    ]
    R = [[[10, 0, 0], [0, 0, 0], [0, 0, 0]], [[0, 0, 0], [0, 0, 0], [0, 0, -50]], [[0, 0, 0], [40, 0, 0], [0, 0, 0]]]
    return T, R, [[0, 1, 2], [0, 2], [1]]


def test_mdp_accepts_the_textbook_nested_lists():
    mdp = MDP(*_textbook_lists())
    ref = three_state_mdp()
    assert np.array_equal(mdp.T, ref.T) and np.array_equal(mdp.R, ref.R)
    assert mdp.possible_actions == ref.possible_actions
    assert not mdp.T.flags.writeable
    T, R, acts = _textbook_lists()
    T[1][1] = [0.0, 0.0, 0.0]  # zeros for an action that is not listed: as good as None
    assert np.array_equal(MDP(T, R, acts).T, ref.T)


def _bad(change):
    T, R, acts = _textbook_lists()
    T = [[None if row is None else list(row) for row in s] for s in T]
    change(T, R, acts)
    return T, R, acts


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda T, R, A: T[0].__setitem__(0, [0.7, 0.2, 0.0]), r"T\[0, 0\] sums to 0\.9"),
        (lambda T, R, A: A[1].append(1), r"action 1 is listed for state 1 but T\[1, 1\] has no transitions"),
        (lambda T, R, A: T[1].__setitem__(1, [0.0, 1.0, 0.0]), r"T\[1, 1\] has transitions but action 1 is not in"),
        (
            lambda T, R, A: T[0].__setitem__(2, [1.2, -0.2, 0.0]),
            r"T\[0, 2, 1\] is -0\.2: probabilities must be finite and >= 0",
        ),
        (lambda T, R, A: R[0].__setitem__(0, [math.nan, 0, 0]), r"R\[0, 0, 0\] is nan on a possible transition"),
        (lambda T, R, A: A.__setitem__(2, []), r"state 2 has no allowed action"),
        (lambda T, R, A: A.__setitem__(2, [3]), r"possible_actions\[2\] holds 3"),
        (lambda T, R, A: A.__setitem__(0, [0, 0]), r"lists an action twice"),
        (lambda T, R, A: A.pop(), r"possible_actions has 2 states, T has 3"),
        (lambda T, R, A: R.pop(), r"R must have T's shape"),
    ],
)
def test_mdp_rejects_bad_input_with_one_line(change, message):
    with pytest.raises(ValueError, match=message) as info:
        MDP(*_bad(change))
    assert "\n" not in str(info.value)


def test_mdp_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"T must have shape \[S, A, S\]"):
        MDP(np.ones((3, 3)), np.ones((3, 3)), [[0]] * 3)
    with pytest.raises(ValueError, match=r"T must have shape \[S, A, S\]"):
        MDP(np.ones((3, 2, 4)) / 4, np.ones((3, 2, 4)), [[0]] * 3)


def test_functions_reject_bad_arguments():
    mdp = three_state_mdp()
    for gamma in (1.0, -0.1, math.nan):
        with pytest.raises(ValueError, match="gamma must be in"):
            q_value_iteration(mdp, gamma)
        with pytest.raises(ValueError, match="gamma must be in"):
            q_learning(mdp, gamma, 10)
    with pytest.raises(ValueError, match="start_state"):
        q_learning(mdp, 0.9, 10, start_state=3)
    with pytest.raises(ValueError, match="n_steps"):
        q_learning(mdp, 0.9, -1)


# ------------------------------------------------------------------------ CLI
def _run(args, timeout=120):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]), MPLBACKEND="Agg")
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_cli_prints_q_values_and_policy_and_writes_plot_and_json(tmp_path):
    plot, out = tmp_path / "plots" / "q.png", tmp_path / "q.json"
    r = _run(
        [
            "-m",
            "dqnfast.tabular",
            "--gamma",
            "0.9",
            "--q-learning-steps",
            "200000",
            "--seed",
            "1",
            "--plot",
            str(plot),
            "--json",
            str(out),
        ]
    )
    assert r.returncode == 0, r.stderr
    assert "Q-value iteration:" in r.stdout and "Q-learning: 200,000 steps" in r.stdout
    assert re.search(r"^\s+0\s+18\.918919\s+17\.027027\s+13\.621622\s+a0$", r.stdout, re.M), r.stdout
    assert re.search(r"^\s+2\s+-\s+50\.133650\s+-\s+a1$", r.stdout, re.M), r.stdout
    assert "greedy policy (action per state): [0, 0, 1]" in r.stdout
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    doc = json.loads(out.read_text())
    assert doc["gamma"] == 0.9 and doc["q_value_iteration"]["policy"] == [0, 0, 1]
    assert doc["q_value_iteration"]["q"][1][1] is None
    assert doc["q_value_iteration"]["bellman_residual"] <= 1e-8
    assert doc["q_learning"]["steps"] == 200000 and doc["q_learning"]["seed"] == 1
    assert doc["q_learning"]["max_abs_diff_to_value_iteration"] < 5.0


@pytest.mark.parametrize("gamma", ["1.0", "-0.5", "nan"])
def test_cli_bad_gamma_is_one_line_and_status_2(gamma):
    r = _run(["-m", "dqnfast.tabular", f"--gamma={gamma}"])
    assert r.returncode == 2
    assert r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and "--gamma must be in [0, 1)" in r.stderr


@pytest.mark.parametrize(
    "args,message",
    [
        (["--iterations", "0"], "--iterations must be in [1, 9223372036854775807], got 0"),
        (["--iterations", "9223372036854775808"], "--iterations must be in [1, 9223372036854775807]"),
        (["--iterations", "99999999999999999999999"], "--iterations must be in [1, 9223372036854775807]"),
        (["--q-learning-steps", "-1"], "--q-learning-steps must be in [0, 9223372036854775807], got -1"),
        (["--q-learning-steps", "99999999999999999999999"], "--q-learning-steps must be in [0, 9223372036854775807]"),
        (["--seed", "-1"], "--seed must be in"),
        (["--gamma", "x"], "invalid float value"),
        (["--bogus"], "unrecognized arguments"),
    ],
)
def test_cli_bad_input_in_process(args, message, capsys):
    from dqnfast.cli.tabular import main

    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err


@pytest.mark.parametrize("iterations", ["1000000000000", "9223372036854775807"])
def test_cli_takes_any_int64_sweep_limit_and_stops_at_the_fixed_point(iterations, tmp_path, capsys):
    """The history grows with the sweeps run, not with the limit (a MemoryError and a negative size before)."""
    from dqnfast.cli.tabular import main

    assert main(["--iterations", iterations, "--q-learning-steps", "0", "--plot", str(tmp_path / "q.png")]) == 0
    out = capsys.readouterr().out
    assert f"Q-value iteration: 80 sweeps (at most {iterations})" in out and (tmp_path / "q.png").is_file()


def test_value_iteration_history_grows_with_the_sweeps_run():
    mdp = three_state_mdp()
    for compiled in (True, False):
        res = q_value_iteration(mdp, 0.99, 2**63 - 1, history=True, compiled=compiled)
        assert res.delta == 0.0 and res.history.shape == (res.sweeps + 1, 3, 3) and res.sweeps > 2048
        np.testing.assert_array_equal(res.history[-1], res.q)
        np.testing.assert_array_equal(res.history[:301], q_value_iteration(mdp, 0.99, 300, history=True).history)
    with pytest.raises(ValueError, match="n_iterations must be in"):
        q_value_iteration(mdp, 0.9, 2**63)
    with pytest.raises(ValueError, match="n_steps must be in"):
        q_learning(mdp, 0.9, 2**63)


def test_cli_skips_q_learning_at_zero_steps(capsys):
    from dqnfast.cli.tabular import main

    assert main(["--gamma", "0.95", "--q-learning-steps", "0"]) == 0
    out = capsys.readouterr().out
    assert "Q-learning" not in out and "greedy policy (action per state): [0, 2, 1]" in out


# ------------------------------------------------------------------ benchmark
def test_benchmark_quick_runs(tmp_path):
    out = tmp_path / "tabular.json"
    r = _run([str(REPO / "benchmarks" / "tabular.py"), "--quick", "--json", str(out)], timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    lines = dict(re.findall(r"^(tabular\.\S+) = (\S+) \S+$", r.stdout, re.M))
    for name in (
        "tabular.value_iteration_three_state_speedup",
        "tabular.q_learning_three_state_speedup",
        "tabular.value_iteration_random_speedup",
        "tabular.q_learning_random_speedup",
    ):
        assert name in lines, sorted(lines)
        assert math.isfinite(float(lines[name])) and float(lines[name]) > 0
    doc = json.loads(out.read_text())
    assert doc["benchmark"] == "tabular" and doc["config"]["quick"] is True
    assert set(lines) <= set(doc["metrics"])
