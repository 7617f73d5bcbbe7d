"""surf/TransferLearningV2: the DINOv2 stop/continue classifier that facetselfcal's early stopping
builds, here answered by stopcald (convert the published checkpoint with stopcal-convert and serve
it; README, "Using stopcal from facetselfcal")."""
from cortexchange._served import ServedArchitecture


class TransferLearningV2(ServedArchitecture):
    """TransferLearningV2(model_name=..., device="cpu", variational_dropout=0): scores come from the
    stopcald at $STOPCAL_URL; device is accepted and ignored (the server decides)."""
