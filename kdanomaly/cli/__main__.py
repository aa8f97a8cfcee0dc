"""``python -m kdanomaly.cli``: the ``kdanomaly`` command."""

import sys

from kdanomaly.cli.main import main

sys.exit(main())
