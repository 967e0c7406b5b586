import sys

from routescope.commands import main

sys.exit(main())
