"""``python -m retrieval.evaluation``: score a checkpoint on a dataset split (see retrieval.evaluation.evaluate)."""

import sys

from retrieval.evaluation.evaluate import main

sys.exit(main())
