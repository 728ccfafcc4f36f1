"""`python -m app.ai.fake_llm`: serve the fake LLM API (see `app.ai.fake_llm.server.main`)."""

from app.ai.fake_llm.server import main

raise SystemExit(main())
