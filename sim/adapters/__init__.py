"""Adapters from a robotrl VecEnv to the interfaces of other RL libraries."""
