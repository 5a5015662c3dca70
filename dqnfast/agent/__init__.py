"""The learners: their networks, update steps and the objects that hold their state.

``dqn`` (the double-DQN update and its ``Learner``), ``networks`` (Nature CNN, MLP, dueling,
C51 and noisy heads: ``make_network``), ``actor`` (ε schedules and batched ε-greedy),
``distributional`` (C51's projection and loss), ``noisy`` (noisy linear layers), ``reinforce``
(REINFORCE's policy network and learner), ``tabular`` (Q-value iteration and Q-learning on a
finite MDP, numba-compiled). How a learner runs (envs, replay, checkpoints) is
``dqnfast.training``'s.
"""
