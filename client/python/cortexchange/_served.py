"""The architecture class behind the stand-in: the caller's sequence, answered by stopcald.

    model = TransferLearningV2(model_name="surf/...", device="cpu")  # checks the server and the model
    mean, std = model.predict(model.prepare_data("cycle_004-MFS-image.fits"))
    score = float(mean)           # or float(mean[0]): the continue score; std is None

Construction raises ImportError (naming the URL and the cause) when no server answers or the model
is not served, so a caller that treats ImportError as "no model" (facetselfcal) goes on without
it. predict() raises stopcal.StopcalError once the client's retries and failover are spent."""
import os

from cortexchange.architecture import Architecture


class Scores:
    """A 1-element, tensor-like holder of continue scores: float(s), s[0], s.item(), s.tolist()."""

    def __init__(self, values):
        self._values = [float(v) for v in values]

    def __len__(self):
        return len(self._values)

    def __getitem__(self, i):
        return self._values[i]

    def __iter__(self):
        return iter(self._values)

    def __float__(self):
        if len(self._values) != 1:
            raise TypeError("only a 1-element Scores converts to float")
        return self._values[0]

    def item(self):
        return float(self)

    def tolist(self):
        return list(self._values)

    @property
    def shape(self):
        return (len(self._values),)

    def __repr__(self):
        return "Scores(%r)" % self._values


class PreparedImage:
    """What prepare_data() returns: the FITS file to send (read at predict time, by the server)."""

    def __init__(self, path):
        self.path = path

    def __repr__(self):
        return "PreparedImage(%r)" % self.path


def _stopcal():
    try:
        import stopcal
    except ImportError as e:
        raise ImportError("stopcal's cortexchange stand-in needs the stopcal module (pip install ./client/python, "
                          "or client/python on PYTHONPATH): %s" % e) from None
    return stopcal


class ServedArchitecture(Architecture):
    def __init__(self, model_name=None, device="cpu", variational_dropout=0, **kwargs):
        super().__init__(model_name, device)
        if isinstance(variational_dropout, bool) or not isinstance(variational_dropout, int) or variational_dropout < 0:
            raise ValueError("variational_dropout must be an integer >= 0, not %r" % (variational_dropout,))
        if variational_dropout > 0:
            raise ValueError("variational_dropout=%d (Monte-Carlo dropout, for a std) is not offered by stopcald, "
                             "whose scores are deterministic; use variational_dropout=0" % variational_dropout)
        self.variational_dropout = 0
        stopcal = _stopcal()
        try:
            urls = stopcal.urls()
        except stopcal.StopcalError as e:
            raise ImportError("stopcal: %s (set STOPCAL_URL)" % e) from None
        where = ",".join(urls)
        try:
            listing = stopcal.models()
            served = {}
            for m in listing["models"]:
                for n in [m["name"]] + list(m.get("aliases") or []):
                    served[n] = m["name"]
        except stopcal.StopcalError as e:
            raise ImportError("stopcal: cannot use the stopcald at %s: %s" % (where, e)) from None
        except (KeyError, TypeError, AttributeError):
            raise ImportError("stopcal: %s answered GET /v1/models with something that is not a model list"
                              % where) from None
        if model_name not in served:
            raise ImportError("stopcal: the stopcald at %s does not serve the model '%s'; known models: %s (serve it "
                              "with stopcald --alias %s=NAME)" % (where, model_name, ", ".join(sorted(served)) or
                                                                   "none", model_name))
        self.served_model = served[model_name]
        self.urls = urls

    def prepare_data(self, input_path, **kwargs):
        """The FITS image at input_path, for predict(); the server decodes and preprocesses it."""
        path = os.path.abspath(os.fspath(input_path))
        if not os.path.isfile(path):
            raise FileNotFoundError("No such FITS file: '%s'" % input_path)
        return PreparedImage(path)

    def predict(self, data):
        """(Scores([continue_score]), None): the server's score, as a double, not rounded."""
        stopcal = _stopcal()
        path = data.path if isinstance(data, PreparedImage) else os.fspath(data)
        try:
            doc = stopcal.predict_full([path], model=self.model_name)
            result = doc["results"][0]
        except stopcal.StopcalError as e:
            raise stopcal.StopcalError("stopcal: scoring %s with the model '%s' failed: %s"
                                       % (path, self.model_name, e), e.status, e.kind) from None
        except (KeyError, IndexError, TypeError):
            raise stopcal.StopcalError("stopcal: the answer for %s holds no result" % path,
                                       kind=stopcal.BAD_ANSWER) from None
        return Scores([stopcal.exact_score(result)]), None
