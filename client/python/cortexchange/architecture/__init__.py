"""cortexchange.architecture as facetselfcal uses it: get_architecture("group/Name") returns an
architecture class; Architecture is their base. The classes here forward to stopcald (see
cortexchange/_served.py); nothing is imported from a cache or downloaded."""
import importlib

from cortexchange.wdclient import client  # noqa: F401 - the real module exposes it here too

SERVED = ("surf/TransferLearningV2",)


class ArchitectureNotServed(ImportError, ValueError):
    """get_architecture() of a name stopcal does not serve. An ImportError, so facetselfcal goes on
    without the network as it does when cortExchange is missing; a ValueError, as the real one."""


class Architecture:
    """The base of every architecture: built with a model name and a device; prepare_data() turns
    an input into what predict() takes."""

    def __init__(self, model_name, device, *args, **kwargs):
        if model_name is None:
            raise ValueError("Pass model_name (group/model) to the architecture.")
        self.model_name = model_name
        self.device = device

    def load_checkpoint(self, path):
        raise NotImplementedError("with stopcal the checkpoint is loaded by stopcald, not here")

    def prepare_data(self, data):
        raise NotImplementedError

    def predict(self, data):
        raise NotImplementedError

    @staticmethod
    def add_argparse_args(parser):
        """Architectures may add command-line options; the base adds none."""


def get_architecture(architecture_type):
    """The class for "group/Name" (e.g. "surf/TransferLearningV2")."""
    if architecture_type is None:
        raise ValueError("Pass the architecture as group/model, e.g. surf/TransferLearningV2.")
    segments = architecture_type.split("/", 1)
    if len(segments) != 2:
        raise ValueError("Invalid architecture '%s': expected group/model." % architecture_type)
    org, name = segments
    cls = None
    if org.isidentifier() and name.isidentifier():
        try:
            cls = getattr(importlib.import_module("cortexchange.architecture.%s.%s" % (org, name)), name, None)
        except ImportError:
            cls = None
    if not (isinstance(cls, type) and issubclass(cls, Architecture)):
        raise ArchitectureNotServed(
            "stopcal's cortexchange stand-in (on PYTHONPATH) serves %s, not '%s'; take client/python off "
            "PYTHONPATH to use the real cortExchange" % (", ".join(SERVED), architecture_type))
    return cls
