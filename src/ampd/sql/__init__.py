"""SQL support shared by the query paths: Amp's built-in EVM functions.

Use: `register_functions(ctx)` once per session; register the query's tables; plan
`prepare(ctx, sql)` instead of `sql`; pass the resulting DataFrame through
`restore_names` so unnamed columns carry the function names the query used. See
docs/feat/sql-functions.md.
"""

from ampd.sql.functions import FunctionError as FunctionError
from ampd.sql.functions import error_text as error_text
from ampd.sql.functions import prepare as prepare
from ampd.sql.functions import public_name as public_name
from ampd.sql.functions import register_functions as register_functions
from ampd.sql.functions import restore_names as restore_names
