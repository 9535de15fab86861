"""verl-spro: SPRO (Self-Guided Process Reward Optimization, arXiv 2507.01551) for verl.

Importing this package does not import verl: the estimator in :mod:`verl_spro.estimator` is pure torch.
The verl integration (:mod:`verl_spro.dataproto_adapter` on verl's data, :mod:`verl_spro.verl_hooks` into verl's
functions) is installed by verl itself, through the ``verl.plugins`` entry point (:mod:`verl_spro.plugin`), in every
process that imports verl.
"""

__version__ = "0.1.0"

ESTIMATOR_NAME = "spro"
