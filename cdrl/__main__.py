import sys

from cdrl.cli import main

sys.exit(main())
