"""The verl wing: the only place in :mod:`memory_r1` that imports verl, ray or hydra
(``tests/train/test_import_boundary.py`` checks it). Importing this package imports none of them.

- :mod:`.cpu`: verl on CPU through its plug points (platform, engines, rollout server, registration).
"""
