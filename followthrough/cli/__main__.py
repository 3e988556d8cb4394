"""``python -m followthrough.cli``: the same as the ``followthrough`` command."""

import sys

from followthrough.cli import main

sys.exit(main())
