"""The consent gate: what each purpose may see of each citizen, decided by policy and consent.

``policy`` (the YAML policy language), ``register`` (consent state), ``evaluate`` (the permitted
view), ``pseudonym`` (keyed HMAC) and ``gate_core`` are pure; ``gate_loop`` runs them on Kafka.
"""
