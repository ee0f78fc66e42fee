"""One module per contestant; see ``_run.py`` for the names the CLI uses."""
