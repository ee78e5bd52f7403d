"""`make bench`: benchmarks of the extraction pipeline against its peers.

The extraction engine has not landed yet, so there is nothing to measure; this says so and
fails rather than pretending to have measured something.
"""

import sys

sys.exit("error: no benchmark yet: the extraction engine (and its benchmark) is not implemented")
