"""``python -m devstack.contracts``: see the package's docstring."""

import sys

from devstack.contracts import main

sys.exit(main())
