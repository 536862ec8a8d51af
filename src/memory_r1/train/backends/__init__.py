"""Training backends. Import-light: each backend module imports its framework (verl, TRL, ...) itself.

- :mod:`memory_r1.train.backends.verl_cpu`: verl 0.9.1's own PPO/GRPO trainer on CPU (platform, engines,
  a transformers rollout), through verl's extension points.
- :mod:`memory_r1.train.backends.verl_runner`: compose verl's ``ppo_trainer`` config and run it.
"""
