"""Training: RL trainers for the Memory Manager and the Answer Agent (backends in :mod:`memory_r1.train.backends`)."""
