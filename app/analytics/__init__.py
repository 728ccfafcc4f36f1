"""Analytics over executions: what AI enhancement changes in a template's runs."""
