"""The SQL library the query server and the workers share: dataset references, functions."""
