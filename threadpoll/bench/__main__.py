"""``python -m threadpoll.bench``: the benchmark, as ``python -m threadpoll bench`` runs it
(the gevent variants' child processes start here too)."""

import sys

from threadpoll.bench.run import main

sys.exit(main())
