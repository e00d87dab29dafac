"""``python -m feedback_alignment.data list|fetch ...``: the data CLI without the main one."""

import sys

from .cli import main

sys.exit(main())
