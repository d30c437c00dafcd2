// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @title SERV, the token MIA buys back and burns.
/// @notice Fixed supply: everything is minted to the deployer in the constructor and
///         there is no mint function. Burns are transfers to a dead address, so the
///         total supply never changes and every burn is visible as a Transfer event.
contract SERVToken is ERC20 {
    /// @param initialSupply whole supply in base units (18 decimals)
    constructor(uint256 initialSupply) ERC20("SERV", "SERV") {
        _mint(msg.sender, initialSupply);
    }
}
