"""``python -m engine …`` is the same as the ``compression-engine`` command."""
import sys

from engine.cli import main

sys.exit(main())
