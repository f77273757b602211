"""``python -m helpers.train --config run.json``: the headless trainer at its documented place (also under torchrun).

The trainer itself is helpers/training/train.py.
"""

from helpers.training.train import main

if __name__ == "__main__":
    raise SystemExit(main())
