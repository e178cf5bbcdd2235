"""The product pipeline (``make reproduce``): the supervised encoder, the ship decision between it and
the RL heads of a ``make rl-study`` verdict, the shipped model and its test-split report.

Above ``rl/`` and ``retrieval/``, which never import it: the pipeline orders their stages, it owns
none of them (supervised training is ``retrieval.train``, the ship rule ``retrieval.evaluation``,
the heads ``rl``).
"""
