"""Classification losses for the box head, one module per loss."""

from loce.losses.equilibrium import EquilibriumLoss, equilibrium_loss

__all__ = ["EquilibriumLoss", "equilibrium_loss"]
