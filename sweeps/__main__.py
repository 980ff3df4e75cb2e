"""`python -m sweeps ...` is `zerotune ...` (for `ray job submit` without the console script)."""

import sys

from sweeps.cli import main

sys.exit(main())
