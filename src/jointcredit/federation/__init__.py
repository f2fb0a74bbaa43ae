"""The credit center's federated server and the banks' nodes, on a real Flower deployment.

* :mod:`~jointcredit.federation.transport` - envelope bytes in Flower messages (the only thing
  the Flower layer does), :class:`FlowerTransport`.
* :mod:`~jointcredit.federation.server_app` - the credit center's ServerApp: polls registered
  banks, runs the center halves of the protocols their jobs ask for.
* :mod:`~jointcredit.federation.client_app` - the bank's ClientApp: relays messages to the
  bank's job runner (:mod:`~jointcredit.federation.bank`).
* :mod:`~jointcredit.federation.jobs` - bank jobs (align, train, score, echo) over any session.
* :mod:`~jointcredit.federation.worker` - long-lived task workers (``--isolation process``).
* :mod:`~jointcredit.federation.deploy` - certificates, keys, SuperLink/SuperNode processes.
* :mod:`~jointcredit.federation.checkpoint` - what a failed training step keeps, and the
  ``resume`` protocol (``jointcredit run --job train --resume JOB_ID``).
* :mod:`~jointcredit.federation.guardlink` - the SuperLink launcher that keeps Flower's
  Control and Runtime APIs for the center's own host.

See docs/deployment.md. Submodules are imported on demand (they import Flower).
"""
