"""Outbound webhooks: a tenant's endpoints receive its notifications (app/notifications), signed
per the Standard Webhooks spec and delivered by Temporal activities with retries.

- events.py: event names and the payload built from a notification;
- policy.py: which URLs may be registered and reached (the `http.request` rules, re-checked at
  every delivery attempt);
- service.py: create/list/update/delete, the delivery log and redelivery (admins only);
- dispatcher.py: the worker's periodic round that turns new notifications into delivery rows
  and starts one delivery workflow per row;
- sender.py: one delivery attempt (sign, POST, record the outcome);
- workflow_io.py: what the dispatcher hands the delivery workflow.
docs/webhooks.md says what a receiver sees and how to verify it.
"""
