"""``python -m pyimgopt``: the same as the ``pyimgopt`` command."""

import sys

from .cli import main

sys.exit(main())
