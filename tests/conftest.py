"""Suite-wide pytest configuration: the Hypothesis profiles.

``HYPOTHESIS_PROFILE=ci`` (set by ``.ci/run``) turns the deadline off, since a loaded CI machine
makes timings meaningless, and prints the blob that reproduces a failure. ``dev`` is the default
for a developer's machine.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", deadline=None, print_blob=True, max_examples=300)
settings.register_profile("dev", deadline=500, max_examples=100)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
