"""`python -m agent` is the vti-failover command."""

import sys

from agent.cli import main

sys.exit(main())
