"""``python -m diffuse_core`` is the ``diffuse-studio`` command."""

import sys

from diffuse_core.cli import main

sys.exit(main())
