"""The Dagster code location (``workspace.yaml``): every artifact of the lab as an asset.

The lab is the repository above the working directory, or ``OLMO_LAB_REPO``; its
``params.yaml`` defines the partitions and code versions (reload the code location after
editing it). ``make ui`` serves this on 127.0.0.1 with the instance in ``.dagster/``.
"""

from olmo_assets.defs.location import build_definitions
from olmo_assets.lab.params import Lab

defs = build_definitions(Lab.load())
