"""`python -m daemons.sim`: the fleet simulator (daemons.sim.fleet)."""

import sys

from daemons.sim.fleet import main

sys.exit(main())
