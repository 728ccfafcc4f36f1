"""GraphiQL from the service's own files: page.py serves it, fetch.py downloads the pinned npm
files it needs (`python -m app.api.graphiql.fetch`, run by `make install`)."""
