import sys

from batchnb.cli import main

sys.exit(main())
