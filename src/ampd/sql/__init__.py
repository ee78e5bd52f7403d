"""The SQL library every service that runs SQL uses: the catalog of committed files
(catalog.py, footer_cache.py), planning with limits (engine.py), the result's batches (batches.py), dataset
references (references.py), Amp's plan rules (rules.py) and Amp's built-in EVM functions
(functions/, docs/feat/sql-functions.md).

Functions: `register_functions(ctx)` once per session; register the query's tables; plan
`prepare(ctx, sql)` instead of `sql`; pass the DataFrame through `restore_names` so that
unnamed columns carry the function names the query used.
"""

from ampd.sql.functions import FunctionError as FunctionError
from ampd.sql.functions import error_text as error_text
from ampd.sql.functions import prepare as prepare
from ampd.sql.functions import public_name as public_name
from ampd.sql.functions import register_functions as register_functions
from ampd.sql.functions import restore_names as restore_names
