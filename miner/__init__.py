"""The reference MIA miner: signs in with a wallet, pulls jobs, answers them with an
OpenAI-compatible model server and posts signed results. Talks to the backend over HTTP only."""

__version__ = "0.1.0"
