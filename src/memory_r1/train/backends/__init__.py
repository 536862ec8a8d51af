"""Training backends. Import-light: each backend module imports its framework (verl, TRL, ...) itself.

- :mod:`memory_r1.train.backends.verl_runner`: compose verl's ``ppo_trainer`` config and run it.
"""
