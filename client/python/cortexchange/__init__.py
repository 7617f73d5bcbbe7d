"""stopcal's stand-in for cortExchange (https://github.com/sara-nl/cortExchange), for facetselfcal.

facetselfcal's --early-stopping imports cortExchange, builds the surf/TransferLearningV2 architecture
once and calls its predict() once per self-calibration cycle. This package offers the same names
(cortexchange.wdclient.init_downloader, cortexchange.architecture.get_architecture, the architecture
class with prepare_data and predict) and forwards every prediction to a stopcald through the stopcal
module: no torch, no model download, standard library only.

It is opt-in: it is never installed by `pip install ./client/python`, and it answers
`import cortexchange` only where client/python is put on PYTHONPATH ahead of a real cortExchange.
Configuration is the stopcal module's: STOPCAL_URL (comma-separated for failover), STOPCAL_API_KEY
or STOPCAL_API_KEY_FILE, STOPCAL_TIMEOUT, STOPCAL_RETRIES. See README, "Using stopcal from
facetselfcal"."""
import cortexchange.architecture  # noqa: F401 - as the real package, importing it brings the architectures

STANDIN = True  # tells a caller (or an operator at a prompt) which cortexchange it got
