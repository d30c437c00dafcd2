"""The treasury: revenue -> buyback of $SERV on a DEX -> burn, each step recorded and verifiable."""
