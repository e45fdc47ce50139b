import sys

from kseg.cli import main

sys.exit(main())
