"""The cortExchange downloader's names, for callers that set it up before building a model.

With stopcal the weights live in the server, so nothing is downloaded: init_downloader() takes the
WebDAV arguments and keeps them (they are shown by WDClient.options without the password), and the
download calls succeed without doing anything. Uploading and listing groups are cortExchange
features for model authors; they raise NotImplementedError."""
import os


class WDClient:
    """The downloader: remembers its settings, downloads nothing."""

    ARCH_PREFIX = "architectures"
    WEIGHT_PREFIX = "weights"

    def __init__(self):
        self.options = {}
        self.cache = os.path.join(os.path.expanduser("~"), ".cache", "cortexchange")
        self.client = None
        self.initialized = False

    def initialize(self, url=None, login=None, password=None, cache=None):
        self.options = {"webdav_hostname": url, "webdav_login": login}
        if cache:
            self.cache = cache
        self.initialized = True

    def local_weights_path(self, model_name):
        return os.path.join(self.cache, self.WEIGHT_PREFIX, model_name)

    def local_architecture_path(self, architecture_name):
        return os.path.join(self.cache, self.ARCH_PREFIX, architecture_name)

    def download_model(self, model_name, force=False):
        """Nothing to fetch: stopcald holds the weights."""

    def download_architecture(self, architecture_name, force=False):
        """Nothing to fetch: the architectures stopcal serves are part of this package."""

    def _not_here(self, *args, **kwargs):
        raise NotImplementedError("stopcal's cortexchange stand-in only serves predictions; use the real "
                                  "cortExchange to upload or list models")

    upload_model = upload_architecture = create_group = list_group = _not_here


client = WDClient()


def init_downloader(url=None, login=None, password=None, cache=None):
    """Accepted and kept for the caller's sake; with stopcal no WebDAV server is contacted."""
    client.initialize(url, login, password, cache)


class DefaultWebdavArgs:
    """Where the real downloader looks by default (no credentials are needed here)."""

    URL = None
    CACHE = os.path.join(os.path.expanduser("~"), ".cache", "cortexchange")
    LOGIN = os.getenv("WD_LOGIN")
    PASSWORD = os.getenv("WD_PASSWORD")
