"""``python -m diffuse_core`` is the ``diffuse-studio`` command."""

import sys

from .cli import main

sys.exit(main())
