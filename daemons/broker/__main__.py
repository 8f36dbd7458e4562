import sys

from daemons.broker.server import main

sys.exit(main())
