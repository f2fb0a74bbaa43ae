"""jointcredit: joint credit-risk modeling between a public credit center and a bank.

The credit center's data stays usable but invisible; the bank's labels and model stay private.
See ``docs/`` for the protocols, the threat model, the CLI and the Python API.
"""

__version__ = "0.1.0"
