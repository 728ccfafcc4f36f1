"""Service-level targets of templates (docs/analytics.md, "SLAs"): the targets in force for a
tenant's runs of a template, the breaches recorded when a run or a window misses them, and the
periodic evaluation of success rates. The report over a window is analytics'
(app/analytics/sla.py)."""
