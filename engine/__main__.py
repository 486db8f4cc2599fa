"""``python -m engine …`` is the same as the ``compression-engine`` command."""
import sys

from engine.cli.main import main

sys.exit(main())
