"""The `wfs` command line: the top edge, free to import app and workers."""
