"""The run's config: composed from ``conf/`` (``compose``), checked against the code (``schema``) and in its
values (``validation``), each failure one line naming the key and the fix, before anything is written."""
