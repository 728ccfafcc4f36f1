"""A tenant's durable notification log: what happened that a frontend or backend wants to hear
about (executions ending, AI budget warnings, `events.publish` messages), read in seq order."""
