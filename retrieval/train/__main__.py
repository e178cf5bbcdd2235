"""``python -m retrieval.train``: supervised encoder training (see retrieval.train.pipeline)."""

from retrieval.train.pipeline import main

main()
