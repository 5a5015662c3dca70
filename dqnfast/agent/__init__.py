"""Learners: networks, update steps and the objects that hold their state (DQN; tabular beside it)."""
