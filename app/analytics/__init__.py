"""Analytics over executions: what AI enhancement changes in a template's runs (impact),
execution statistics with trends (stats), resource usage of executions and templates (usage),
and the daily rollups both read for whole days, refreshed by a Temporal schedule (rollup)."""
