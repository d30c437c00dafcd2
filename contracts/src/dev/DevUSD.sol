// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";

/// @title A USD stablecoin for local chains only (6 decimals, like USDC).
/// @notice The owner may mint, so a devnet can fund treasuries and traders.
///         Never deploy this anywhere that has value.
contract DevUSD is ERC20, Ownable {
    constructor(uint256 initialSupply) ERC20("Dev USD", "dUSD") Ownable(msg.sender) {
        _mint(msg.sender, initialSupply);
    }

    function decimals() public pure override returns (uint8) {
        return 6;
    }

    function mint(address to, uint256 amount) external onlyOwner {
        _mint(to, amount);
    }
}
