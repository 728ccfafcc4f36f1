"""The AI layer: providers, routing, the gateway and a fake LLM server for dev and tests."""
