"""The GraphQL API (Strawberry on Starlette): one module per domain, composed in schema.py."""
