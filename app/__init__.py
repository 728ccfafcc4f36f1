"""workflow-service: multi-tenant workflows on Temporal behind one GraphQL API."""
