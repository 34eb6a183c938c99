import sys

from kvd_transformers.report.cli import main

sys.exit(main())
