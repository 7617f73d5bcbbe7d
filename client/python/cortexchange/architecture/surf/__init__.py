"""The surf group of architectures: the ones stopcald serves (surf/TransferLearningV2)."""
