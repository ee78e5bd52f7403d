"""The SQL library every service that runs SQL uses: the catalog of committed files
(catalog.py, footer_cache.py), planning with limits and batch streams (engine.py), dataset
references (references.py) and Amp's plan rules (rules.py)."""
