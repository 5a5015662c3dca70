"""dqnfast: high-throughput DQN for Atari (envpool + a C++ replay ring + a torch learner)."""

__version__ = "0.1.0"
