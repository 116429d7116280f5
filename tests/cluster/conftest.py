from __future__ import annotations

from importlib.util import find_spec

# Ray is the optional `cluster` extra: without it there is nothing here to run.
collect_ignore_glob = [] if find_spec("ray") else ["test_*.py"]
