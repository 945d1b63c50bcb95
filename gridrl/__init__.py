"""gridrl: multi-agent reinforcement learning for grid operation, on gridphysics (work in progress)."""
