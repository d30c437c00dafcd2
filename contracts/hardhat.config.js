// Only used to run a local JSON-RPC node for tests (`npx hardhat node`); contracts are
// compiled by scripts/build.js with the pinned npm solc, not by Hardhat.
module.exports = {
  solidity: "0.8.30",
  networks: {
    hardhat: { chainId: 31337, hardfork: "prague" },
  },
};
