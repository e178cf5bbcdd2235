"""Sketch-free adaptation of a trained encoder to one folder of photos: ``python -m retrieval.adapt``.

``run`` is the command (config, checks, the training run, the card, the atomic write); ``cache`` keeps
adapted models by (start model, folder content, budget) for the app's ``--photos DIR --adapt-minutes M``.
The training itself is the ``gallery`` stage of ``retrieval.train`` (``steps.gallery_step``).
"""
