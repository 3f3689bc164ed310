"""Ocean Protocol's own rules, written once for the Provider, the CLI and the engine: reading DDOs from the
chain, trusted-algorithm checksums, the texts consumers sign, metadata states, the policy refusal shape.
"""
