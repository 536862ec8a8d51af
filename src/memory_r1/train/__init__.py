"""Training: RL for the Memory Manager and the Answer Agent with verl.

:mod:`.runner` (``memr1 train``) and :mod:`.loop` (``memr1 train loop``) drive a run;
:mod:`.stages` holds one module a training stage (its rows, reward names and scoring);
:mod:`.verl` is the only place that imports verl, ray or hydra (config, launch, the reward entry,
the row schema, and the CPU plug-in :mod:`.verl.cpu`).
"""
