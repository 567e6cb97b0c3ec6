"""Tree search over environment clones: BAVT, its residual critic, and a vote baseline.

Nothing here imports the agent loop; `tier.BavtTier` is the one bridge into the ladder.
"""
