"""The files API's rules (upload, list, stat, delete, signed download URLs) over a tenant's
confined storage (app/steps/storage.py, shared with the `files.*` steps)."""
